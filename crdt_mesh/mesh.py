"""The async runtime: a replica, its links, the anti-entropy timer and eager push.

A thin shell (anyio: asyncio and trio both work) around the sans-IO sync
protocol. It moves frames between links and :class:`~crdt_mesh.peer.PeerSync`,
starts a round of anti-entropy on every link it dialled each ``interval``,
and pushes fresh local entries to up to ``push_fanout`` peers at once.

    async with Mesh(replica, transport, listen="mem://a", peers=["mem://b"]) as mesh:
        ...   # write to replica documents; they reach the peers

The replica is used from the event loop's thread only (it is not
thread-safe); write to its documents from async code running in the mesh's
event loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .config import Feature, MeshConfig
from .errors import ClosedError, LinkClosed, MeshError, TransportError
from .events import EventBus
from .identity import PeerId
from .ledger import Entry
from .peer import PeerSync
from .replica import Replica
from .services.gossip import GossipService
from .services.tasks import TaskService
from .swim import SwimSettings
from .sync import ProtocolError
from .transport import Link, Listener, Transport

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Connection:
    link: Link
    peer: PeerSync
    send_lock: anyio.Lock
    idle_ticks: int = 0
    started: bool = False


#: Frames read ahead of processing per link (bounded: a fast peer waits on TCP).
_READ_AHEAD = 64
#: Ephemeral frames kept for a peer while a link to it is being dialled.
_WAITING_FRAMES = 8


async def _await(coroutine: Coroutine[Any, Any, None]) -> None:
    await coroutine


async def _read_frames(link: Link, out: anyio.abc.ObjectSendStream[bytes]) -> None:
    """Move frames from the link to the queue until either side closes."""
    async with out:
        try:
            async for frame in link:
                await out.send(frame)
        except (LinkClosed, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


class Mesh:
    """Runs sync between ``replica`` and its peers over ``transport``.

    Args:
        replica: the local replica (the mesh does not close it).
        transport: how to reach peers.
        listen: an address to accept links on, or None.
        peers: addresses to dial (and redial with backoff while the mesh runs).
        interval: seconds between anti-entropy rounds on each dialled link.
        push_fanout: peers that get each fresh local entry at once.
        max_peers: links kept at once; a link beyond it is closed at once.
        seed: for the random choices (push targets, backoff jitter).
        config: the ``P2P_*`` settings. When given, it supplies the listen port,
            bootstrap peers, max peers and interval that are not passed
            explicitly, and with ``P2P_ENABLED`` off the mesh does no P2P work at
            all: no listener, no dialling, no timers.
        swim: failure-detection timings (default: the gossip interval as the period).
    """

    def __init__(
        self,
        replica: Replica,
        transport: Transport,
        *,
        listen: str | None = None,
        peers: Sequence[str] = (),
        interval: float = 5.0,
        push_fanout: int = 3,
        max_peers: int | None = None,
        seed: int | None = None,
        config: MeshConfig | None = None,
        swim: SwimSettings | None = None,
    ) -> None:
        self.replica = replica
        self.transport = transport
        self.config = config
        self.active = config is None or config.enabled
        if config is not None:
            listen = listen if listen is not None else f"tcp://0.0.0.0:{config.listen_port}"
            peers = list(peers) or list(config.bootstrap_peers)
            max_peers = max_peers if max_peers is not None else config.max_peers
        self.listen_address = listen
        self.bootstrap = list(peers)
        self.interval = interval
        self.push_fanout = push_fanout
        self.max_peers = max_peers if max_peers is not None else 50
        self.events = EventBus()
        self._gossip: GossipService | None = None
        self._tasks: TaskService | None = None
        self._swim = swim
        self._gossip_running = False
        self.refused_links = 0
        self.rng = random.Random(seed)
        self._connections: dict[PeerId, _Connection] = {}
        self._transient: dict[PeerId, _Connection] = {}  # served one round, then closed
        self._dialling_for: dict[PeerId, list[bytes]] = {}  # frames waiting for a dial
        self._listener: Listener | None = None
        self._tg: TaskGroup | None = None
        self._unsubscribe: object = None
        #: links closed because the peer broke the protocol
        self.dropped_links = 0
        #: inputs refused at ingest (bad signatures, chains, policies ...)
        self.rejected_inputs = 0

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> Mesh:
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
        if self.config is not None and self.config.enables(Feature.GOSSIP):
            self.start_discovery()
        if self.config is None or self.config.enables(Feature.TASK_NEGOTIATION):
            _ = self.tasks  # its events fire on every replica, from the first commit
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if callable(self._unsubscribe):
            self._unsubscribe()
        if self._gossip is not None:
            self._gossip.close()
        if self._tasks is not None:
            self._tasks.close()
        self.events.attach(None)
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            for connection in list(self._connections.values()):
                await connection.link.aclose()
            if self._listener is not None:
                await self._listener.aclose()
        return await self._tg.__aexit__(exc_type, exc, tb)

    @property
    def gossip(self) -> GossipService:
        """Membership and discovery (see :mod:`crdt_mesh.services.gossip`)."""
        if self._gossip is None:
            self._gossip = GossipService(self, self._swim)
        return self._gossip

    @property
    def tasks(self) -> TaskService:
        """Task negotiation (see :mod:`crdt_mesh.services.tasks`)."""
        if self._tasks is None:
            self._tasks = TaskService(self)
        return self._tasks

    def start_discovery(self) -> None:
        """Run the gossip service's discovery loop in this mesh (once)."""
        if self._gossip_running or self._tg is None or not self.active:
            return
        self._gossip_running = True
        interval = self.config.gossip_interval if self.config is not None else self.interval
        self._tg.start_soon(self.gossip.run, interval)

    def send_ephemeral(self, peer: PeerId, data: bytes, addresses: Sequence[str] = ()) -> None:
        """Send an ephemeral frame (not a ledger entry) to ``peer``; best effort.

        Over its link if there is one; else over a link dialled to ``addresses``
        for it (frames for a peer being dialled wait for the link, a few at most).
        A frame that cannot be sent is dropped: the protocols above expect loss.
        """
        connection = self._connections.get(peer) or self._transient.get(peer)
        if connection is not None:
            connection.peer.session.send_broadcast(data)
            if self._tg is not None:
                self._tg.start_soon(self._flush_quietly, connection)
            return
        waiting = self._dialling_for.get(peer)
        if waiting is not None:
            if len(waiting) < _WAITING_FRAMES:
                waiting.append(data)
            return
        if addresses and self._tg is not None and self.active:
            self._dialling_for[peer] = [data]
            self._tg.start_soon(self._dial_for, peer, list(addresses))

    async def _dial_for(self, peer: PeerId, addresses: list[str]) -> None:
        link: Link | None = None
        with anyio.move_on_after(max(self.interval, 1.0)):
            for address in addresses:
                try:
                    link = await self.transport.dial(address, self.replica.identity)
                    break
                except MeshError as exc:
                    log.debug("dial %s at %s failed: %s", peer.short, address, exc)
        frames = self._dialling_for.pop(peer, [])
        if link is None:
            return
        if link.remote != peer:
            await link.aclose()  # someone else answers at that address now
            return
        await self._serve_link(link, True, frames)

    def _on_broadcast(self, sender: PeerId, data: bytes) -> None:
        # A mesh whose gossip is off ignores broadcasts, even if mesh.gossip was touched.
        if self.config is None or self.config.enables(Feature.GOSSIP):
            self.gossip.receive(sender, data)

    async def disconnect(self, peer: PeerId) -> None:
        """Close the link to ``peer``, if there is one."""
        connection = self._connections.pop(peer, None)
        if connection is not None:
            await connection.link.aclose()

    @property
    def address(self) -> str | None:
        """The address this mesh listens on (with the port chosen, for TCP port 0)."""
        return self._listener.address if self._listener is not None else None

    @property
    def peers(self) -> list[PeerId]:
        """Peers with a live link."""
        return list(self._connections)

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

    async def sync_now(self) -> None:
        """Start a round of anti-entropy on every dialled link now."""
        for connection in list(self._connections.values()):
            await self._start_round(connection)

    # -- links ------------------------------------------------------------------------------

    async def _accept_loop(self, listener: Listener) -> None:
        assert self._tg is not None
        while True:
            try:
                link = await listener.accept()
            except TransportError:
                return
            self._tg.start_soon(self._serve_link, link, False)

    async def _dial_loop(self, address: str) -> None:
        backoff = 0.05
        while True:
            try:
                link = await self.transport.dial(address, self.replica.identity)
            except MeshError as exc:  # unreachable, refused, or failed authentication
                log.info("dial %s failed: %s", address, exc)
            else:
                backoff = 0.05
                await self._serve_link(link, True)
            # jittered exponential backoff before redialling
            await anyio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(backoff * 2, max(self.interval, 1.0))

    async def _serve_link(
        self, link: Link, initiator: bool, ephemeral: Sequence[bytes] = ()
    ) -> None:
        remote = link.remote
        if remote == self.replica.peer_id:
            await link.aclose()  # we dialled ourselves
            return
        existing = self._connections.get(remote)
        if existing is not None:
            if not self._replaces(existing, initiator):
                await link.aclose()
                return
            del self._connections[remote]
            await existing.link.aclose()
        # At max_peers a link is not kept, but it is served for one round first: the
        # newcomer learns the peer records (HyParView's passive view) and can dial
        # others; then it is closed. A full node so refuses links without becoming
        # a dead end for peers that only know its address.
        transient = len(self._connections) >= self.max_peers
        connection = _Connection(
            link,
            PeerSync(self.replica, remote, initiator=initiator, on_broadcast=self._on_broadcast),
            anyio.Lock(),
        )
        if transient:
            self.refused_links += 1
            log.info("at %d peers: one round with %s, then closing", self.max_peers, remote.short)
            self._transient[remote] = connection
        else:
            self._connections[remote] = connection
        # A reader task queues frames; this task takes all that are waiting at once,
        # so that a burst of pushed entries is one ingest and one group commit.
        frames_in, frames_out = anyio.create_memory_object_stream[bytes](_READ_AHEAD)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_read_frames, link, frames_in)
                try:
                    for frame in ephemeral:
                        connection.peer.session.send_broadcast(frame)
                    await self._flush(connection)
                    with anyio.move_on_after(2 * self.interval if transient else math.inf):
                        async for frame in frames_out:
                            batch = [frame]
                            while len(batch) < _READ_AHEAD:
                                try:
                                    batch.append(frames_out.receive_nowait())
                                except (anyio.WouldBlock, anyio.EndOfStream):
                                    break
                            if not await self._handle(connection, batch, initiator):
                                break
                            if transient and connection.peer.stats.rounds:
                                break  # the newcomer has what it came for
                except LinkClosed:
                    pass
                except MeshError:
                    log.exception("link to %s failed", remote.short)
                finally:
                    tg.cancel_scope.cancel()
        finally:
            frames_in.close()  # the reader may never have started (cancelled first)
            frames_out.close()
            if self._connections.get(remote) is connection:
                del self._connections[remote]
            if self._transient.get(remote) is connection:
                del self._transient[remote]
            with anyio.CancelScope(shield=True):
                await link.aclose()

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
        rejected_before = connection.peer.stats.rejected
        try:
            committed = connection.peer.receive_many(frames)
        except ProtocolError as exc:
            log.warning("closing link to %s: %s", remote.short, exc)
            self.dropped_links += 1
            return False
        finally:
            self.rejected_inputs += connection.peer.stats.rejected - rejected_before
        await self._flush(connection)
        if committed:
            self._push(committed, exclude=remote)
        if initiator and connection.peer.ready and not connection.started:
            connection.started = True  # first round at once; then every interval
            await self._start_round(connection)
        return True

    async def _flush(self, connection: _Connection) -> None:
        async with connection.send_lock:
            for frame in connection.peer.frames():
                await connection.link.send(frame)

    async def _start_round(self, connection: _Connection) -> None:
        peer = connection.peer
        if not peer.ready:
            connection.idle_ticks += 1
            if connection.idle_ticks > 1:  # no hello for a whole interval: the link is dead
                await connection.link.aclose()
            return
        if not peer.session.initiator or peer.closed:
            return
        if peer.session.round_active:
            peer.session.abandon_round()  # a round outlived its interval: a frame was lost
        if peer.start_round():
            with contextlib.suppress(LinkClosed):  # the link's own task notices and cleans up
                await self._flush(connection)

    async def _timer(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            await self.sync_now()

    # -- pushing fresh entries ---------------------------------------------------------------

    def _on_commit(self, entries: list[Entry]) -> None:
        local = [e for e in entries if e.author == self.replica.peer_id]
        if local:
            self._push(local)

    def _push(self, entries: list[Entry], exclude: PeerId | None = None) -> None:
        targets = [c for p, c in self._connections.items() if p != exclude]
        self.rng.shuffle(targets)
        for connection in targets[: self.push_fanout]:
            connection.peer.push(entries)
            if self._tg is not None:
                self._tg.start_soon(self._flush_quietly, connection)

    async def _flush_quietly(self, connection: _Connection) -> None:
        with contextlib.suppress(LinkClosed):
            await self._flush(connection)
