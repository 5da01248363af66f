"""The transport seam: what a network adapter gives the mesh.

A transport moves whole frames between authenticated peers; it knows nothing
of entries or documents. To plug in your own (QUIC, WebSocket, a message bus),
implement :class:`Transport` and :class:`Link` (structural typing: no base class
to inherit) and pass an instance to :class:`~crdt_mesh.Mesh`. The shape of
:class:`Link` is that of pycrdt's ``Channel``: ``send``, ``recv``, async
iteration. Raise :class:`~crdt_mesh.errors.LinkClosed` from ``recv`` (and end
the iteration) when the link is gone, and translate your library's errors into
:class:`~crdt_mesh.errors.TransportError` at the boundary.

Rules a transport must keep:

* ``Link.remote`` is the peer's identity, proven by the transport (the memory
  transport trusts its process; TCP proves it with a Noise handshake). The mesh
  offers a peer only the documents that this identity may read.
* Frames arrive whole or not at all, in order, each at most the size the
  transport announces; the mesh's sync protocol checks everything else.
* ``Listener.serve`` never lets one connection hold up another: whatever a
  transport does to authenticate a peer (a handshake) runs in a task per
  connection, bounded in time and in number. A listener whose ``accept`` is
  immediate can take :class:`AcceptLoop`'s ``serve``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

import anyio

from ..errors import LinkClosed, TransportError
from ..identity import Identity, PeerId

#: What a listener hands each link to (run in a task of its own, per link).
LinkHandler = Callable[["Link"], Coroutine[Any, Any, None]]


@runtime_checkable
class Link(Protocol):
    """A bidirectional, ordered stream of frames with one authenticated peer."""

    @property
    def remote(self) -> PeerId:
        """The identity of the peer at the other end."""
        ...

    async def send(self, frame: bytes) -> None:
        """Send one frame. Raises LinkClosed if the link is gone."""
        ...

    async def recv(self) -> bytes:
        """Receive the next frame. Raises LinkClosed when the link is gone."""
        ...

    async def aclose(self) -> None:
        """Close the link (idempotent)."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Iterate over received frames until the link closes."""
        ...


@runtime_checkable
class Listener(Protocol):
    """Accepts the links that peers dial to one address."""

    @property
    def address(self) -> str:
        """The address peers can dial (with the port chosen, if it was 0)."""
        ...

    async def accept(self) -> Link:
        """Wait for the next incoming link. Raises TransportError once closed."""
        ...

    async def serve(self, handler: LinkHandler) -> None:
        """Accept links until the listener closes (then raise TransportError) or the
        caller is cancelled, running ``handler(link)`` in a task of its own for each.
        Connections are authenticated concurrently: a slow one delays no other."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Transport(Protocol):
    """Listens on and dials addresses, as one identity."""

    async def listen(self, address: str, identity: Identity) -> Listener:
        """Start accepting links at ``address`` as ``identity``."""
        ...

    async def dial(self, address: str, identity: Identity) -> Link:
        """Open a link to the peer at ``address``. Raises TransportError if it cannot."""
        ...


class AcceptLoop:
    """Mixin for a listener whose ``accept`` does no slow work: ``serve`` by accepting
    in a loop and handling each link in a task of its own."""

    async def accept(self) -> Link:
        raise NotImplementedError

    async def serve(self, handler: LinkHandler) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    link = await self.accept()
                except TransportError:
                    tg.cancel_scope.cancel()  # the listener closed: so do its links
                    break
                tg.start_soon(handler, link)
        raise TransportError("the listener is closed")


def host_part(address: str) -> str:
    """The host of a ``scheme://[peer@]host[:port]`` address (brackets of IPv6 removed)."""
    rest = address.split("://", 1)[-1].rsplit("@", 1)[-1]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    host, sep, port = rest.rpartition(":")
    return host if sep and port.isdigit() else rest


class FramesUntilClosed:
    """Mixin for a link class: async iteration over ``recv()`` until LinkClosed.

    A plain iterator, not an async generator, so that leaving a loop early leaves
    no generator for the garbage collector to finalize.
    """

    async def recv(self) -> bytes:
        raise NotImplementedError

    def __aiter__(self) -> FramesUntilClosed:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except LinkClosed:
            raise StopAsyncIteration from None
