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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..identity import PeerId
from .index import KEY_MAX, FeedIndex, FeedItem
from .messages import (
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
_RECONCILE_TAG = bytes([1])  # the second byte of a reconcile frame: [1, parts]
#: Entries per frame are cut at about this many bytes.
BATCH_BYTES = 256 * 1024
#: Frames that answer nothing (duplicates happen; a flood does not stop) before
#: the peer is judged to be flooding the link.
MAX_UNEXPECTED = 16


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerHello:
    """The peer's hello arrived: the session is ready."""

    version: int


@dataclass(frozen=True, slots=True)
class NeedEntries:
    """Send the peer entries ``start..end`` of feed ``key`` (and its fork proof if frozen)."""

    key: bytes
    start: int
    end: int
    proof: bool = False


@dataclass(frozen=True, slots=True)
class EntriesReceived:
    """Encoded entries (or fork proofs) from the peer, to ingest."""

    items: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class BroadcastReceived:
    """An ephemeral gossip message from the peer (the gossip service checks it)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class RoundFinished:
    """A round of anti-entropy ended; ``in_step`` if it found no difference at all."""

    in_step: bool


Event = PeerHello | NeedEntries | EntriesReceived | BroadcastReceived | RoundFinished


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
        self._events: deque[Event] = deque()
        self._outbox: list[bytes] = []
        self._round_active = False
        self._round_differs = False
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
        self._round_active = True
        self._round_differs = False
        fingerprint, count = self.index.fingerprint(b"", KEY_MAX)
        self._queue(Reconcile((Fingerprint(b"", KEY_MAX, fingerprint, count),)))
        return True

    def _refresh_index(self) -> None:
        if self._index_source is not None:
            self.index = self._index_source()

    def abandon_round(self) -> None:
        """Forget a round that stalled (a frame was lost): the shell's timeout.

        The next round starts afresh; anything the lost round would have fixed,
        it fixes.
        """
        self._round_active = False
        self._round_differs = False

    @property
    def round_active(self) -> bool:
        return self._round_active

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
        message = decode(frame)
        if not self.ready:
            if not isinstance(message, Hello):
                raise ProtocolError("the first message must be hello")
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
            self._events.append(EntriesReceived(message.items))
            return
        if isinstance(message, Broadcast):
            self._events.append(BroadcastReceived(message.data))
            return
        self._reconcile(message)

    def send_entries(self, encoded: list[bytes]) -> None:
        """Queue entries (or fork proofs) for the peer, in frames of about BATCH_BYTES.

        They go out *before* any reconcile frame still waiting to be sent: entries a
        round asked for reach the peer before the message that may end the round,
        so a peer that closes the link when its round ends has them all.
        """
        frames: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        for item in encoded:
            if batch and size + len(item) > BATCH_BYTES:
                frames.append(self._frame(Entries(tuple(batch))))
                batch, size = [], 0
            batch.append(item)
            size += len(item)
        if batch:
            frames.append(self._frame(Entries(tuple(batch))))
        first_reconcile = next(
            (i for i, queued in enumerate(self._outbox) if queued[1:2] == _RECONCILE_TAG),
            len(self._outbox),
        )
        self._outbox[first_reconcile:first_reconcile] = frames

    push = send_entries

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
        out, self._outbox = self._outbox, []
        return out

    def _queue(self, message: Message) -> None:
        self._outbox.append(self._frame(message))

    def _frame(self, message: Message) -> bytes:
        frame = encode(message)
        self.bytes_sent += len(frame)
        return frame

    # -- reconciliation -----------------------------------------------------------------

    def _reconcile(self, message: Reconcile) -> None:
        if not message.parts:  # the other side has nothing left to compare
            if self._round_active:
                self._finish()
            else:
                self._unexpected()  # a duplicate, or a peer flooding us
            return
        if not self._round_active:  # the peer started a round
            self._refresh_index()
            self._round_active = True
            self._round_differs = False
        elif self.initiator:
            self._round_differs = True  # our opening fingerprint did not match
        reply: list[Part] = []
        for part in message.parts:
            if isinstance(part, Fingerprint):
                reply.extend(self._compare(part))
            else:
                reply.extend(self._exchange(part))
        self._queue(Reconcile(tuple(reply)))
        if reply:
            self._round_differs = True
        else:
            self._finish()

    def _unexpected(self) -> None:
        self._unexpected_frames += 1
        if self._unexpected_frames > MAX_UNEXPECTED:
            raise ProtocolError(f"more than {MAX_UNEXPECTED} frames that answer nothing")

    def _finish(self) -> None:
        self._round_active = False
        self._events.append(RoundFinished(in_step=not self._round_differs))

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
        """Push what the peer lacks in this range; answer with our items if asked."""
        theirs = {item.key: item for item in part.items}
        mine = self.index.items(part.lower, part.upper)
        for item in mine:
            other = theirs.get(item.key)
            self._offer(item, other)
        if part.reply:
            return [Items(part.lower, part.upper, tuple(mine), False)]
        return []

    def _offer(self, mine: FeedItem, theirs: FeedItem | None) -> None:
        their_seq = theirs.seq if theirs is not None else 0
        proof = mine.frozen and not (theirs is not None and theirs.frozen)
        if mine.seq > their_seq:
            self._events.append(NeedEntries(mine.key, their_seq + 1, mine.seq, proof))
        elif theirs is not None and mine.seq == their_seq and mine.seq and mine.id != theirs.id:
            # Same seq, different entry: send ours, so that the peer sees the fork.
            self._events.append(NeedEntries(mine.key, mine.seq, mine.seq, proof))
        elif proof:
            self._events.append(NeedEntries(mine.key, 1, 0, True))
