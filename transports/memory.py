"""In-process links with seeded fault injection, for tests and simulations.

    network = MemoryNetwork(seed=7, faults=LinkFaults(loss=0.1))
    transport = network.transport()
    listener = await transport.listen("mem://alice", alice_identity)
    link = await network.transport().dial("mem://alice", bob_identity)

Every random choice (loss, duplication, reordering, delay) comes from the
network's seed, so a failing run replays exactly. Partitions cut named groups
of addresses apart; ``kill_after`` makes a link die after a number of frames
(a link that dies mid-batch).
"""

from __future__ import annotations

import math
import random

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from crdt_mesh.errors import LinkClosed, TransportError
from crdt_mesh.identity import Identity, PeerId
from crdt_mesh.runtime.transport import AcceptLoop, FramesUntilClosed
from crdt_mesh.testing.faults import NO_FAULTS, Faults

_BUFFER = 4096


#: The memory transport's faults are the one fault model of crdt_mesh.testing.
LinkFaults = Faults


class MemoryNetwork:
    """A simulated network of named addresses (``mem://name``)."""

    def __init__(self, *, seed: int = 0, faults: Faults = NO_FAULTS) -> None:
        self.rng = random.Random(seed)
        self.faults = faults
        self._listeners: dict[str, MemoryListener] = {}
        self._groups: dict[str, int] = {}
        self.frames_sent = 0
        self.bytes_sent = 0
        #: frames dropped because a partition cut their link (so tests can wait for them)
        self.cut_frames = 0

    def transport(self, name: str | None = None) -> MemoryTransport:
        """A transport for one node; ``name`` (or its first listen address) places it
        in partitions."""
        return MemoryTransport(self, name)

    def partition(self, *groups: list[str]) -> None:
        """Cut the addresses of different groups apart (existing links drop frames)."""
        self._groups = {address: g for g, group in enumerate(groups, 1) for address in group}

    def heal(self) -> None:
        self._groups = {}

    def _reachable(self, a: str, b: str) -> bool:
        return self._groups.get(a, 0) == self._groups.get(b, 0)


class MemoryLink(FramesUntilClosed):
    """One end of an in-memory link."""

    def __init__(
        self,
        network: MemoryNetwork,
        local: str,
        remote_address: str,
        remote: PeerId,
        outgoing: ObjectSendStream[bytes],
        incoming: ObjectReceiveStream[bytes],
    ) -> None:
        self._network = network
        self._local = local
        self._remote_address = remote_address
        self._remote = remote
        self._out = outgoing
        self._in = incoming
        self._closed = False
        self._held: bytes | None = None  # a frame held back to reorder it
        self.kill_after: int | None = None

    @property
    def remote(self) -> PeerId:
        return self._remote

    async def send(self, frame: bytes) -> None:
        if self._closed:
            raise LinkClosed("link is closed")
        if self.kill_after is not None:
            if self.kill_after <= 0:
                await self.aclose()
                raise LinkClosed("link died (fault injection)")
            self.kill_after -= 1
        network, faults = self._network, self._network.faults
        network.frames_sent += 1
        network.bytes_sent += len(frame)
        if not network._reachable(self._local, self._remote_address):
            network.cut_frames += 1
            return
        rng = network.rng
        if faults.loss and rng.random() < faults.loss:
            return
        copies = 2 if faults.duplication and rng.random() < faults.duplication else 1
        if faults.delay:
            await anyio.sleep(rng.random() * faults.delay)
        if faults.reorder and self._held is None and rng.random() < faults.reorder:
            self._held = frame  # goes out after the next frame
            return
        try:
            for _ in range(copies):
                await self._out.send(frame)
            if self._held is not None:
                held, self._held = self._held, None
                await self._out.send(held)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise LinkClosed("peer closed the link") from exc

    async def recv(self) -> bytes:
        try:
            return await self._in.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            raise LinkClosed("link is closed") from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._out.aclose()
            await self._in.aclose()


class MemoryListener(AcceptLoop):
    def __init__(self, network: MemoryNetwork, address: str, identity: Identity) -> None:
        self._network = network
        self._address = address
        self.identity = identity
        self._send, self._receive = anyio.create_memory_object_stream[MemoryLink](math.inf)

    @property
    def address(self) -> str:
        return self._address

    async def accept(self) -> MemoryLink:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError) as exc:
            raise TransportError(f"listener {self._address} is closed") from exc

    async def aclose(self) -> None:
        self._network._listeners.pop(self._address, None)
        await self._send.aclose()
        while True:  # links dialled but never accepted: close them too
            try:
                link = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            await link.aclose()
        await self._receive.aclose()


class MemoryTransport:
    """A :class:`~crdt_mesh.transport.Transport` over a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, name: str | None = None) -> None:
        self.network = network
        self.name = name
        self._counter = 0

    async def listen(self, address: str, identity: Identity) -> MemoryListener:
        if not address.startswith("mem://") or address in self.network._listeners:
            raise TransportError(f"cannot listen on {address!r}")
        listener = MemoryListener(self.network, address, identity)
        self.network._listeners[address] = listener
        self.name = self.name or address
        return listener

    async def dial(self, address: str, identity: Identity) -> MemoryLink:
        listener = self.network._listeners.get(address)
        if listener is None:
            raise TransportError(f"nobody listens on {address!r}")
        self._counter += 1
        local = self.name or f"mem://dialer-{identity.peer_id.short}-{self._counter}"
        if not self.network._reachable(local, address):
            raise TransportError(f"{address!r} is unreachable (partition)")
        a_send, b_receive = anyio.create_memory_object_stream[bytes](_BUFFER)
        b_send, a_receive = anyio.create_memory_object_stream[bytes](_BUFFER)
        mine = MemoryLink(
            self.network, local, address, listener.identity.peer_id, a_send, a_receive
        )
        theirs = MemoryLink(self.network, address, local, identity.peer_id, b_send, b_receive)
        die_after = self.network.faults.die_after
        if die_after is not None:
            for link in (mine, theirs):
                link.kill_after = die_after + self.network.rng.randrange(die_after + 1)
        try:
            listener._send.send_nowait(theirs)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            raise TransportError(f"listener {address!r} is closed") from exc
        return mine


_DEFAULT_NETWORK: MemoryNetwork | None = None


def default_transport(*, penalties: object = None) -> MemoryTransport:
    """The ``mem://`` transport of the process's default network (the registry's
    factory: ``Mesh(replica, listen="mem://a")`` with no transport given uses it)."""
    global _DEFAULT_NETWORK
    if _DEFAULT_NETWORK is None:
        _DEFAULT_NETWORK = MemoryNetwork()
    return _DEFAULT_NETWORK.transport()


__all__ = [
    "LinkFaults",
    "MemoryLink",
    "MemoryListener",
    "MemoryNetwork",
    "MemoryTransport",
    "default_transport",
]
