"""TCP links with a Noise XX handshake that proves each side's Ed25519 identity.

Addresses are ``tcp://host:port`` (IPv6: ``tcp://[::1]:port``); a dialler may
name the peer it expects, ``tcp://<peer id>@host:port``, and is refused by any
other. Port 0 on ``listen`` picks a free port (see ``Listener.address``).

On the wire (after the TCP connection):

* handshake: ``Noise_XX_25519_ChaChaPoly_BLAKE2b``, each message preceded by its
  2-byte big-endian length. The responder's second message and the initiator's
  third carry ``CBOR [1, ed25519 key, signature]``: the identity key's signature
  over ``"crdt_mesh/noise-static/v1\\0" + Noise static key``. Each side checks it
  against the static key the handshake proved, so after the handshake each
  side knows the other's PeerId for certain.
* transport: Noise transport messages (each at most 65,535 bytes, 2-byte length
  prefix). A link frame is cut into as many as it needs; the first starts with
  the frame's 4-byte length. Any message that fails authentication (altered,
  replayed, reordered) kills the link.

Limits per link: frame size, frames and bytes per second (token buckets);
excess closes the link with a logged reason (:class:`RateLimitExceeded`).

Limits per listener: handshakes run concurrently, each in a task of its own with
one deadline for the whole handshake (a peer that trickles a byte at a time runs
into it), at most ``max_handshakes_per_host`` from one host and
``handshakes_per_second`` begun per host, and at most ``max_handshakes`` at once:
when full, the oldest handshake of the host holding the most makes room, so a host
with few is never starved by hosts with many. A failed (malformed, wrong key) or
timed-out handshake counts against its host in a
:class:`~crdt_mesh.penalty.Penalties` table, and so does a connection past the
host's cap while one of its handshakes has run half its deadline (stalling); a
connection past the cap otherwise, or past the rate, is closed unread and not
charged (an honest burst, agents behind one address joining at once, completes in
milliseconds). A refused host's connections are closed before any handshake
work. One the dialler abandons (it closes the connection) does not count: honest
peers behind one address do that under load, and the work it costs is bounded by
the rate of handshakes a host may begin.

Why one module (~600 lines): dialling, listening (with its per-host
admission limits) and the framed, encrypted link share the handshake and the
frame codec; the Noise state machine itself is in :mod:`.noise`.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream

from crdt_mesh.errors import (
    AuthenticationError,
    LinkClosed,
    MeshError,
    RateLimitExceeded,
    TransportError,
)
from crdt_mesh.identity import Identity, PeerId
from crdt_mesh.runtime.penalty import Offence, Penalties
from crdt_mesh.runtime.transport import FramesUntilClosed, LinkHandler
from crdt_mesh.sync import MAX_FRAME
from transports.addresses import format_address, split_address
from transports.noise import (
    MAX_MESSAGE,
    TAGLEN,
    CipherState,
    DecryptError,
    HandshakeError,
)
from transports.secure import TokenBucket, bound_handshake, static_key

log = logging.getLogger(__name__)

_PROLOGUE = b"crdt_mesh/tcp/v1"
_CHUNK = MAX_MESSAGE - TAGLEN  # plaintext bytes per Noise transport message


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """Per-link and per-listener limits. The defaults suit a mesh of agents, not a
    file server."""

    max_frame: int = MAX_FRAME
    frames_per_second: float = 2_000.0
    bytes_per_second: float = 64 * 1024 * 1024
    connect_timeout: float = 5.0
    #: the deadline of a whole handshake, however its bytes arrive
    handshake_timeout: float = 5.0
    #: handshakes in flight at once on one listener, and from one host
    max_handshakes: int = 64
    max_handshakes_per_host: int = 8
    #: handshakes one host may begin per second (a burst of twice as many)
    handshakes_per_second: float = 20.0

    def __post_init__(self) -> None:
        if self.max_frame < 1 or self.max_handshakes < 1 or self.max_handshakes_per_host < 1:
            raise ValueError("max_frame, max_handshakes and max_handshakes_per_host are >= 1")
        if min(self.frames_per_second, self.bytes_per_second, self.handshakes_per_second) <= 0:
            raise ValueError("rates are positive")


class HandshakeAbandoned(HandshakeError):
    """The other side closed the connection during the handshake."""


@dataclass(frozen=True, slots=True)
class TcpAddress:
    host: str
    port: int
    peer: PeerId | None = None

    @classmethod
    def parse(cls, address: str) -> TcpAddress:
        """Parse ``tcp://[peer@]host:port``.

        Raises:
            TransportError: not such an address.
        """
        peer, host, port, path = split_address(address, "tcp", port_zero=True)
        if path:
            raise TransportError(f"a tcp:// address has no path: {address!r}")
        return cls(host, port, peer)

    def __str__(self) -> str:
        return format_address("tcp", self.peer, self.host, self.port)


class TcpLink(FramesUntilClosed):
    """An authenticated, encrypted link over one TCP connection."""

    def __init__(
        self,
        stream: SocketStream,
        remote: PeerId,
        send: CipherState,
        receive: CipherState,
        limits: TcpLimits,
        remote_address: str,
    ) -> None:
        self._stream = stream
        self._remote = remote
        self._send_cipher = send
        self._recv_cipher = receive
        self._limits = limits
        self._buffer = bytearray()
        self._send_lock = anyio.Lock()
        self._closed = False
        self._frames = TokenBucket(limits.frames_per_second)
        self._bytes = TokenBucket(limits.bytes_per_second)
        self.remote_address = remote_address
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def remote(self) -> PeerId:
        return self._remote

    async def send(self, frame: bytes) -> None:
        if self._closed:
            raise LinkClosed("link is closed")
        if len(frame) > self._limits.max_frame:
            raise TransportError(f"frame of {len(frame)} bytes exceeds {self._limits.max_frame}")
        data = len(frame).to_bytes(4, "big") + frame
        out = bytearray()
        async with self._send_lock:
            for start in range(0, len(data), _CHUNK):
                message = self._send_cipher.encrypt(b"", data[start : start + _CHUNK])
                out += len(message).to_bytes(2, "big") + message
            await self._write(bytes(out))

    async def _write(self, data: bytes) -> None:
        try:
            await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            await self.aclose()
            raise LinkClosed(f"connection lost: {exc}") from exc
        self.bytes_sent += len(data)

    async def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            try:
                chunk = await self._stream.receive()
            except (
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                OSError,
            ) as exc:
                await self.aclose()
                raise LinkClosed("connection closed") from exc
            self.bytes_received += len(chunk)
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _read_message(self) -> bytes:
        size = int.from_bytes(await self._read_exact(2), "big")
        try:
            return self._recv_cipher.decrypt(b"", await self._read_exact(size))
        except DecryptError as exc:
            await self.aclose()
            raise LinkClosed(f"message failed authentication: {exc}") from exc

    async def recv(self) -> bytes:
        first = await self._read_message()
        if len(first) < 4:
            await self.aclose()
            raise LinkClosed("malformed frame header")
        size = int.from_bytes(first[:4], "big")
        if size > self._limits.max_frame:
            await self.aclose()
            raise LinkClosed(f"peer announced a frame of {size} bytes")
        frame = bytearray(first[4:])
        while len(frame) < size:
            frame += await self._read_message()
        if len(frame) != size:
            await self.aclose()
            raise LinkClosed("frame longer than announced")
        if not (self._frames.take(1) and self._bytes.take(size)):
            await self.aclose()
            raise RateLimitExceeded(f"{self._remote.short} exceeded the link's rate limits")
        return bytes(frame)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()


async def _read_handshake(stream: SocketStream, buffer: bytearray) -> bytes:
    async def exact(size: int) -> bytes:
        while len(buffer) < size:
            try:
                chunk = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
                raise HandshakeAbandoned("connection closed during the handshake") from exc
            buffer.extend(chunk)
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    size = int.from_bytes(await exact(2), "big")
    return await exact(size)


async def handshake(
    stream: SocketStream,
    identity: Identity,
    *,
    initiator: bool,
    expected: PeerId | None = None,
) -> tuple[PeerId, CipherState, CipherState, bytes]:
    """Run Noise XX over ``stream``; returns (peer, send, receive, leftover bytes).

    Raises:
        HandshakeError: the peer failed to complete it, or to prove its identity,
            or proved one other than ``expected``.
    """
    buffer = bytearray()

    async def read() -> bytes:
        return await _read_handshake(stream, buffer)

    async def write(message: bytes) -> None:
        await stream.send(len(message).to_bytes(2, "big") + message)

    peer, send, receive = await bound_handshake(
        read, write, identity, initiator=initiator, prologue=_PROLOGUE, expected=expected
    )
    return peer, send, receive, bytes(buffer)


def _keepalive(stream: SocketStream) -> None:
    try:
        raw = stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, anyio.TypedAttributeLookupError):
        pass


def _host(stream: SocketStream) -> tuple[str, str]:
    """(host, tcp:// address) of the other end of ``stream``."""
    try:
        remote = stream.extra(SocketAttribute.remote_address)
        host, port = str(remote[0]), int(remote[1])
    except (anyio.TypedAttributeLookupError, TypeError, IndexError, ValueError, OSError):
        return "?", "tcp://?:0"
    return host, str(TcpAddress(host, port))


class TcpListener:
    """Accepts TCP connections and completes the handshake before handing out a link.

    :meth:`serve` (what a :class:`~crdt_mesh.Mesh` uses) runs handshakes concurrently,
    within the limits of :class:`TcpLimits`; :meth:`accept` runs one at a time and
    suits tools and tests.
    """

    def __init__(
        self,
        listener: SocketListener,
        identity: Identity,
        limits: TcpLimits,
        penalties: Penalties,
    ) -> None:
        self._listener = listener
        self._identity = identity
        self._limits = limits
        self.penalties = penalties
        local: tuple[str, int] = listener.extra(SocketAttribute.local_address)  # type: ignore[assignment]
        self._address = str(TcpAddress(str(local[0]), int(local[1])))
        #: connections closed without a link: failed handshakes and refusals
        self.refused = 0
        self._in_flight = 0
        self._per_host: dict[str, int] = {}
        # the handshakes in flight of each host, oldest first (to cancel when full)
        self._scopes: dict[str, deque[anyio.CancelScope]] = {}
        self._rates: dict[str, TokenBucket] = {}
        self._begun: dict[anyio.CancelScope, float] = {}  # when each handshake began

    @property
    def address(self) -> str:
        return self._address

    async def _accept_stream(self) -> SocketStream:
        try:
            stream = await self._listener.accept()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            raise TransportError("listener closed") from exc
        _keepalive(stream)
        return stream

    async def accept(self) -> TcpLink:
        while True:
            stream = await self._accept_stream()
            host, address = _host(stream)
            if not self._admit(host):
                await _close(stream)
                continue
            link = await self._authenticate(stream, host, address)
            if link is not None:
                return link

    async def serve(self, handler: LinkHandler) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    stream = await self._accept_stream()
                except TransportError:
                    tg.cancel_scope.cancel()  # the listener closed: so do its links
                    break
                host, address = _host(stream)
                if not self._admit(host):
                    await _close(stream)
                    continue
                self._in_flight += 1
                self._per_host[host] = self._per_host.get(host, 0) + 1
                tg.start_soon(self._serve_one, stream, host, address, handler)
        raise TransportError("the listener is closed")

    async def _serve_one(
        self, stream: SocketStream, host: str, address: str, handler: LinkHandler
    ) -> None:
        link = None
        scope = anyio.CancelScope()
        scopes = self._scopes.setdefault(host, deque())
        scopes.append(scope)
        self._begun[scope] = anyio.current_time()
        try:
            with scope:  # cancelled when the listener is full and this host holds the most
                link = await self._authenticate(stream, host, address)
        finally:
            scopes.remove(scope)
            del self._begun[scope]
            if not scopes:
                del self._scopes[host]
            self._in_flight -= 1
            left = self._per_host[host] - 1
            if left:
                self._per_host[host] = left
            else:
                del self._per_host[host]
        if link is not None:
            await handler(link)

    def _make_room(self, host: str) -> bool:
        """The listener is full: cancel the oldest handshake of the host holding the most,
        if it holds more than ``host``. So hosts that open many slow handshakes cannot
        starve one that opens a few."""
        busiest = max(self._scopes, key=lambda h: len(self._scopes[h]), default=None)
        if busiest is None or len(self._scopes[busiest]) <= self._per_host.get(host, 0) + 1:
            return False
        for scope in self._scopes[busiest]:
            if not scope.cancel_called:
                scope.cancel()
                return True
        return False

    def _stalling(self, host: str, now: float) -> bool:
        """Whether one of ``host``'s handshakes in flight has run half its deadline."""
        patience = self._limits.handshake_timeout / 2
        return any(
            now - self._begun.get(scope, now) > patience for scope in self._scopes.get(host, ())
        )

    def _admit(self, host: str) -> bool:
        """Whether a connection from ``host`` may start a handshake now."""
        limits = self._limits
        now = anyio.current_time()
        bucket = self._rates.get(host)
        if bucket is None:
            if len(self._rates) > 10_000:  # forget hosts that have been quiet
                self._rates = {h: b for h, b in self._rates.items() if not b.full()}
            bucket = self._rates[host] = TokenBucket(limits.handshakes_per_second)
        reason = None
        if self.penalties.refused(_host_key(host), now):
            reason = "refused"
        elif self._per_host.get(host, 0) >= limits.max_handshakes_per_host:
            # turned away; charged only while the host's handshakes stall (an honest
            # burst, agents behind one address joining at once, completes in ms)
            reason = f"{limits.max_handshakes_per_host} handshakes in flight from {host}"
            if self._stalling(host, now):
                self._penalise(host, Offence.HANDSHAKE, reason)
        elif self._in_flight >= limits.max_handshakes and not self._make_room(host):
            reason = f"{limits.max_handshakes} handshakes in flight"
        elif not bucket.take(1):
            # turned away before any handshake work, not charged: agents behind one
            # address (a NAT, one machine) join at once, and speed proves nothing
            reason = f"{host} begins handshakes too fast"
        if reason is None:
            return True
        self.refused += 1
        log.debug("refused a connection from %s: %s", host, reason)
        return False

    async def _authenticate(self, stream: SocketStream, host: str, address: str) -> TcpLink | None:
        try:
            with anyio.fail_after(self._limits.handshake_timeout):
                peer, send, receive, rest = await handshake(stream, self._identity, initiator=False)
        except (HandshakeAbandoned, OSError, anyio.BrokenResourceError) as exc:
            # The dialler gave up (its deadline, a full peer, a shutdown): honest peers
            # do, under load. Not an offence: the work it cost is bounded by the
            # per-host rate of handshakes begun.
            self.refused += 1
            log.debug("connection from %s: %s", host, exc or "closed during the handshake")
            await _close(stream)
            return None
        except (
            HandshakeError,
            TimeoutError,
            MeshError,
        ) as exc:
            self.refused += 1
            self._penalise(host, Offence.HANDSHAKE, f"handshake failed: {exc or 'timed out'}")
            await _close(stream)
            return None
        except BaseException:  # cancelled mid-handshake: leave no socket behind
            await _close(stream)
            raise
        link = TcpLink(stream, peer, send, receive, self._limits, address)
        link._buffer += rest
        return link

    def _penalise(self, host: str, offence: Offence, reason: str) -> None:
        refusal = self.penalties.add(_host_key(host), offence, anyio.current_time())
        if refusal is not None:
            log.warning("refusing connections from %s for a while: %s", host, reason)
        else:
            log.debug("connection from %s: %s", host, reason)

    async def aclose(self) -> None:
        await self._listener.aclose()


def _host_key(host: str) -> Hashable:
    return ("tcp-host", host)


async def _close(stream: SocketStream) -> None:
    with anyio.CancelScope(shield=True):
        await stream.aclose()


class TcpTransport:
    """A :class:`~crdt_mesh.transport.Transport` over TCP with Noise XX.

    Args:
        limits: per-link and per-listener limits.
        penalties: where failed handshakes count, per host (default: a table of the
            transport's own, shared by its listeners).
        local_host: the local address dialled connections come from (default: the
            system's choice), for multi-homed hosts.
    """

    def __init__(
        self,
        limits: TcpLimits = TcpLimits(),
        penalties: Penalties | None = None,
        *,
        local_host: str | None = None,
    ) -> None:
        self.limits = limits
        self.penalties = penalties if penalties is not None else Penalties()
        self.local_host = local_host

    async def listen(self, address: str, identity: Identity) -> TcpListener:
        parsed = TcpAddress.parse(address)
        try:
            listener = await anyio.create_tcp_listener(
                local_host=parsed.host, local_port=parsed.port
            )
        except OSError as exc:
            raise TransportError(f"cannot listen on {address}: {exc}") from exc
        first = listener.listeners[0]
        assert isinstance(first, SocketListener)
        return TcpListener(first, identity, self.limits, self.penalties)

    async def dial(self, address: str, identity: Identity) -> TcpLink:
        parsed = TcpAddress.parse(address)
        try:
            with anyio.fail_after(self.limits.connect_timeout):
                stream = await anyio.connect_tcp(
                    parsed.host, parsed.port, local_host=self.local_host
                )
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"cannot reach {address}: {exc}") from exc
        _keepalive(stream)
        try:
            with anyio.fail_after(self.limits.handshake_timeout):
                peer, send, receive, rest = await handshake(
                    stream, identity, initiator=True, expected=parsed.peer
                )
        except HandshakeError as exc:
            await stream.aclose()
            raise AuthenticationError(f"{address}: {exc}") from exc
        except (TimeoutError, OSError, anyio.BrokenResourceError) as exc:
            await stream.aclose()
            raise TransportError(f"handshake with {address} failed: {exc}") from exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise
        link = TcpLink(stream, peer, send, receive, self.limits, address)
        link._buffer += rest
        return link


__all__ = [
    "TcpAddress",
    "TcpLimits",
    "TcpLink",
    "TcpListener",
    "TcpTransport",
    "handshake",
    "static_key",
]
