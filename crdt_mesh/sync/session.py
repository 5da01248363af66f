"""The sync protocol state machine: frames in, events and frames out. No I/O.

In the manner of h11: the shell feeds each received frame to
:meth:`SyncSession.receive`, takes events from :meth:`SyncSession.next_event`,
and writes the frames of :meth:`SyncSession.data_to_send` to the link. The
session never touches a socket, a clock, a thread or the store: when it needs
entries it asks for them with a :class:`NeedEntries` event, and the shell hands
them back with :meth:`SyncSession.send_entries`.

A round of anti-entropy, started by the side that dialled the link: it sends
the fingerprint of every feed head the other side may see. Equal: the other
side answers with an empty reconcile and the round ends (one round trip, a few
dozen bytes, whatever the number of feeds). Unequal: ranges are split and
compared again; small ranges are sent as items, and each side then pushes the
entries that the other lacks, oldest first per feed.

What a hostile peer can make a session do is bounded by the protocol itself:

* a round is a lockstep of numbered messages, and every part of a message must
  lie inside a range this side asked about in its previous message (the opener
  of a round asks about everything). A part outside those, or parts that overlap,
  are a :class:`ProtocolError`; a duplicate or a message of an abandoned round is
  recognised by its numbers and dropped (at most ``MAX_UNEXPECTED`` a round).
* so each feed is exchanged at most once per round, and what this side queues for
  the peer is at most the entries the peer said it lacks, each once;
* entries are not materialised when asked for: the session keeps one *want* per
  feed (a range of seqs; later asks merge into it), and the shell reads entries
  from the store only as the link drains (:meth:`SyncSession.next_need`). What a
  session holds for its peer is O(feeds), whatever the peer sends.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..identity import PeerId
from ..ledger import Entry
from .index import KEY_MAX, FeedIndex, FeedItem
from .messages import (
    MAX_ENTRIES,
    MAX_FRAME,
    PROTOCOL_VERSION,
    Broadcast,
    Entries,
    Fingerprint,
    Hello,
    Items,
    Message,
    Part,
    ProtocolError,
    Reconcile,
    decode,
    encode,
)

#: A range of at most this many items is sent as items rather than split further.
ITEMS_THRESHOLD = 1
#: How many sub-ranges a differing range is split into.
SPLIT_PARTS = 16
_RECONCILE_TAG = bytes([1])  # the second byte of a reconcile frame: [1, round, step, parts]
#: Entries per frame are cut at about this many bytes.
BATCH_BYTES = 256 * 1024
#: Frames in one round that answer nothing (duplicates and late frames happen on a
#: lossy network; a flood does not stop) before the peer is judged to be flooding.
MAX_UNEXPECTED = 16
_WHOLE = (b"", KEY_MAX)


#: What the metrics call each kind of message.
_KIND_NAMES: dict[type, str] = {
    Hello: "hello",
    Reconcile: "reconcile",
    Entries: "entries",
    Broadcast: "broadcast",
}


def _size(item: Entry | bytes) -> int:
    """An item's encoded size (packed, an entry takes less)."""
    return len(item.encoded) if isinstance(item, Entry) else len(item)


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerHello:
    """The peer's hello arrived: the session is ready."""

    version: int


@dataclass(frozen=True, slots=True)
class NeedEntries:
    """The peer lacks entries ``start..end`` of feed ``key`` (and its fork proof if
    ``proof``): a want, taken with :meth:`SyncSession.next_need`."""

    key: bytes
    start: int
    end: int
    proof: bool = False

    def merge(self, other: NeedEntries) -> NeedEntries:
        """One want covering both (the peer lacks the union)."""
        return NeedEntries(
            self.key,
            min(self.start, other.start),
            max(self.end, other.end),
            self.proof or other.proof,
        )


@dataclass(frozen=True, slots=True)
class RoundStarted:
    """The peer opened a round (the answering side only): the shell may budget them."""

    round: int


@dataclass(frozen=True, slots=True)
class EntriesReceived:
    """Entries (unpacked, not verified) and encoded entries or fork proofs from the
    peer, to ingest; ``pushed``: sent as news, not asked for (what of them is new
    here is the shell's to pass on)."""

    items: tuple[Entry | bytes, ...]
    pushed: bool = False


@dataclass(frozen=True, slots=True)
class BroadcastReceived:
    """An ephemeral gossip message from the peer (the gossip service checks it)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class RoundFinished:
    """A round of anti-entropy ended; ``in_step`` if it found no difference at all;
    ``frames``: its reconcile frames, both ways (2 for a round in step)."""

    in_step: bool
    frames: int = 2


Event = PeerHello | RoundStarted | EntriesReceived | BroadcastReceived | RoundFinished


@dataclass(frozen=True, slots=True)
class _Question:
    """A range this side asked about in its last reconcile message."""

    lower: bytes
    upper: bytes
    fingerprint: bool  # True: a fingerprint; False: items, with a reply wanted


class SyncSession:
    """One link's sync protocol, as a pure state machine.

    Args:
        local: this peer.
        remote: the peer at the other end (authenticated by the transport).
        initiator: True on the side that dialled; only it starts rounds.
        index: the feed heads the remote peer may see (see :meth:`update_index`).
        index_source: called for a fresh ``index`` whenever a round starts (either
            side), so that a round compares current heads; building an index costs
            O(feeds), so it is not rebuilt for every frame.
        max_frame: largest frame accepted from the peer.
    """

    def __init__(
        self,
        local: PeerId,
        remote: PeerId,
        *,
        initiator: bool,
        index: FeedIndex | None = None,
        index_source: Callable[[], FeedIndex] | None = None,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self.local = local
        self.remote = remote
        self.initiator = initiator
        self.max_frame = max_frame
        self.index = index or FeedIndex()
        self._index_source = index_source
        self.ready = False
        self.closed = False
        self.bytes_sent = 0
        self.bytes_received = 0
        #: bytes of frames sent and received, by the kind of message
        self.sent_by_kind: dict[str, int] = {}
        self.received_by_kind: dict[str, int] = {}
        #: frames dropped as duplicates or leftovers of an abandoned round
        self.stale_frames = 0
        self._events: deque[Event] = deque()
        self._outbox: list[bytes] = []
        # entries queued, framed as the shell takes the frames: pushed, and asked for
        self._news: list[Entry | bytes] = []
        self._answers: list[Entry | bytes] = []
        self._outbox_bytes = 0
        self._wants: OrderedDict[bytes, NeedEntries] = OrderedDict()
        self._round = 0  # the current (or last) round's number
        self._round_active = False
        self._round_differs = False
        self._expected_step = 0  # the step of the peer's message that answers our last one
        self._questions: list[_Question] = []
        self._hello_sent = False
        self._unexpected_frames = 0

    # -- input --------------------------------------------------------------------------

    def update_index(self, index: FeedIndex) -> None:
        """Replace the snapshot of feed heads the peer may see (after a commit)."""
        self.index = index

    def start(self) -> None:
        """Queue this side's hello."""
        if not self._hello_sent:
            self._hello_sent = True
            self._queue(Hello(PROTOCOL_VERSION, self.max_frame))

    def start_round(self) -> bool:
        """Start a round of anti-entropy (initiator only); False if one is running."""
        if not self.initiator:
            raise RuntimeError("only the side that dialled starts rounds")
        if not self.ready or self.closed or self._round_active:
            return False
        self._refresh_index()
        self._begin_round(self._round + 1)
        fingerprint, count = self.index.fingerprint(*_WHOLE)
        opener = Fingerprint(*_WHOLE, fingerprint, count)
        self._questions = [_Question(*_WHOLE, fingerprint=True)]
        self._expected_step = 1
        self._queue(Reconcile(self._round, 0, (opener,)))
        return True

    def _begin_round(self, number: int) -> None:
        self._round = number
        self._round_active = True
        self._round_differs = False
        self._unexpected_frames = 0

    def _refresh_index(self) -> None:
        if self._index_source is not None:
            self.index = self._index_source()

    def abandon_round(self) -> None:
        """Forget a round that stalled (a frame was lost): the shell's timeout.

        The next round starts afresh; anything the lost round would have fixed,
        it fixes. Frames of the abandoned round that still arrive are dropped.
        """
        self._round_active = False
        self._round_differs = False
        self._questions = []

    @property
    def round_active(self) -> bool:
        return self._round_active

    @property
    def round_progress(self) -> tuple[int, int]:
        """(round, the step expected next): it moves with every frame of the round."""
        return self._round, self._expected_step

    def receive(self, frame: bytes) -> None:
        """Take one frame from the peer.

        Raises:
            ProtocolError: the frame breaks the protocol; the session is closed
                and the link should be too.
        """
        if self.closed:
            raise ProtocolError("session is closed")
        try:
            self._receive(frame)
        except ProtocolError:
            self.closed = True
            raise

    def _receive(self, frame: bytes) -> None:
        if len(frame) > self.max_frame:
            raise ProtocolError(f"frame of {len(frame)} bytes exceeds {self.max_frame}")
        self.bytes_received += len(frame)
        message = decode(frame, max_unpacked=self.max_frame)
        kind = _KIND_NAMES[type(message)]
        self.received_by_kind[kind] = self.received_by_kind.get(kind, 0) + len(frame)
        if not self.ready:
            if not isinstance(message, Hello):
                # On a lossy network the hello may be lost and what followed it arrive
                # (pushes, broadcasts: many): dropped, never answered. The shell closes
                # a link whose hello does not come within two seconds.
                self.stale_frames += 1
                return
            if message.version != PROTOCOL_VERSION:
                raise ProtocolError(f"protocol version {message.version} is not {PROTOCOL_VERSION}")
            self.ready = True
            self._events.append(PeerHello(message.version))
            return
        if isinstance(message, Hello):
            if message.version != PROTOCOL_VERSION:
                raise ProtocolError("hello sent twice, with another version")
            return  # a duplicated frame: harmless
        if isinstance(message, Entries):
            self._events.append(EntriesReceived(message.items, message.pushed))
            return
        if isinstance(message, Broadcast):
            self._events.append(BroadcastReceived(message.data))
            return
        self._reconcile(message)

    def send_entries(self, items: Sequence[Entry | bytes]) -> None:
        """Queue entries (sent packed) or encoded entries and fork proofs (sent as they
        are) that a round asked for, in frames of about BATCH_BYTES encoded.

        They go out *before* any reconcile frame still waiting to be sent: entries a
        round asked for reach the peer before the message that may end the round,
        so a peer that closes the link when its round ends has them all. They are
        framed when the shell takes the frames, so that entries queued one at a
        time travel in as few frames as their size allows.
        """
        self._queue_entries(self._answers, items)

    def push(self, items: Sequence[Entry | bytes]) -> None:
        """Queue fresh entries as news, unasked (framed as :meth:`send_entries` does:
        a burst of commits, one entry each, goes in one frame)."""
        self._queue_entries(self._news, items)

    def _queue_entries(self, queue: list[Entry | bytes], items: Sequence[Entry | bytes]) -> None:
        queue.extend(items)
        self._outbox_bytes += sum(_size(item) for item in items)

    def _frame_entries(self) -> None:
        """Frame the queued entries, before the first reconcile frame in the outbox."""
        frames: list[bytes] = []
        for queue, pushed in ((self._news, True), (self._answers, False)):
            batch: list[Entry | bytes] = []
            size = 0
            for item in queue:
                if batch and (size + _size(item) > BATCH_BYTES or len(batch) >= MAX_ENTRIES):
                    frames.append(self._frame(Entries(tuple(batch), pushed)))
                    batch, size = [], 0
                batch.append(item)
                size += _size(item)
            if batch:
                frames.append(self._frame(Entries(tuple(batch), pushed)))
        self._news, self._answers = [], []
        first_reconcile = next(
            (i for i, queued in enumerate(self._outbox) if queued[1:2] == _RECONCILE_TAG),
            len(self._outbox),
        )
        self._outbox[first_reconcile:first_reconcile] = frames

    def send_broadcast(self, data: bytes) -> None:
        """Queue an ephemeral gossip message for the peer (after our hello, which
        the peer reads first; its own hello need not have arrived)."""
        if self._hello_sent and not self.closed:
            self._queue(Broadcast(data))

    # -- output -------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The next event, or None when there is none."""
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> list[bytes]:
        """The frames to write to the link, in order (each is one message)."""
        if self._news or self._answers:
            self._frame_entries()
        out, self._outbox = self._outbox, []
        self._outbox_bytes = 0
        return out

    @property
    def outbox_bytes(self) -> int:
        """Bytes of frames queued and not yet taken by :meth:`data_to_send`."""
        return self._outbox_bytes

    def next_need(self) -> NeedEntries | None:
        """The oldest want: entries the peer lacks, for the shell to read and send.

        The shell takes wants as the link drains and hands the entries back with
        :meth:`send_entries`; what it could not send yet it gives back with
        :meth:`defer`.
        """
        if not self._wants:
            return None
        _, need = self._wants.popitem(last=False)
        return need

    def defer(self, need: NeedEntries) -> None:
        """Put back (the rest of) a want taken with :meth:`next_need`, first in line."""
        self._want(need)
        self._wants.move_to_end(need.key, last=False)

    @property
    def wants(self) -> int:
        """Feeds with entries the peer lacks that are not sent yet."""
        return len(self._wants)

    def _queue(self, message: Message) -> None:
        frame = self._frame(message)
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)

    def _frame(self, message: Message) -> bytes:
        frame = encode(message)
        self.bytes_sent += len(frame)
        kind = _KIND_NAMES[type(message)]
        self.sent_by_kind[kind] = self.sent_by_kind.get(kind, 0) + len(frame)
        return frame

    # -- reconciliation -----------------------------------------------------------------

    def _reconcile(self, message: Reconcile) -> None:
        if not self.initiator and message.round > self._round:
            self._open_round(message)
            return
        if (
            not self._round_active
            or message.round != self._round
            or message.step != self._expected_step
        ):
            self._unexpected()  # a duplicate, a frame of an abandoned round, or a flood
            return
        self._check_answers(message.parts)
        if message.parts:
            self._round_differs = True  # the peer found a difference
        self._answer(message)

    def _open_round(self, message: Reconcile) -> None:
        """The peer opens a round: one fingerprint of the whole key range, step 0."""
        parts = message.parts
        if (
            message.step != 0
            or len(parts) != 1
            or not isinstance(parts[0], Fingerprint)
            or (parts[0].lower, parts[0].upper) != _WHOLE
        ):
            raise ProtocolError("a round opens with one fingerprint of the whole range")
        self._refresh_index()
        self._begin_round(message.round)
        self._events.append(RoundStarted(message.round))
        self._answer(message)

    def _check_answers(self, parts: tuple[Part, ...]) -> None:
        """Every part must lie inside one of our questions, of the kind it answers.

        Parts and questions are both sorted and disjoint, so one merge walk decides.
        """
        questions = self._questions
        q = 0
        for part in parts:
            while q < len(questions) and questions[q].upper <= part.lower:
                q += 1
            if q == len(questions):
                raise ProtocolError("a reconcile part answers nothing we asked")
            question = questions[q]
            if not (question.lower <= part.lower and part.upper <= question.upper):
                raise ProtocolError("a reconcile part answers nothing we asked")
            answers_items = isinstance(part, Items) and not part.reply
            if answers_items == question.fingerprint:
                raise ProtocolError("a reconcile part does not answer the kind of question asked")

    def _answer(self, message: Reconcile) -> None:
        reply: list[Part] = []
        for part in message.parts:
            if isinstance(part, Fingerprint):
                reply.extend(self._compare(part))
            else:
                reply.extend(self._exchange(part))
        asked = any(isinstance(p, Fingerprint) or p.reply for p in message.parts)
        self._questions = []
        frames = message.step + 1
        if reply or asked:  # else the peer asked nothing (its round is over): no answer
            step = message.step + 1
            frames += 1
            self._queue(Reconcile(self._round, step, tuple(reply)))
            self._questions = [
                _Question(p.lower, p.upper, fingerprint=isinstance(p, Fingerprint))
                for p in reply
                if isinstance(p, Fingerprint) or p.reply
            ]
            self._expected_step = step + 1
        if reply:
            self._round_differs = True
        if not self._questions:
            self._finish(frames)

    def _unexpected(self) -> None:
        self.stale_frames += 1
        self._unexpected_frames += 1
        if self._unexpected_frames > MAX_UNEXPECTED:
            raise ProtocolError(f"more than {MAX_UNEXPECTED} frames in a round that answer nothing")

    def _finish(self, frames: int) -> None:
        self._round_active = False
        self._questions = []
        self._unexpected_frames = 0
        self._events.append(RoundFinished(not self._round_differs, frames))

    def _compare(self, part: Fingerprint) -> list[Part]:
        fingerprint, count = self.index.fingerprint(part.lower, part.upper)
        if fingerprint == part.fingerprint and count == part.count:
            return []
        if count <= ITEMS_THRESHOLD:
            return [
                Items(part.lower, part.upper, tuple(self.index.items(part.lower, part.upper)), True)
            ]
        out: list[Part] = []
        for lower, upper in self.index.split(part.lower, part.upper, SPLIT_PARTS):
            sub_fingerprint, sub_count = self.index.fingerprint(lower, upper)
            if sub_count <= ITEMS_THRESHOLD:
                out.append(Items(lower, upper, tuple(self.index.items(lower, upper)), True))
            else:
                out.append(Fingerprint(lower, upper, sub_fingerprint, sub_count))
        return out

    def _exchange(self, part: Items) -> list[Part]:
        """Want what the peer lacks in this range; answer with our items if asked."""
        theirs = {item.key: item for item in part.items}
        mine = self.index.items(part.lower, part.upper)
        for item in mine:
            self._offer(item, theirs.get(item.key))
        if part.reply:
            return [Items(part.lower, part.upper, tuple(mine), False)]
        return []

    def _offer(self, mine: FeedItem, theirs: FeedItem | None) -> None:
        their_seq = theirs.seq if theirs is not None else 0
        proof = mine.frozen and not (theirs is not None and theirs.frozen)
        if mine.seq > their_seq:
            self._want(NeedEntries(mine.key, their_seq + 1, mine.seq, proof))
        elif theirs is not None and mine.seq == their_seq and mine.seq and mine.id != theirs.id:
            # Same seq, different entry: send ours, so that the peer sees the fork.
            self._want(NeedEntries(mine.key, mine.seq, mine.seq, proof))
        elif proof:
            self._want(NeedEntries(mine.key, 1, 0, True))

    def _want(self, need: NeedEntries) -> None:
        """Remember that the peer lacks ``need`` (merged with what it lacked already)."""
        known = self._wants.get(need.key)
        self._wants[need.key] = need if known is None else known.merge(need)
