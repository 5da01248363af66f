"""A third-party transport: crdt_mesh links over Unix domain sockets.

An example of what a package of your own can add (``docs/testing.md``, "Writing
your own transport"). Addresses are ``unix:///path/to/socket``. The link and the
Noise XX handshake are the TCP transport's: they work over any anyio byte stream,
so a new transport is only where the bytes go. Register it by entry point::

    [project.entry-points."crdt_mesh.transports"]
    unix = "unix_transport:UnixTransport"

and ``Mesh(replica, listen="unix:///tmp/alice.sock")`` finds it by the scheme.
It passes crdt_mesh's transport conformance suite
(``tests/integration/test_transport_conformance.py``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import anyio
from anyio.abc import SocketListener, SocketStream

from crdt_mesh.errors import AuthenticationError, TransportError
from crdt_mesh.identity import Identity
from crdt_mesh.runtime.penalty import Penalties
from crdt_mesh.runtime.transport import LinkHandler
from transports.noise import HandshakeError
from transports.tcp import TcpLimits, TcpLink, handshake


def _path(address: str) -> str:
    if not isinstance(address, str) or not address.startswith("unix://") or len(address) < 8:
        raise TransportError(f"not a unix:// address: {address!r}")
    return address[len("unix://") :]


class UnixListener:
    """Accepts connections on a socket file. ``serve`` runs each handshake in a task of
    its own, so that a slow peer holds up nobody; ``accept`` takes one at a time."""

    def __init__(self, listener: SocketListener, path: str, identity: Identity) -> None:
        self._listener = listener
        self._path = path
        self._identity = identity
        self._limits = TcpLimits()

    @property
    def address(self) -> str:
        return f"unix://{self._path}"

    async def accept(self) -> TcpLink:
        while True:
            try:
                stream = await self._listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
                raise TransportError("listener closed") from exc
            link = await _authenticate(stream, self._identity, self._limits, initiator=False)
            if link is not None:
                return link

    async def serve(self, handler: LinkHandler) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    stream = await self._listener.accept()
                except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                    tg.cancel_scope.cancel()
                    break
                tg.start_soon(self._serve_one, stream, handler)
        raise TransportError("the listener is closed")

    async def _serve_one(self, stream: SocketStream, handler: LinkHandler) -> None:
        link = await _authenticate(stream, self._identity, self._limits, initiator=False)
        if link is not None:
            await handler(link)

    async def aclose(self) -> None:
        await self._listener.aclose()
        with contextlib.suppress(OSError):
            os.unlink(self._path)


async def _authenticate(
    stream: SocketStream, identity: Identity, limits: TcpLimits, *, initiator: bool
) -> TcpLink | None:
    try:
        with anyio.fail_after(limits.handshake_timeout):
            peer, send, receive, rest = await handshake(stream, identity, initiator=initiator)
    except (HandshakeError, TimeoutError, OSError, anyio.BrokenResourceError) as exc:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        if initiator:
            raise AuthenticationError(f"handshake failed: {exc}") from exc
        return None
    link = TcpLink(stream, peer, send, receive, limits, "unix://")
    link._buffer += rest
    return link


class UnixTransport:
    """A :class:`~crdt_mesh.runtime.transport.Transport` over Unix domain sockets."""

    def __init__(self, *, penalties: Penalties | None = None) -> None:
        self.limits = TcpLimits()

    async def listen(self, address: str, identity: Identity) -> UnixListener:
        path = _path(address)
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
        try:
            listener = await anyio.create_unix_listener(path)
        except OSError as exc:
            raise TransportError(f"cannot listen on {address}: {exc}") from exc
        return UnixListener(listener, path, identity)

    async def dial(self, address: str, identity: Identity) -> TcpLink:
        try:
            stream = await anyio.connect_unix(_path(address))
        except OSError as exc:
            raise TransportError(f"cannot reach {address}: {exc}") from exc
        link = await _authenticate(stream, identity, self.limits, initiator=True)
        assert link is not None
        return link
