"""``mesh.memory``: federated memory for a running mesh, the async shell over the board.

Off unless ``P2P_ENABLED`` and ``P2P_FEDERATED_MEMORY`` are on (or the mesh has no
config). ``p2p:memory:shared`` fires (with the :class:`Memory`) on each replica
where a memory of another author becomes readable. Forget records that arrive are
applied at once after the commit that brought them: the memory's content is purged
from the store and the file compacted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ...config import Feature
from ...identity import PeerId
from ...ledger import Entry
from ...runtime.host import Host
from .board import MemoryBoard
from .model import (
    Channel,
    Memory,
    MemoryEvents,
    MemoryHit,
    MemoryPrivacyLevel,
    MemoryRef,
    Organization,
)
from .rules import scope_of


class MemoryService:
    """``mesh.memory``: store, query, update and forget memories at five privacy levels."""

    def __init__(self, host: Host) -> None:
        self._host = host
        host.events.register(*MemoryEvents)
        self.board = MemoryBoard(host.replica)
        self._shared: set[MemoryRef] = set()
        self._settling = False
        enabled = host.config is None or host.config.enables(Feature.FEDERATED_MEMORY)
        self._unsubscribe = host.replica.on_commit(self._on_commit) if enabled else _nothing

    def _require(self) -> None:
        if self._host.config is not None:
            self._host.config.require(Feature.FEDERATED_MEMORY)

    # -- groups ------------------------------------------------------------------------------

    async def create_channel(
        self, name: str, members: Iterable[PeerId] = (), organization: str | None = None
    ) -> Channel:
        self._require()
        return self.board.create_channel(name, members, organization)

    async def add_member(self, channel: str, peer: PeerId) -> Channel:
        self._require()
        return self.board.add_member("channel", channel, peer)  # type: ignore[return-value]

    async def remove_member(self, channel: str, peer: PeerId) -> Channel:
        self._require()
        return self.board.remove_member("channel", channel, peer)  # type: ignore[return-value]

    async def create_organization(self, name: str, members: Iterable[PeerId] = ()) -> Organization:
        self._require()
        return self.board.create_organization(name, members)

    async def add_to_organization(self, organization: str, peer: PeerId) -> Organization:
        self._require()
        return self.board.add_member("organization", organization, peer)  # type: ignore[return-value]

    async def remove_from_organization(self, organization: str, peer: PeerId) -> Organization:
        self._require()
        result = self.board.remove_member("organization", organization, peer)
        return result  # type: ignore[return-value]

    async def rotate(self, channel: str) -> int:
        """Start a new key epoch of a channel this peer administers (also done on every
        membership change, and after 100 encrypted memories or a week)."""
        self._require()
        return self.board.rotate(channel)

    def channels(self) -> list[Channel]:
        self._require()
        return self.board.channels()

    def organizations(self) -> list[Organization]:
        self._require()
        return self.board.organizations()

    # -- memories ----------------------------------------------------------------------------

    async def store(
        self,
        content: str,
        privacy: MemoryPrivacyLevel | str = MemoryPrivacyLevel.PRIVATE,
        *,
        channel: str | None = None,
        organization: str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        readers: Iterable[PeerId] | None = None,
    ) -> Memory:
        """See :meth:`MemoryBoard.store`."""
        self._require()
        memory = self.board.store(
            content,
            privacy,
            channel=channel,
            organization=organization,
            tags=tags,
            metadata=metadata,
            readers=readers,
        )
        self._shared.add(memory.ref)
        return memory

    async def update(
        self,
        ref: MemoryRef,
        *,
        content: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Memory:
        self._require()
        return self.board.update(ref, content=content, tags=tags, metadata=metadata)

    async def forget(self, ref: MemoryRef) -> None:
        self._require()
        self.board.forget(ref)

    def get(self, ref: MemoryRef) -> Memory | None:
        self._require()
        return self.board.get(ref)

    async def query(self, **filters: Any) -> list[MemoryHit]:
        """See :meth:`MemoryBoard.query` (federated queries, ``remote=True``, are not
        built yet)."""
        self._require()
        return self.board.query(**filters)

    # -- events and forgetting ----------------------------------------------------------------

    def _on_commit(self, entries: list[Entry]) -> None:
        touched = {e.document for e in entries if scope_of(e.document) is not None}
        if not touched:
            return
        if any(scope.forgotten for d in touched if (scope := scope_of(d)) is not None):
            self._schedule_settle()
        for document in sorted(touched, key=lambda d: d.text):
            ref = MemoryRef(document)
            if ref in self._shared:
                continue
            memory = self.board.get(ref)
            if memory is not None and memory.author != self.board.me:
                self._shared.add(ref)
                self._host.events.emit(MemoryEvents.SHARED, memory)

    def _schedule_settle(self) -> None:
        """Purge after the ingest that brought a forget record is over (never inside it:
        the compaction reopens the store)."""
        if self._settling or not self._host.running:
            return
        self._settling = True
        self._host.spawn(self._settle)

    async def _settle(self) -> None:
        try:
            self.board.settle()
        finally:
            self._settling = False

    def close(self) -> None:
        self._unsubscribe()
        self.board.close()


def _nothing() -> None:
    pass
