"""One link's sync, bound to a replica: session events in, replica calls out.

:class:`PeerSync` is the glue that both the async :class:`~crdt_mesh.Mesh` and
the deterministic simulator drive: it owns a :class:`~crdt_mesh.sync.SyncSession`,
answers its events from the replica (entries to send, entries to ingest), and
keeps its view of the feed heads current. It does no I/O of its own: frames go
in through :meth:`receive` and come out of :meth:`frames`.

Entries the peer lacks are read from the store only when :meth:`frames` is
called, a slice at a time: a shell that calls it again only once the link took
the last frames never holds more than a slice for a peer (backpressure).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import MeshError
from ..identity import PeerId
from ..ledger import Entry
from ..replica.records import IngestReport
from ..replica.replica import Replica
from ..sync import (
    BroadcastReceived,
    EntriesReceived,
    NeedEntries,
    PeerHello,
    ProtocolError,
    RoundFinished,
    RoundStarted,
    SyncSession,
)
from ..sync.session import _RECONCILE_TAG, BATCH_BYTES
from .index import readable_index

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LinkStats:
    """What crossed one link, for logs and benchmarks."""

    rounds: int = 0
    rounds_in_step: int = 0
    #: rounds the peer opened (the answering side)
    rounds_opened: int = 0
    entries_received: int = 0
    entries_sent: int = 0
    rejected: int = 0
    #: reconcile frames of the rounds finished, both ways (2 per round in step)
    round_frames: int = 0
    #: bytes of sync frames (the session's count: :meth:`PeerSync.totals`), in all and
    #: by the kind of message
    bytes_sent: int = 0
    bytes_received: int = 0
    sent_by_kind: dict[str, int] = field(default_factory=dict)
    received_by_kind: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: LinkStats) -> LinkStats:
        return LinkStats(*(_sum(getattr(self, f), getattr(other, f)) for f in _FIELDS))


def _sum(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}
    return a + b


_FIELDS = tuple(LinkStats.__dataclass_fields__)
_SIGNATURE_HEADER = b"\x58\x40"  # CBOR: a byte string of 64 bytes


#: Separate stretches of sent entries remembered per feed (more merge the oldest away).
_MAX_STRETCHES = 16


@dataclass(slots=True)
class SendHistory:
    """What one peer was sent (stretches of seqs per feed), and how many bytes of what
    it was sent already it may be sent again.

    A peer may lack an entry it was sent (a frame lost on a lossy network, an entry
    it could not keep waiting): it may have it again, within ``allowance`` bytes.
    Beyond that, what it asks for again is skipped until the shell grants more
    (:meth:`grant`): a peer that claims, round after round, to lack everything gets
    the store once and then a trickle, and an entry that was pushed to it and that
    it asks for before the push arrived goes once.
    """

    allowance: float = math.inf
    sent: dict[bytes, list[list[int]]] = field(default_factory=dict)
    #: bytes sent again, and asks for more than the allowance (skipped)
    resent: int = 0
    refused: int = 0

    def grant(self, amount: float, cap: float) -> None:
        """Add ``amount`` bytes to the allowance, up to ``cap``."""
        self.allowance = min(cap, self.allowance + amount)

    def record(self, key: bytes, first: int, last: int) -> None:
        """Entries ``first..last`` of feed ``key`` were sent."""
        stretches = self.sent.setdefault(key, [])
        merged = [first, last]
        kept = []
        for stretch in stretches:
            if stretch[1] + 1 < merged[0] or merged[1] + 1 < stretch[0]:
                kept.append(stretch)
            else:
                merged = [min(merged[0], stretch[0]), max(merged[1], stretch[1])]
        kept.append(merged)
        kept.sort()
        self.sent[key] = kept[-_MAX_STRETCHES:]

    def was_sent(self, key: bytes, seq: int) -> bool:
        return any(a <= seq <= b for a, b in self.sent.get(key, ()))

    def first_unsent(self, key: bytes, start: int, end: int) -> tuple[int, int] | None:
        """The first stretch of ``start..end`` not sent yet, or None if all was."""
        seq = start
        for a, b in self.sent.get(key, ()):
            if b < seq:
                continue
            if a > seq:
                return seq, min(end, a - 1)
            seq = b + 1
            if seq > end:
                return None
        return (seq, end) if seq <= end else None


class PeerSync:
    """The sync state of one link between this replica and ``remote``.

    ``history`` is what the peer was sent (see :class:`SendHistory`); the default
    allows any resend. A shell that keeps one per peer across links, and grants it
    an allowance over time, bounds what a peer can make it send.
    """

    def __init__(
        self,
        replica: Replica,
        remote: PeerId,
        *,
        initiator: bool,
        on_broadcast: Callable[[PeerId, bytes], None] | None = None,
        on_ingest: Callable[[IngestReport], None] | None = None,
        history: SendHistory | None = None,
    ) -> None:
        self.replica = replica
        self.remote = remote
        self.history = history if history is not None else SendHistory()
        self._on_broadcast = on_broadcast
        self._on_ingest = on_ingest
        self.session = SyncSession(
            replica.peer_id,
            remote,
            initiator=initiator,
            index_source=lambda: readable_index(replica).for_peer(remote),
        )
        self.stats = LinkStats()
        #: the last round that finished found both ends in step
        self.in_step = False
        self.session.start()

    @property
    def ready(self) -> bool:
        return self.session.ready

    def totals(self) -> LinkStats:
        """What this link carried so far, its frames' bytes included."""
        session = self.session
        return dataclasses.replace(
            self.stats,
            bytes_sent=session.bytes_sent,
            bytes_received=session.bytes_received,
            sent_by_kind=dict(session.sent_by_kind),
            received_by_kind=dict(session.received_by_kind),
        )

    @property
    def closed(self) -> bool:
        return self.session.closed

    def start_round(self) -> bool:
        """Start a round of anti-entropy (the dialling side only)."""
        return self.session.start_round()

    def receive(self, frame: bytes) -> list[Entry]:
        """Take one frame; return the entries it made this replica commit that the
        peer pushed (news, to pass on).

        Raises:
            ProtocolError: the peer broke the protocol; close the link.
        """
        return self.receive_many([frame])

    def receive_many(self, frames: list[bytes]) -> list[Entry]:
        """Take several frames that arrived together; ingest their entries at once.

        One ingest, so one group commit, for all the entries they carry: a burst
        of pushed entries costs one fsync, not one each. Entries that came before a
        reconcile frame are ingested before it is handled, so that the heads it
        compares include them (else the peer would be asked to send them again).

        Returns:
            The entries committed here that came pushed, as news: the shell passes
            them on. What a round asked for is not passed on: each replica's own
            rounds fetch it, and relaying it too sent each entry to most replicas
            several times over.

        Raises:
            ProtocolError: the peer broke the protocol; close the link. Entries of
                the frames before the bad one are still ingested.
        """
        pending: list[Entry | bytes] = []
        news: set[bytes] = set()
        committed: list[Entry] = []
        try:
            for frame in frames:
                if pending and frame[1:2] == _RECONCILE_TAG:
                    committed.extend(self._ingest(pending, news))
                    pending = []
                self.session.receive(frame)
                self._handle_events(pending, news)
        finally:
            if pending:
                committed.extend(self._ingest(pending, news))
        return committed

    def push(self, entries: list[Entry]) -> None:
        """Send fresh entries eagerly, those the peer may read."""
        visible = [e for e in entries if self.replica.readable_by(e.document, self.remote)]
        if visible and self.session.ready and not self.session.closed:
            self.session.push(visible)
            self.stats.entries_sent += len(visible)
            for entry in visible:
                key = entry.document.key + entry.author.key
                self.history.record(key, entry.seq, entry.seq)

    def frames(self, budget: int = BATCH_BYTES) -> list[bytes]:
        """Frames to write to the link, in order, with at most about ``budget`` bytes of
        entries read from the store for them. Call again for more once they are sent;
        ``has_output`` says whether there is more."""
        self._produce(budget)
        return self.session.data_to_send()

    @property
    def has_output(self) -> bool:
        """Whether :meth:`frames` would return something."""
        return bool(self.session.outbox_bytes or self.session.wants)

    def _produce(self, budget: int) -> None:
        """Read the entries of the oldest wants, up to ``budget`` bytes, and queue them."""
        produced = 0
        history = self.history
        while produced < budget and (need := self.session.next_need()) is not None:
            if not self._may_read(need.key):
                continue  # the peer lost access since the round asked (an ACL changed)
            key, start, stop = need.key, need.start, need.end
            if history.allowance <= 0:  # only what it was not sent yet
                hole = history.first_unsent(key, start, stop)
                if hole is None or hole[0] > start:
                    history.refused += 1
                if hole is None:
                    if not need.proof:
                        continue
                    start = stop + 1  # the fork proof alone
                else:
                    start, stop = hole
            limit = budget - produced
            if history.was_sent(key, start):  # a resend: within the allowance (one entry over)
                limit = max(1, int(min(limit, history.allowance)))
            items = self.replica.feed_entries(key, start, stop, proof=need.proof, max_bytes=limit)
            sent_proof = need.proof and bool(items) and items[0][:1] == b"\x83"
            entries = items[1:] if sent_proof else items
            resume = start + len(entries) if entries else max(start, stop + 1)
            if resume <= need.end:
                self.session.defer(NeedEntries(key, resume, need.end))
            if not items:
                continue
            again = sum(
                len(e) for seq, e in enumerate(entries, start) if history.was_sent(key, seq)
            )
            if again:
                history.resent += again
                history.allowance -= again
            if entries:
                history.record(key, start, start + len(entries) - 1)
            self.session.send_entries(
                [items[0], *map(_grouped, entries)] if sent_proof else list(map(_grouped, entries))
            )
            self.stats.entries_sent += len(items)
            produced += sum(len(i) for i in items)

    def _may_read(self, key: bytes) -> bool:
        document = self.replica.document_by_key(key[:16])
        return document is not None and self.replica.readable_by(document, self.remote)

    def _handle_events(self, pending: list[Entry | bytes], news: set[bytes]) -> None:
        """Answer the session's events; collect received entries into ``pending``,
        those pushed also into ``news``."""
        while (event := self.session.next_event()) is not None:
            if isinstance(event, RoundStarted):
                self.stats.rounds_opened += 1
            elif isinstance(event, EntriesReceived):
                pending.extend(event.items)
                if event.pushed:
                    news.update(i.encoded if isinstance(i, Entry) else i for i in event.items)
            elif isinstance(event, RoundFinished):
                self.stats.rounds += 1
                self.stats.rounds_in_step += event.in_step
                self.stats.round_frames += event.frames
                self.in_step = event.in_step
            elif isinstance(event, BroadcastReceived):
                if self._on_broadcast is not None:
                    self._on_broadcast(self.remote, event.data)
            elif isinstance(event, PeerHello):
                pass

    def _ingest(self, items: list[Entry | bytes], news: set[bytes]) -> list[Entry]:
        """Ingest ``items``; the entries committed of those in ``news``."""
        try:
            report = self.replica.ingest(items, source=self.remote)
        except MeshError:
            log.exception("ingest from %s failed", self.remote.short)
            raise
        if self._on_ingest is not None:
            self._on_ingest(report)
        self.stats.entries_received += len(items)
        if report.rejected:
            self.stats.rejected += len(report.rejected)
            for rejection in report.rejected[:5]:
                log.warning("dropped input from %s: %s", self.remote.short, rejection.error)
        if not news:
            return []
        return [entry for entry in report.applied if entry.encoded in news]


def _grouped(encoded: bytes) -> Entry | bytes:
    """A stored entry as the session sends it: an entry of a signature group read,
    to be packed; one signed alone as its bytes (sent as they are). The bytes end in
    the signature's header and 64 bytes when signed alone (a group's path ends in
    hashes: a guess wrong once in 65,536 costs only how the entry travels)."""
    return encoded if encoded[-66:-64] == _SIGNATURE_HEADER else Entry.from_store(encoded)


__all__ = ["LinkStats", "PeerSync", "ProtocolError", "SendHistory"]
