"""``mesh.memory``: federated memory for a running mesh, the async shell over the board.

Off unless ``P2P_ENABLED`` and ``P2P_FEDERATED_MEMORY`` are on (or the mesh has no
config). ``p2p:memory:shared`` fires (with the :class:`Memory`) on each replica
where a memory of another author becomes readable. Forget records that arrive are
applied at once after the commit that brought them: the memory's content is purged
from the store and the file compacted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import anyio

from ...config import Feature
from ...errors import LocalError
from ...identity import PeerId
from ...ledger import Entry
from ...metrics import Counter, Histogram, Metrics
from ...runtime.host import Host
from ...runtime.penalty import Offence
from .board import MemoryBoard
from .federation import MAX_HOPS, RESEND_AFTER, QueryRouter, answer_from, to_wire
from .interests import decode_announcement, encode_announcement
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
from .rules import group_of, lockbox_of, scope_of

log = logging.getLogger(__name__)

#: The ephemeral channel federated queries travel on.
CHANNEL = b"M"
#: The ephemeral channel interest announcements travel on.
INTERESTS = b"I"
#: Announcements taken from one peer per second (and a burst).
ANNOUNCEMENTS_PER_SECOND = 1.0
ANNOUNCEMENT_BURST = 5.0


class MemoryService:
    """``mesh.memory``: store, query, update and forget memories at five privacy levels."""

    def __init__(self, host: Host) -> None:
        self._host = host
        host.events.register(*MemoryEvents)
        self.board = MemoryBoard(host.replica)
        self._shared: set[MemoryRef] = set()
        self._pending: set[str] = set()
        enabled = host.config is None or host.config.enables(Feature.FEDERATED_MEMORY)
        self._unsubscribe = host.replica.on_commit(self._on_commit) if enabled else _nothing
        self.router = QueryRouter(
            host.replica.peer_id,
            send=lambda peer, frame: host.send_ephemeral(CHANNEL, peer, frame),
            peers=lambda: host.peers,
            answer=lambda asker, spec: answer_from(self.board, asker, spec),
            ingest=self._take,
            may_read=lambda entry, asker: self.board.may_read(entry.document, asker),
            penalise=lambda peer, offence, reason: host.penalise(peer, offence, reason),
            clock=time.monotonic,
            on_request=lambda request: host.events.emit(MemoryEvents.REQUESTED, request),
        )
        self._unroute = host.on_ephemeral(CHANNEL, self._receive) if enabled else _nothing
        self._unroute_interests = (
            host.on_ephemeral(INTERESTS, self._receive_interests) if enabled else _nothing
        )
        self._enabled = enabled
        self._running = False
        #: what each linked peer was last told we follow
        self._told: dict[PeerId, frozenset[str]] = {}
        self._heard: dict[PeerId, tuple[float, float]] = {}  # announcement rate per peer

    _operations: Counter | None = None  # (declare_metrics: none unless it is called)
    _query_seconds: Histogram | None = None

    def start(self) -> None:
        """Tell linked peers what this replica follows, now and whenever it changes or a
        peer links (the root calls it as the mesh starts)."""
        if self._running or not self._enabled or not self._host.running:
            return
        self._running = True
        self._host.spawn(self._announce_loop)
        self._host.spawn(self._resend_loop)

    async def _announce_loop(self) -> None:
        while True:
            self._announce()
            await anyio.sleep(min(self._host.interval, 1.0))  # a new link hears soon

    async def _resend_loop(self) -> None:
        """Federated queries' frames not acknowledged are sent again (see federation)."""
        while True:
            await anyio.sleep(RESEND_AFTER)
            self.router.tick()

    def _announce(self) -> None:
        keys = self.board.announcement()
        linked = self._host.peers
        self._told = {p: k for p, k in self._told.items() if p in linked}
        frame: bytes | None = None
        for peer in linked:
            if self._told.get(peer) != keys:
                frame = frame or encode_announcement(keys)
                self._host.send_ephemeral(INTERESTS, peer, frame)
                self._told[peer] = keys

    def _receive_interests(self, sender: PeerId, frame: bytes) -> None:
        keys = decode_announcement(frame)
        if keys is None:
            self._host.penalise(sender, Offence.JUNK, "a malformed interest announcement")
            return
        now = time.monotonic()
        tokens, then = self._heard.get(sender, (ANNOUNCEMENT_BURST, now))
        tokens = min(ANNOUNCEMENT_BURST, tokens + (now - then) * ANNOUNCEMENTS_PER_SECOND)
        if tokens < 1:
            self._heard[sender] = (tokens, now)
            self._host.penalise(sender, Offence.BUDGET, "interest announcements over the rate")
            return
        self._heard[sender] = (tokens - 1, now)
        if len(self._heard) > 4096:
            self._heard.pop(next(iter(self._heard)))
        self.board.interests.learn(sender, keys)

    # -- interests ---------------------------------------------------------------------------

    def follow(
        self, tags: Iterable[str] = (), channels: Iterable[str] = (), everything: bool = False
    ) -> frozenset[str]:
        """Receive the public memories with any of ``tags`` or posted to one of
        ``channels`` (and those channels' ciphertext); ``everything``: all of them. Local
        and cheap: linked peers are told. Returns every key now followed.

        Raises:
            FederatedMemoryError: a malformed tag or channel, or over 256 in all.
        """
        self._require()
        followed = self.board.follow(tags, channels, everything)
        if self._running:
            self._announce()
        return followed

    def unfollow(
        self, tags: Iterable[str] = (), channels: Iterable[str] = (), everything: bool = False
    ) -> frozenset[str]:
        """Stop following (what was received stays)."""
        self._require()
        followed = self.board.unfollow(tags, channels, everything)
        if self._running:
            self._announce()
        return followed

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

    async def set_admin(self, channel: str, peer: PeerId, admin: bool = True) -> Channel:
        """Make ``peer`` an admin of a channel this peer created (or no longer one): it may
        then add and remove members and rotate the key."""
        self._require()
        return self.board.set_admin("channel", channel, peer, admin)  # type: ignore[return-value]

    async def add_channel_to_organization(
        self, organization: str, channel: str, creator: PeerId | None = None
    ) -> Organization:
        """Take every member of ``channel`` into ``organization`` (its admin's call)."""
        self._require()
        return self.board.add_channel(organization, channel, creator)

    async def remove_channel_from_organization(
        self, organization: str, channel: str, creator: PeerId | None = None
    ) -> Organization:
        self._require()
        return self.board.remove_channel(organization, channel, creator)

    async def rotate(self, channel: str) -> str:
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
        self._done("stored")
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
        memory = self.board.update(ref, content=content, tags=tags, metadata=metadata)
        self._done("updated")
        return memory

    async def forget(self, ref: MemoryRef) -> None:
        self._require()
        self.board.forget(ref)
        self._done("forgotten")

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
            await self._ask(to_wire(spec), hops, timeout)
        started = time.perf_counter()
        hits = self.board.query(**spec)
        if self._query_seconds is not None:
            self._query_seconds.observe(time.perf_counter() - started)
        self._done("queried")
        return hits

    def _done(self, operation: str) -> None:
        if self._operations is not None:
            self._operations.inc(operation)

    def declare_metrics(self, metrics: Metrics) -> None:
        """Declare memory metrics in ``metrics``: operations counted as they happen, the
        time of each query's ranking here (after the peers' answers, if asked)."""
        operations = metrics.counter(
            "crdt_mesh_memory_operations_total",
            "Memory operations made here: stored, updated, forgotten, queried.",
            ("operation",),
        )
        for operation in ("stored", "updated", "forgotten", "queried"):
            operations.inc(operation, by=0)
        self._operations = operations
        self._query_seconds = metrics.histogram(
            "crdt_mesh_memory_query_seconds",
            "Time to match and rank a query's results here (a remote query's wait for "
            "peers' answers is not in it).",
        )

    async def _ask(self, spec: dict[str, Any], hops: int, timeout: float) -> None:
        query_id = self.router.ask(spec, hops)
        try:
            await anyio.sleep(timeout)
        finally:
            self.router.finish(query_id)

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
        if any(group_of(e.document) or lockbox_of(e.document) for e in entries):
            self._schedule(self._reconcile)  # another admin's change: one key for all
        touched = {e.document for e in entries if scope_of(e.document) is not None}
        if not touched:
            return
        if any(scope.forgotten for d in touched if (scope := scope_of(d)) is not None):
            self._schedule(self._settle)
        for document in sorted(touched, key=lambda d: d.text):
            ref = MemoryRef(document)
            if ref in self._shared:
                continue
            memory = self.board.get(ref)
            if memory is not None and memory.author != self.board.me:
                self._shared.add(ref)
                self._host.events.emit(MemoryEvents.SHARED, memory)

    def _schedule(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` once the ingest that called for it is over (never inside it: a
        compaction reopens the store; a rotation writes); once while it is pending."""
        if work.__name__ in self._pending or not self._host.running:
            return
        self._pending.add(work.__name__)
        self._host.spawn(work)

    async def _settle(self) -> None:
        """Purge what forget records that arrived name."""
        self._pending.discard("_settle")
        self.board.settle()

    async def _reconcile(self) -> None:
        """Rotate the keys of channels we administer that other admins changed."""
        self._pending.discard("_reconcile")
        try:
            self.board.reconcile()
        except LocalError as exc:  # (a replica closing under it): the next change retries
            log.warning("channel keys not reconciled: %s", exc)

    def close(self) -> None:
        self._unsubscribe()
        self._unroute()
        self._unroute_interests()
        self.board.close()


def _nothing() -> None:
    pass
