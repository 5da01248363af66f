"""``mesh.memory``: federated memory for a running mesh, the async shell over the board.

Off unless ``P2P_ENABLED`` and ``P2P_FEDERATED_MEMORY`` are on (or the mesh has no
config). ``p2p:memory:shared`` fires (with the :class:`Memory`) on each replica
where a memory of another author becomes readable. Forget records that arrive are
applied at once after the commit that brought them: the memory's content is purged
from the store and the file compacted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import anyio

from ...config import Feature
from ...identity import PeerId
from ...ledger import Entry, Policy
from ...runtime.host import Host
from ...runtime.penalty import Offence
from .board import MemoryBoard
from .federation import MAX_HOPS, QueryRouter
from .model import (
    Channel,
    FederatedMemoryError,
    Memory,
    MemoryEvents,
    MemoryHit,
    MemoryPrivacyLevel,
    MemoryRef,
    Organization,
)
from .rules import check_group_name, lockbox_document, scope_of

#: The ephemeral channel federated queries travel on.
CHANNEL = b"M"
#: The most memories one peer's query is answered with.
MAX_REMOTE_HITS = 50


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
        self.router = QueryRouter(
            host.replica.peer_id,
            send=lambda peer, frame: host.send_ephemeral(CHANNEL, peer, frame),
            peers=lambda: host.peers,
            answer=self._answer,
            ingest=self._take,
            may_read=lambda entry, asker: host.replica.readable_by(entry.document, asker),
            penalise=lambda peer, offence, reason: host.penalise(peer, offence, reason),
            clock=time.monotonic,
            on_request=lambda request: host.events.emit(MemoryEvents.REQUESTED, request),
        )
        self._unroute = host.on_ephemeral(CHANNEL, self._receive) if enabled else _nothing

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

    async def query(
        self, *, remote: bool = False, timeout: float = 2.0, hops: int = 2, **spec: Any
    ) -> list[MemoryHit]:
        """The memories this replica may show that match (see :meth:`MemoryBoard.query`).

        With ``remote=True``, peers are asked first (``hops`` away at most): each answers
        with the signed entries of its matching memories that this peer may read;
        they are verified and kept like any entry, and the results are ranked here,
        after ``timeout`` seconds.
        """
        self._require()
        self.board.query(**spec)  # a malformed spec fails here, before anyone is asked
        if remote:
            if isinstance(hops, bool) or not isinstance(hops, int) or not 1 <= hops <= MAX_HOPS:
                raise FederatedMemoryError(f"hops: 1..{MAX_HOPS}, not {hops!r}")
            query_id = self.router.ask(_to_wire(spec), hops)
            try:
                await anyio.sleep(timeout)
            finally:
                self.router.finish(query_id)
        return self.board.query(**spec)

    def _answer(self, asker: PeerId, spec: Mapping[str, Any]) -> list[bytes]:
        local = _from_wire(spec)
        limit = local.get("limit", 10)
        if isinstance(limit, int) and limit > MAX_REMOTE_HITS:
            local["limit"] = MAX_REMOTE_HITS  # what one peer's query may cost us
        hits = self.board.query(**local, reader=asker)
        replica = self._host.replica
        out: list[bytes] = []
        for hit in hits:
            document = hit.memory.ref.document
            if document.policy is Policy.LOCAL:
                continue
            scope = scope_of(document)
            if scope is not None and scope.admin is not None and hit.memory.channel:
                lockbox = lockbox_document(scope.admin, check_group_name(hit.memory.channel, "c"))
                if replica.has_document(lockbox) and replica.readable_by(lockbox, asker):
                    out.extend(e.encoded for e in replica.export(lockbox))
            out.extend(e.encoded for e in replica.export(document))
        return list(dict.fromkeys(out))

    def _take(self, entries: list[bytes], source: PeerId) -> None:
        """An answer to our query: verified and kept like any entry from ``source``."""
        report = self._host.replica.ingest(entries, source=source)
        if report.rejected:
            reason = f"{len(report.rejected)} invalid entries in a memory answer"
            self._host.penalise(source, Offence.INVALID_ENTRY, reason)

    def _receive(self, sender: PeerId, frame: bytes) -> None:
        self.router.receive(sender, frame)

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
        self._unroute()
        self.board.close()


def _nothing() -> None:
    pass


def _to_wire(spec: Mapping[str, Any]) -> dict[str, Any]:
    wire = dict(spec)
    if wire.get("authors") is not None:
        wire["authors"] = [p.key for p in wire["authors"]]
    for key in ("tags", "channels", "organizations"):
        if wire.get(key) is not None and not isinstance(wire[key], str):
            wire[key] = list(wire[key])
    return wire


def _from_wire(spec: Mapping[str, Any]) -> dict[str, Any]:
    local = dict(spec)
    authors = local.get("authors")
    if authors is not None:
        if not isinstance(authors, list):
            raise FederatedMemoryError("authors: a list of peer keys")
        local["authors"] = [PeerId(bytes(k)) if isinstance(k, bytes) else k for k in authors]
    return local
