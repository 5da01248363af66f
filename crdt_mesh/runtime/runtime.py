"""The async runtime: a replica, its links, the anti-entropy timer and eager push.

A thin shell (anyio: asyncio and trio both work) around the sans-IO sync
protocol. It moves frames between links and :class:`~crdt_mesh.runtime.peer.PeerSync`,
starts a round of anti-entropy on every link it dialled each ``interval``,
and pushes fresh local entries to up to ``push_fanout`` peers at once.

It knows no service. It is the :class:`~crdt_mesh.runtime.host.Host` that services
attach to: it routes each ephemeral frame to the service that owns its channel,
runs their tasks, and counts what they prove against a peer. The composition
root, :class:`crdt_mesh.Mesh`, builds a runtime and the services over it.

The replica is used from the event loop's thread only (it is not
thread-safe); write to its documents from async code running in the mesh's
event loop.

Each link has a reader (frames into a queue bounded in bytes), a handler (the
sync core and ingest) and a writer (frames out, entries read from the store only
as the link drains), so a slow or silent peer holds up its own link and nothing
else. Misbehaviour is counted in a :class:`~crdt_mesh.runtime.penalty.Penalties` table:
a peer over its threshold has its links closed and is refused for a back-off.

Why one module (~830 lines): a link's life (dial, replace a duplicate, read
ahead, handle, write, budgets, penalties, close) is one state machine over
tables the runtime shares between links; cut in two, each half would reach
into the other's privates. The protocol itself lives in :mod:`..sync` and
:mod:`.peer`, the penalty table in :mod:`.penalty`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..arguments import integer, number, of_type, strings
from ..config import MeshConfig
from ..errors import (
    ArgumentTypeError,
    ChainError,
    ClosedError,
    ConfigError,
    ForkDetected,
    InvalidSignature,
    LinkClosed,
    MeshError,
    PendingOverflow,
    RateLimitExceeded,
    RemoteError,
    TransportError,
)
from ..events import EventBus
from ..identity import PeerId
from ..ledger import Entry
from ..replica.records import IngestReport
from ..replica.replica import Replica
from ..sync import ProtocolError
from .host import EphemeralHandler, LinkEnd, link_ceiling
from .peer import LinkStats, PeerSync, SendHistory
from .penalty import WEIGHTS, Offence, Penalties, Refusal
from .registry import Transports, scheme_of
from .transport import Link, Listener, Transport

log = logging.getLogger(__name__)


#: Frames read ahead of processing per link, and their bytes (a fast peer waits on
#: the transport): with one frame of at most MAX_FRAME being read, a link holds at
#: most about _READ_AHEAD_BYTES + MAX_FRAME of a peer's input.
_READ_AHEAD = 64
_READ_AHEAD_BYTES = 1024 * 1024
#: Frames queued for a peer that did not read them yet, beyond which its link's
#: input is not processed (replies would pile up) and ephemeral frames are dropped.
_MAX_OUTBOX = 1024 * 1024
#: Intervals a round may go without a frame before it is taken for lost and abandoned.
_ROUND_STALL_INTERVALS = 4
#: The most intervals between the timer's rounds on a link found in step round after
#: round, with nothing committed here since (the gap doubles up to it).
_MAX_ROUND_GAP = 4
#: Bytes of entries the writer reads from the store per step (one slice per send).
_WRITE_SLICE = 256 * 1024
#: Ephemeral frames kept for a peer while a link to it is being dialled, and how
#: many peers may wait for such a dial at once.
_WAITING_FRAMES = 8
_WAITING_PEERS = 32
#: Links over ``max_peers`` served one round each before closing (newcomers learn
#: the peer records from them); beyond this many at once, refused at once.
_MAX_TRANSIENT = 8
#: Bytes of entries a peer was sent already that it may be sent again: granted with
#: time, up to a cap, starting from none (a lossy link's resends fit; an entry both
#: pushed and asked for in a round goes once; a peer that claims to lack everything,
#: round after round, gets the store once and then this trickle).
_RESEND_PER_SECOND = 1024 * 1024
_RESEND_CAP = 8 * 1024 * 1024
#: What a peer was sent is remembered this long after its link closed (a peer that
#: reconnects to be sent everything again is not a new peer).
_HISTORY_SECONDS = 60.0
_HISTORIES = 256
#: Ephemeral frames (broadcasts, failure detection) a peer may send per second, and
#: entries it may leave waiting for a gap, in intervals, before it is a GAP offence.
_EPHEMERAL_PER_SECOND = 500.0
_GAP_INTERVALS = 10
#: The runtime's own ephemeral channel, and its words, said before closing a link on
#: purpose: "bye" (a shuffle, a surplus: I stay in the mesh), "full" (my view is
#: full: you had one round). A link that ends without a word (a crash, a shutdown)
#: lets membership suspect the peer.
_CONTROL = b"\x00"
_WORDS = {_CONTROL + b"bye": LinkEnd.PARTED, _CONTROL + b"full": LinkEnd.FULL}
_PARTING, _FULL = _WORDS
#: How long a parting word may take to go out before the link closes anyway.
_PARTING_SECONDS = 1.0
#: Seconds (or two intervals, if longer) a served link may go without the peer's
#: hello before it is closed as dead. Two intervals alone, at short intervals on a
#: busy machine, closed live links whose hello was merely late: each then dialled
#: again, and the churn made the machine busier still.
_HELLO_SECONDS = 2.0


@dataclass(slots=True)
class _Connection:
    link: Link
    peer: PeerSync
    wake: anyio.Event = field(default_factory=anyio.Event)  # the writer has work
    drained: anyio.Event = field(default_factory=anyio.Event)  # the writer caught up
    round_tokens: float = 0.0
    round_stamp: float = 0.0
    ephemeral_tokens: float = 2 * _EPHEMERAL_PER_SECOND
    ephemeral_stamp: float = 0.0
    refused_resends: int = 0
    started: bool = False
    opened: float = 0.0  # when it was served (its hello is due within _HELLO_SECONDS)
    rate_limited: bool = False
    end: LinkEnd = LinkEnd.LOST  # what a side said before closing it
    kept: bool = False  # it was in the active view
    courier: bool = False  # dialled to carry ephemeral frames (not kept)
    round_seen: tuple[int, int] | None = None  # the active round's progress, and when
    round_moved: float = 0.0  # it last moved
    round_version: int = -1  # the replica's version when the last round started
    round_gap: int = 1  # intervals between the timer's rounds while the link is quiet
    round_wait: int = 0  # ticks to skip before the next


async def _await(coroutine: Coroutine[Any, Any, None]) -> None:
    await coroutine


class _ReadAhead:
    """Frames read from a link and not yet handled, bounded in count and bytes."""

    def __init__(self) -> None:
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._changed = anyio.Event()
        self.closed = False
        self.error: BaseException | None = None

    def _signal(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def put(self, frame: bytes) -> None:
        while self._frames and (
            len(self._frames) >= _READ_AHEAD or self._bytes + len(frame) > _READ_AHEAD_BYTES
        ):
            await self._changed.wait()
        self._frames.append(frame)
        self._bytes += len(frame)
        self._signal()

    async def take(self) -> list[bytes] | None:
        """Every frame waiting (at least one), or None once the link closed and all were taken."""
        while not self._frames:
            if self.closed:
                return None
            await self._changed.wait()
        batch = list(self._frames)
        self._frames.clear()
        self._bytes = 0
        self._signal()
        return batch

    def close(self, error: BaseException | None = None) -> None:
        self.closed = True
        self.error = error
        self._signal()


async def _read_frames(link: Link, out: _ReadAhead) -> None:
    """Move frames from the link to the read-ahead until either side closes."""
    try:
        async for frame in link:
            await out.put(frame)
    except (LinkClosed, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
        out.close(exc)
        return
    out.close()


def _check_addresses(transport: Transport, listen: str | None, peers: Sequence[str]) -> None:
    """An address that can never work is an error now, not a dial retried for ever."""
    for name, address in [("listen", listen), *(("peers", p) for p in peers)]:
        if address is None:
            continue
        try:
            scheme = scheme_of(address)
            if isinstance(transport, Transports):
                transport.for_scheme(scheme)
        except TransportError as exc:
            raise ConfigError(f"{name}: {exc} (addresses are scheme://...)") from None


#: Failed dials in a row before a bootstrap peer is warned about (once per episode).
_WARN_AFTER_FAILED_DIALS = 3


class Runtime:
    """Runs sync between ``replica`` and its peers over ``transport``.

    Args:
        replica: the local replica (the mesh does not close it).
        transport: how to reach peers (default: the transport of each address's
            scheme, found in the registry: see :mod:`crdt_mesh.runtime.registry`).
        listen: an address to accept links on, or None.
        peers: addresses to dial (and redial with backoff while the mesh runs).
        interval: seconds between anti-entropy rounds on each dialled link.
        push_fanout: peers that get each fresh local entry at once.
        max_peers: links kept at once; a link beyond it is closed at once.
        seed: for the random choices (push targets, backoff jitter).
        config: the ``P2P_*`` settings. When given, it supplies the listen port,
            bootstrap peers and max peers that are not passed
            explicitly, and with ``P2P_ENABLED`` off the mesh does no P2P work at
            all: no listener, no dialling, no timers.
        penalties: the table of misbehaviour (default: a fresh one with the default
            :class:`~crdt_mesh.penalty.PenaltySettings`); share one between meshes
            of one process to refuse a peer everywhere at once.
        rounds_per_second: rounds a peer may open on one link per second (a burst of
            twice as many); more is a budget overrun. Default: four per ``interval``,
            at least 20.
    """

    def __init__(
        self,
        replica: Replica,
        transport: Transport | None = None,
        *,
        listen: str | None = None,
        peers: Sequence[str] = (),
        interval: float = 5.0,
        push_fanout: int = 3,
        max_peers: int | None = None,
        seed: int | None = None,
        config: MeshConfig | None = None,
        penalties: Penalties | None = None,
        rounds_per_second: float | None = None,
    ) -> None:
        of_type("replica", replica, Replica, "a Replica")
        if transport is not None and not isinstance(transport, Transport):
            raise ArgumentTypeError(f"transport: a Transport, not {type(transport).__name__}")
        if listen is not None:
            of_type("listen", listen, str, "an address (scheme://...) or None")
        if isinstance(peers, str | bytes):
            raise ArgumentTypeError(f"peers: a list of addresses, not the one str {peers!r}")
        peers = strings("peers", peers)
        interval = number("interval", interval, above=0, error=ConfigError)
        push_fanout = integer("push_fanout", push_fanout, low=0, error=ConfigError)
        if max_peers is not None:
            max_peers = integer("max_peers", max_peers, low=1, error=ConfigError)
        if seed is not None:
            integer("seed", seed)
        if config is not None:
            of_type("config", config, MeshConfig, "a MeshConfig or None")
        if penalties is not None:
            of_type("penalties", penalties, Penalties, "a Penalties table or None")
        if rounds_per_second is not None:
            rounds_per_second = number(
                "rounds_per_second", rounds_per_second, above=0, error=ConfigError
            )
        self.replica = replica
        self.config = config
        self.active = config is None or config.enabled
        #: misbehaviour, per peer (and per host for what comes before a handshake)
        self.penalties = penalties if penalties is not None else Penalties()
        self.transport: Transport = (
            transport if transport is not None else Transports(penalties=self.penalties)
        )
        if config is not None:
            listen = listen if listen is not None else config.listen_address()
            peers = list(peers) or list(config.bootstrap_peers)
            max_peers = max_peers if max_peers is not None else config.max_peers
        _check_addresses(self.transport, listen, peers)
        self.listen_address = listen
        self.bootstrap = list(peers)
        self.interval = interval
        self.push_fanout = push_fanout
        self.max_peers = max_peers if max_peers is not None else 50
        #: links the active view aims at (a service sets it: see :meth:`want_links`);
        #: None: as many as ``max_peers`` allows
        self.active_target: int | None = None
        self.events = EventBus()
        self._channels: dict[bytes, EphemeralHandler] = {}
        #: ephemeral frames of channels nobody here owns
        self.unrouted_frames = 0
        self.refused_links = 0
        #: dials of the bootstrap peers that failed (each episode is warned about once)
        self.failed_dials = 0
        #: links dialled to carry ephemeral frames (a courier frame to a peer not linked)
        self.ephemeral_dials = 0
        self.rng = random.Random(seed)
        self._connections: dict[PeerId, _Connection] = {}
        self._transient: dict[PeerId, _Connection] = {}  # served one round, then closed
        self._dialling_for: dict[PeerId, list[bytes]] = {}  # frames waiting for a dial
        self._link_closed: list[Callable[[PeerId, LinkEnd], None]] = []
        self._listener: Listener | None = None
        self._tg: TaskGroup | None = None
        self._unsubscribe: object = None
        #: intervals the anti-entropy timer has counted
        self.ticks = 0
        #: links closed because the peer's hello never came
        self.silent_links = 0
        #: links served (kept in the view, or for one round), and what the closed carried
        self.links_served = 0
        self._closed_totals = LinkStats()
        #: links closed because the peer broke the protocol
        self.dropped_links = 0
        #: inputs refused at ingest (bad signatures, chains, policies ...)
        self.rejected_inputs = 0
        #: links closed at once because the peer (or its host) is refused
        self.refused_peers = 0
        self.rounds_per_second = (
            rounds_per_second if rounds_per_second is not None else max(20.0, 4.0 / interval)
        )
        # what peers whose links closed lately were sent: peer -> (history, closed at)
        self._histories: OrderedDict[PeerId, tuple[SendHistory, float]] = OrderedDict()

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        tg = self._tg
        self.events.attach(lambda coroutine: tg.start_soon(_await, coroutine))
        if not self.active:
            log.info("P2P is disabled (P2P_ENABLED): the mesh does nothing")
            return self
        if self.listen_address is not None:
            self._listener = await self.transport.listen(self.listen_address, self.replica.identity)
            self._tg.start_soon(self._accept_loop, self._listener)
        for address in self.bootstrap:
            self._tg.start_soon(self._dial_loop, address)
        self._tg.start_soon(self._timer)
        self._unsubscribe = self.replica.on_commit(self._on_commit)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if callable(self._unsubscribe):
            self._unsubscribe()
        self.events.attach(None)
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            for connection in list(self._connections.values()):
                await connection.link.aclose()
            if self._listener is not None:
                await self._listener.aclose()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            if exc is None or group.split(lambda e: e is exc)[1] is not None:
                raise  # a task of ours failed too: the group says so
        return False  # the body's exception alone: it goes on as itself, not in a group

    @property
    def running(self) -> bool:
        """Whether the runtime's task group is up (inside ``async with``)."""
        return self._tg is not None and self.active

    def spawn(self, function: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Run ``function(*args)`` in the runtime's task group (ended with it).

        Raises:
            ClosedError: the runtime is not running.
        """
        if self._tg is None:
            raise ClosedError("the mesh is not running: use `async with Mesh(...)`")
        self._tg.start_soon(function, *args)

    def on_ephemeral(self, channel: bytes, handler: EphemeralHandler) -> Callable[[], None]:
        """Route ephemeral frames of ``channel`` (one byte) to ``handler(sender, data)``.

        A service owns its channel; frames of a channel nobody owns are dropped.

        Raises:
            ValueError: ``channel`` is not one byte, or is owned already.
        """
        if not isinstance(channel, bytes) or len(channel) != 1:
            raise ValueError("a channel is one byte")
        if channel == _CONTROL:
            raise ValueError(f"channel {channel!r} is the runtime's own")
        if channel in self._channels:
            raise ValueError(f"channel {channel!r} is owned already")
        self._channels[channel] = handler
        return lambda: self._channels.pop(channel, None) and None

    def send_ephemeral(
        self, channel: bytes, peer: PeerId, data: bytes, addresses: Sequence[str] = ()
    ) -> None:
        """Send an ephemeral frame (not a ledger entry) on ``channel`` to ``peer``; best effort.

        Over its link if there is one; else over a link dialled to ``addresses``
        for it (frames for a peer being dialled wait for the link, a few at most,
        and a few peers at most wait for such a dial). A frame that cannot be sent,
        or that would wait behind too much unread output, is dropped: the
        protocols above expect loss.
        """
        data = channel + data
        connection = self._connections.get(peer) or self._transient.get(peer)
        if connection is not None:
            if connection.peer.session.outbox_bytes < _MAX_OUTBOX:
                connection.peer.session.send_broadcast(data)
                self._wake(connection)
            return
        waiting = self._dialling_for.get(peer)
        if waiting is not None:
            if len(waiting) < _WAITING_FRAMES:
                waiting.append(data)
            return
        if self._refused(peer) or len(self._dialling_for) >= _WAITING_PEERS:
            return
        if addresses and self._tg is not None and self.active:
            self._dialling_for[peer] = [data]
            self._tg.start_soon(self._dial_for, peer, list(addresses))

    async def _dial_for(self, peer: PeerId, addresses: list[str]) -> None:
        link: Link | None = None
        self.ephemeral_dials += 1
        try:
            with anyio.move_on_after(max(self.interval, 1.0)):
                for address in addresses:
                    try:
                        link = await self.transport.dial(address, self.replica.identity)
                        break
                    except MeshError as exc:
                        log.debug("dial %s at %s failed: %s", peer.short, address, exc)
        finally:
            frames = self._dialling_for.pop(peer, [])
        if link is None:
            return
        if link.remote != peer:
            await link.aclose()  # someone else answers at that address now
            return
        await self._serve_link(link, True, frames, keep=False)

    # -- misbehaviour -----------------------------------------------------------------------

    def penalise(
        self, peer: PeerId, offence: Offence, reason: str = "", *, weight: float | None = None
    ) -> None:
        """Count ``offence`` against ``peer``; past the threshold its links are closed
        and it is refused for a back-off (logged once per episode).

        Services call this for misbehaviour they can prove (a forged broadcast, a
        copied sealed bid); the mesh calls it for breaches of the sync protocol and
        for refused entries.
        """
        now = anyio.current_time()
        refusal = self.penalties.add(peer, offence, now, weight=weight)
        if refusal is None:
            return
        self._log_refusal(refusal, reason or offence.value)
        # Only the key is refused: hosts are shared (NAT, one machine with many agents);
        # what happens before a key is proven is the transport's to count per host.
        for table in (self._connections, self._transient):
            connection = table.get(peer)
            if connection is not None:
                self._close_soon(connection)

    def _log_refusal(self, refusal: Refusal, reason: str) -> None:
        key = refusal.key.short if isinstance(refusal.key, PeerId) else str(refusal.key)
        seconds = refusal.until - anyio.current_time()
        log.warning(
            "refusing %s for %.0f s (episode %d): %s", key, seconds, refusal.episode, reason
        )

    def _refused(self, peer: PeerId) -> bool:
        return self.penalties.refused(peer, anyio.current_time())

    def _close_soon(self, connection: _Connection) -> None:
        if self._tg is not None:
            self._tg.start_soon(connection.link.aclose)

    def _penalise_ingest(self, remote: PeerId, report: IngestReport) -> None:
        """Refused entries that an honest relay could not have sent cost the sender."""
        for rejection in report.rejected:
            error = rejection.error
            if isinstance(error, ForkDetected | ChainError | PendingOverflow):
                # A fork is its author's doing, and so is a chain that breaks where
                # the author forked before; an overflow of pending entries is ours.
                continue
            bad_signature = isinstance(error, InvalidSignature)
            offence = Offence.BAD_SIGNATURE if bad_signature else Offence.INVALID_ENTRY
            if isinstance(error, RemoteError):
                self.penalise(remote, offence, str(error))

    def receive_ephemeral(self, sender: PeerId, data: bytes) -> None:
        """An ephemeral frame from ``sender`` (a channel byte, then the data): to the
        service that owns the channel, within the link's budget."""
        connection = self._connections.get(sender) or self._transient.get(sender)
        if connection is not None and not self._ephemeral_budget(connection):
            self.penalise(sender, Offence.BUDGET, "sent ephemeral frames faster than its budget")
            return
        if data[:1] == _CONTROL:
            if data in _WORDS and connection is not None:
                connection.end = _WORDS[data]
            return
        handler = self._channels.get(data[:1])
        if handler is None:
            # Not an offence: an honest peer whose services differ from ours (gossip on
            # there, off here) sends frames of channels nobody here owns.
            self.unrouted_frames += 1
            return
        handler(sender, data[1:])

    def _ephemeral_budget(self, connection: _Connection) -> bool:
        """Take one ephemeral frame from the link's token bucket; False if it ran dry."""
        now = anyio.current_time()
        rate = _EPHEMERAL_PER_SECOND
        elapsed = now - connection.ephemeral_stamp
        connection.ephemeral_tokens = min(2 * rate, connection.ephemeral_tokens + elapsed * rate)
        connection.ephemeral_stamp = now
        if connection.ephemeral_tokens < 1:
            return False
        connection.ephemeral_tokens -= 1
        return True

    async def disconnect(self, peer: PeerId) -> None:
        """Close the link to ``peer``, if there is one, on purpose: the peer is told
        so first (it does not take the close for a crash). The link leaves the
        active view at once; the word and the close follow in the background."""
        connection = self._connections.pop(peer, None)
        if connection is None:
            return
        connection.end = LinkEnd.PARTED
        self._left_view(peer, connection)
        if self._tg is None:
            await connection.link.aclose()
        else:
            self._tg.start_soon(self._part, connection)

    async def _part(self, connection: _Connection) -> None:
        """Say the link closes on purpose, give the word a moment to go out, close."""
        connection.peer.session.send_broadcast(_PARTING)
        with anyio.move_on_after(_PARTING_SECONDS):
            await self._drained(connection)
        await connection.link.aclose()

    def _left_view(self, peer: PeerId, connection: _Connection) -> None:
        if connection.kept:
            connection.kept = False  # (once)
            for handler in list(self._link_closed):
                handler(peer, connection.end)

    def on_link_closed(self, handler: Callable[[PeerId, LinkEnd], None]) -> Callable[[], None]:
        """Call ``handler(peer, how)`` when the last link to ``peer`` in the active view
        ends: :attr:`LinkEnd.PARTED` or :attr:`LinkEnd.FULL` if either side said so
        before closing it (:meth:`disconnect`, a full view), :attr:`LinkEnd.LOST` if
        it ended by a crash, a shutdown or a fault. Returns a function that stops
        the calls."""
        self._link_closed.append(handler)
        return lambda: self._link_closed.remove(handler) if handler in self._link_closed else None

    @property
    def address(self) -> str | None:
        """The address this mesh listens on (with the port chosen, for TCP port 0)."""
        return self._listener.address if self._listener is not None else None

    @property
    def peers(self) -> list[PeerId]:
        """Peers with a live link."""
        return list(self._connections)

    def want_links(self, count: int) -> None:
        """Aim the active view at ``count`` links (at most ``max_peers``): bootstrap
        peers are dialled only while there are fewer, and links past half as many
        again (:func:`~crdt_mesh.runtime.host.link_ceiling`) are served one round and
        closed, as at ``max_peers`` (membership sets it, in the manner of HyParView:
        a few links, not a full mesh)."""
        self.active_target = max(1, min(int(count), self.max_peers))

    def _link_limit(self) -> int:
        """Links kept at once: ``max_peers``, or :func:`link_ceiling` of the target."""
        if self.active_target is None:
            return self.max_peers
        return link_ceiling(self.active_target, self.max_peers)

    def _links_wanted(self) -> bool:
        return self.active_target is None or len(self._connections) < self.active_target

    @property
    def links(self) -> dict[PeerId, Link]:
        """The live links, by peer (a copy: for statistics such as bytes sent)."""
        return {peer: connection.link for peer, connection in self._connections.items()}

    async def connect(self, address: str) -> PeerId:
        """Dial ``address`` once and keep the link until it closes; returns the peer.

        Raises:
            TransportError: the dial failed.
        """
        if self._tg is None:
            raise ClosedError("the mesh is not running: use `async with Mesh(...)`")
        link = await self.transport.dial(address, self.replica.identity)
        self._tg.start_soon(self._serve_link, link, True)
        return link.remote

    def link_totals(self) -> LinkStats:
        """What every link served since the mesh started carried (open ones so far)."""
        total = self._closed_totals
        for connection in [*self._connections.values(), *self._transient.values()]:
            total += connection.peer.totals()
        return total

    @property
    def transient_links(self) -> int:
        """Links served one round (past the view's limit, or carrying ephemeral frames)."""
        return len(self._transient)

    async def sync_now(self) -> None:
        """Start a round of anti-entropy on every dialled link now (and on the links
        dialled to carry ephemeral frames, until a round finds both ends in step)."""
        await self._rounds(paced=False)

    async def _rounds(self, *, paced: bool) -> None:
        couriers = [c for c in self._transient.values() if c.courier]
        for connection in [*self._connections.values(), *couriers]:
            await self._start_round(connection, paced=paced)

    # -- links ------------------------------------------------------------------------------

    async def _accept_loop(self, listener: Listener) -> None:
        # The listener authenticates each connection in a task of its own (one slow
        # handshake never holds up another) and hands us the links that make it.
        with contextlib.suppress(TransportError):
            await listener.serve(self._serve_accepted)

    async def _serve_accepted(self, link: Link) -> None:
        await self._serve_link(link, False)

    async def _dial_loop(self, address: str) -> None:
        backoff = 0.05
        failures = 0  # in a row: an episode of failures, warned about once
        while True:
            if not self._links_wanted():  # the active view is full: the seed is not needed
                await anyio.sleep(max(self.interval, 1.0) * (0.5 + self.rng.random()))
                continue
            try:
                link = await self.transport.dial(address, self.replica.identity)
            except MeshError as exc:  # unreachable, refused, or failed authentication
                failures += 1
                self.failed_dials += 1
                if failures == _WARN_AFTER_FAILED_DIALS:
                    log.warning(
                        "cannot reach %s (%d dials failed; still trying): %s",
                        address,
                        failures,
                        exc,
                    )
                else:
                    log.debug("dial %s failed: %s", address, exc)
            else:
                if failures >= _WARN_AFTER_FAILED_DIALS:
                    log.info("reached %s again after %d failed dials", address, failures)
                failures = 0
                opened = anyio.current_time()
                await self._serve_link(link, True)
                if anyio.current_time() - opened > 4 * self.interval:
                    backoff = 0.05  # a link that lasted: redial at once if it drops
                # (one closed soon, by a full peer, backs off as a failure does)
            # jittered exponential backoff before redialling
            await anyio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(backoff * 2, max(self.interval, 1.0))

    async def _serve_link(
        self, link: Link, initiator: bool, ephemeral: Sequence[bytes] = (), *, keep: bool = True
    ) -> None:
        remote = link.remote
        if remote == self.replica.peer_id:
            await link.aclose()  # we dialled ourselves
            return
        if self._refused(remote):
            self.refused_peers += 1
            await link.aclose()
            return
        existing = self._connections.get(remote)
        if existing is not None:
            if not keep or not self._replaces(existing, initiator):
                await link.aclose()
                return
            del self._connections[remote]
            existing.end = LinkEnd.PARTED  # (the peer stays linked, by the new link)
            await existing.link.aclose()
        # At the link limit a link is not kept, but it is served for one round first:
        # the newcomer learns the peer records (HyParView's passive view) and can dial
        # others; then it is closed. A full node so refuses links without becoming
        # a dead end for peers that only know its address. A link dialled only to
        # carry ephemeral frames (``keep=False``: a probe relayed for another) is
        # served the same way: it never joins the active view.
        transient = not keep or len(self._connections) >= self._link_limit()
        if transient and (len(self._transient) >= _MAX_TRANSIENT or remote in self._transient):
            self.refused_links += 1
            await link.aclose()
            return
        history = self._history_of(remote)
        connection = _Connection(
            link,
            PeerSync(
                self.replica,
                remote,
                initiator=initiator,
                on_broadcast=self.receive_ephemeral,
                on_ingest=lambda report: self._penalise_ingest(remote, report),
                history=history,
            ),
            round_tokens=2 * self.rounds_per_second,
            round_stamp=anyio.current_time(),
            opened=anyio.current_time(),
            ephemeral_stamp=anyio.current_time(),
            refused_resends=history.refused,
        )
        connection.courier = not keep
        self.links_served += 1
        if transient:
            if keep:
                self.refused_links += 1
                limit = self._link_limit()
                log.info("at %d peers: one round with %s, then closing", limit, remote.short)
            self._transient[remote] = connection
        else:
            self._connections[remote] = connection
            connection.kept = True
        frames = _ReadAhead()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_read_frames, link, frames)
                tg.start_soon(self._write_frames, connection, tg.cancel_scope)
                for frame in ephemeral:
                    connection.peer.session.send_broadcast(frame)
                self._wake(connection)
                try:
                    with anyio.move_on_after(2 * self.interval if transient else math.inf):
                        while (batch := await frames.take()) is not None:
                            if not await self._handle(connection, batch, initiator):
                                break
                            stats = connection.peer.stats
                            if transient and stats.rounds and (keep or stats.rounds_in_step):
                                # the newcomer has what it came for, once it is sent (a
                                # link dialled for a courier: once both ends hold the same)
                                connection.end = LinkEnd.FULL if keep else LinkEnd.PARTED
                                connection.peer.session.send_broadcast(_FULL if keep else _PARTING)
                                await self._drained(connection)
                                break
                except MeshError:
                    log.exception("link to %s failed", remote.short)
                finally:
                    tg.cancel_scope.cancel()
            if isinstance(frames.error, RateLimitExceeded):
                self.penalise(remote, Offence.BUDGET, str(frames.error))
        finally:
            self._closed_totals += connection.peer.totals()
            if self._connections.get(remote) is connection:
                del self._connections[remote]
            if self._transient.get(remote) is connection:
                del self._transient[remote]
            if remote not in self._connections and remote not in self._transient:
                self._remember_history(remote, history)
                self._left_view(remote, connection)
                if not self.replica.closed:
                    self.replica.forget_pending(remote)  # anti-entropy sends it again
            with anyio.CancelScope(shield=True):
                await link.aclose()

    async def _write_frames(self, connection: _Connection, scope: anyio.CancelScope) -> None:
        """The link's writer: sends what the sync core queued, reading entries from the
        store a slice at a time, only as fast as the link takes them."""
        peer, link = connection.peer, connection.link
        try:
            while True:
                await connection.wake.wait()
                connection.wake = anyio.Event()
                while frames := peer.frames(_WRITE_SLICE):
                    for frame in frames:
                        await link.send(frame)
                connection.drained.set()
                connection.drained = anyio.Event()
        except (LinkClosed, TransportError) as exc:
            log.debug("link to %s closed while sending: %s", link.remote.short, exc)
            scope.cancel()

    def _wake(self, connection: _Connection) -> None:
        connection.wake.set()

    async def _drained(self, connection: _Connection) -> None:
        """Wait until the writer sent everything queued for the link."""
        while connection.peer.has_output:
            self._wake(connection)
            await connection.drained.wait()

    def _replaces(self, existing: _Connection, initiator: bool) -> bool:
        """Whether a new link to a peer we are linked with should replace the old one.

        A peer that dials again (it lost the old link before we noticed) replaces it.
        When both dialled each other at once, both sides keep the link dialled by the
        smaller peer id, so that they agree without talking.
        """
        if existing.peer.session.initiator == initiator:
            return True
        remote = existing.link.remote
        dialler_of_new = self.replica.peer_id if initiator else remote
        dialler_of_old = remote if initiator else self.replica.peer_id
        return dialler_of_new < dialler_of_old

    async def _handle(self, connection: _Connection, frames: list[bytes], initiator: bool) -> bool:
        """Process frames that arrived together on one link; False if it must close."""
        remote = connection.link.remote
        peer = connection.peer
        rejected_before = peer.stats.rejected
        rounds_before = peer.stats.rounds_opened
        try:
            news = peer.receive_many(frames)
        except ProtocolError as exc:
            log.warning("closing link to %s: %s", remote.short, exc)
            self.dropped_links += 1
            self.penalise(remote, Offence.PROTOCOL_BREACH, str(exc))
            return False
        finally:
            self.rejected_inputs += peer.stats.rejected - rejected_before
        if peer.stats.rounds_opened > rounds_before and not self._round_budget(
            connection, peer.stats.rounds_opened - rounds_before
        ):
            self.penalise(remote, Offence.BUDGET, "opened rounds faster than its budget")
        if self._refused(remote):
            return False
        self._wake(connection)
        if news:
            self._push(news, exclude=remote)
        if initiator and peer.ready and not connection.started:
            connection.started = True  # first round at once; then every interval
            await self._start_round(connection)
        # Replies to a peer that does not read them would pile up: stop reading it.
        while peer.session.outbox_bytes > _MAX_OUTBOX:
            await connection.drained.wait()
        return True

    def _round_budget(self, connection: _Connection, rounds: int) -> bool:
        """Take ``rounds`` from the link's token bucket of rounds; False if it ran dry."""
        now = anyio.current_time()
        rate = self.rounds_per_second
        elapsed = now - connection.round_stamp
        connection.round_tokens = min(2 * rate, connection.round_tokens + elapsed * rate)
        connection.round_stamp = now
        connection.round_tokens -= rounds
        return connection.round_tokens >= 0

    async def _start_round(self, connection: _Connection, *, paced: bool = False) -> None:
        peer = connection.peer
        if not peer.ready:
            waited = anyio.current_time() - connection.opened
            if waited > max(2 * self.interval, _HELLO_SECONDS):  # no hello: the link is dead
                self.silent_links += 1
                await connection.link.aclose()
            return
        if not peer.session.initiator or peer.closed:
            return
        if peer.session.round_active:
            # A round still moving is let finish, however slow the peer (busy, or far):
            # abandoned at every tick, as before, no round with a difference ever
            # finished against a peer slower than the interval. One that has not moved
            # for a while lost a frame: it is abandoned, and the next round fixes all.
            now = anyio.current_time()
            progress = peer.session.round_progress
            if progress != connection.round_seen:
                connection.round_seen, connection.round_moved = progress, now
                return
            if now - connection.round_moved < _ROUND_STALL_INTERVALS * self.interval:
                return
            peer.session.abandon_round()
        if paced and self._quiet(connection):
            return
        connection.round_version = self.replica.version
        if peer.start_round():
            self._wake(connection)

    def _quiet(self, connection: _Connection) -> bool:
        """True to let this tick pass without a round: the link was found in step and
        nothing was committed here since. Rounds on a quiet link come every 1, 2, 4
        ... intervals (up to :data:`_MAX_ROUND_GAP`): news travels by push, and the
        rounds are its net; at rest, most of a mesh's chatter was rounds in step."""
        if not connection.peer.in_step or connection.round_version != self.replica.version:
            connection.round_gap, connection.round_wait = 1, 0
            return False
        if connection.round_wait > 0:
            connection.round_wait -= 1
            return True
        connection.round_gap = min(2 * connection.round_gap, _MAX_ROUND_GAP)
        connection.round_wait = connection.round_gap - 1
        return False

    async def _timer(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            self.ticks += 1
            self._budgets()
            await self._rounds(paced=True)

    def _budgets(self) -> None:
        """Once an interval: grant resend allowances, and charge gaps left unfilled."""
        for table in (self._connections, self._transient):
            for peer, connection in list(table.items()):
                history = connection.peer.history
                history.grant(_RESEND_PER_SECOND * self.interval, _RESEND_CAP)
                if history.refused > connection.refused_resends:
                    log.info("%s asks again for what it was sent: throttled", peer.short)
                connection.refused_resends = history.refused
        expired = self.replica.expire_pending(max(2.0, _GAP_INTERVALS * self.interval))
        for source, feeds in expired.items():
            if isinstance(source, PeerId):
                weight = WEIGHTS[Offence.GAP] * feeds
                reason = f"left gaps in {feeds} feeds unfilled"
                self.penalise(source, Offence.GAP, reason, weight=weight)

    def _history_of(self, peer: PeerId) -> SendHistory:
        remembered = self._histories.pop(peer, None)
        if remembered is not None and anyio.current_time() - remembered[1] < _HISTORY_SECONDS:
            return remembered[0]
        return SendHistory(allowance=0)

    def _remember_history(self, peer: PeerId, history: SendHistory) -> None:
        self._histories[peer] = (history, anyio.current_time())
        self._histories.move_to_end(peer)
        while len(self._histories) > _HISTORIES:
            self._histories.popitem(last=False)

    # -- pushing fresh entries ---------------------------------------------------------------

    def _on_commit(self, entries: list[Entry]) -> None:
        local = [e for e in entries if e.author == self.replica.peer_id]
        if local:
            self._push(local)

    def _push(self, entries: list[Entry], exclude: PeerId | None = None) -> None:
        targets = [c for p, c in self._connections.items() if p != exclude]
        self.rng.shuffle(targets)
        for connection in targets[: self.push_fanout]:
            if connection.peer.session.outbox_bytes < _MAX_OUTBOX:  # else anti-entropy will
                connection.peer.push(entries)
                self._wake(connection)
