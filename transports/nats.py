"""Links through a NATS server: many agents reach each other without a full mesh of TCP
links, each holding one connection to the broker.

Addresses are ``nats://[peer@]host:port[/name]``. A listener answers on the subject
``crdt-mesh.listen.<name>``, its name being its peer id unless one is given;
:attr:`NatsListener.address` is ``nats://<peer id>@host:port`` (``/name`` added when
named), which is what a peer dials. A dialler that names a peer is refused by any
other, as over TCP.

The broker is an untrusted relay. Each link is a Noise XX session between the two
peers, identities bound exactly as over TCP (:mod:`transports.secure`), with its own
prologue; the broker and other clients see only ciphertext and subjects.

On the wire (NATS messages):

* handshake: the first Noise message is a request to the listen subject (so a dial
  that nobody answers fails at once: "no responders"); the listener answers the
  second with the reply subject set to its end's inbox,
  ``crdt-mesh.link.<connection>.<link>``; the dialler sends the third there, with its
  own end's inbox as the reply subject. Each end's inbox is random.
* transport: each NATS message is one Noise transport message whose plaintext
  starts with a kind: DATA (the bytes of the frame stream: each frame's 4-byte
  length, then the frame, cut across messages as needed), PING, CLOSE.
* a message that fails authentication (forged, replayed, or out of order) is
  dropped and counted (:attr:`NatsLink.forged`): whoever can publish to an inbox
  cannot end a link that way. A link hears from its peer at least every
  ``keepalive`` seconds (a PING when it has sent nothing); silence for
  ``dead_after`` ends it, which is also how a lost message ends it (what follows
  fails authentication). Losing the connection to the server ends every link on it.

Limits per link, as over TCP: frame size, frames and bytes per second (token
buckets), and the bytes received and not yet read (a peer cannot make a node hold
more: the link closes). Per listener: handshakes in flight and begun per second;
past either an opening is dropped (the dialler's request times out).

What the broker (or a client it lets subscribe to ``crdt-mesh.>``) can do: drop or
delay messages, so end links; learn who talks to whom. Give agents NATS permissions
that let them subscribe only to their own subjects. nats-py is an asyncio client:
this transport runs on asyncio, not trio.

Why one module (~650 lines): the shared connection routes every message to its link,
and the link's codec, the listener's admission and the dialler's handshake all
turn on that routing; the Noise state machine and identity binding are elsewhere
(:mod:`.noise`, :mod:`.secure`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from crdt_mesh.errors import (
    AuthenticationError,
    LinkClosed,
    MeshError,
    RateLimitExceeded,
    TransportError,
)
from crdt_mesh.identity import Identity, PeerId
from crdt_mesh.runtime.penalty import Penalties
from crdt_mesh.runtime.transport import FramesUntilClosed, LinkHandler
from crdt_mesh.sync import MAX_FRAME
from transports.addresses import format_address, split_address
from transports.noise import MAX_MESSAGE, TAGLEN, CipherState, DecryptError, HandshakeError
from transports.secure import TokenBucket, bound_handshake

log = logging.getLogger(__name__)

_PROLOGUE = b"crdt_mesh/nats/v1"
PREFIX = "crdt-mesh"
_DATA, _PING, _CLOSE = 0, 1, 2
_CHUNK = MAX_MESSAGE - TAGLEN - 1  # frame-stream bytes per Noise message (after the kind)
#: messages, and bytes, a link holds before its handshake completes (the dialler may
#: send at once; its first frames are small: the sync hello)
_EARLY = 256
_EARLY_BYTES = 1 << 20
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@dataclass(frozen=True, slots=True)
class NatsLimits:
    """Per-link and per-listener limits, and the link's liveness timers."""

    max_frame: int = MAX_FRAME
    frames_per_second: float = 2_000.0
    bytes_per_second: float = 64 * 1024 * 1024
    #: received frames not yet read, in bytes; past it the link closes
    max_unread: int = 4 * MAX_FRAME
    connect_timeout: float = 5.0
    handshake_timeout: float = 5.0
    #: handshakes in flight (and waiting) at once on one listener
    max_handshakes: int = 64
    #: handshakes a listener begins per second (a burst of twice as many)
    handshakes_per_second: float = 100.0
    #: a link sends a PING after this long without sending anything
    keepalive: float = 10.0
    #: a link that hears nothing authentic for this long ends
    dead_after: float = 30.0

    def __post_init__(self) -> None:
        if self.max_frame < 1 or self.max_handshakes < 1 or self.max_unread < self.max_frame:
            raise ValueError("max_frame and max_handshakes are >= 1; max_unread >= max_frame")
        if min(self.frames_per_second, self.bytes_per_second, self.handshakes_per_second) <= 0:
            raise ValueError("rates are positive")
        if not 0 < self.keepalive < self.dead_after:
            raise ValueError("0 < keepalive < dead_after")


@dataclass(frozen=True, slots=True)
class NatsAddress:
    host: str
    port: int
    peer: PeerId | None = None
    name: str | None = None

    @classmethod
    def parse(cls, address: str) -> NatsAddress:
        """Parse ``nats://[peer@]host:port[/name]``.

        Raises:
            TransportError: not such an address.
        """
        peer, host, port, name = split_address(address, "nats", port_zero=False)
        if name and not (len(name) <= 64 and set(name) <= _NAME_CHARS):
            raise TransportError(f"a listener's name is 1-64 of [A-Za-z0-9_-]: {address!r}")
        return cls(host, port, peer, name or None)

    @property
    def server(self) -> str:
        return format_address("nats", None, self.host, self.port)

    @property
    def subject(self) -> str:
        """The listen subject this address reaches."""
        name = self.name or (str(self.peer) if self.peer is not None else None)
        if name is None:
            raise TransportError(f"{self} names neither a peer nor a listener")
        return f"{PREFIX}.listen.{name}"

    def __str__(self) -> str:
        return format_address("nats", self.peer, self.host, self.port, self.name or "")


def _is_link_inbox(subject: str | None) -> bool:
    return (
        bool(subject)
        and subject.startswith(f"{PREFIX}.link.")  # type: ignore[union-attr]
        and not set(subject) & {"*", ">", " "}  # type: ignore[arg-type]
    )


class _Connection:
    """One client connection to a server, shared by a transport's links and listeners;
    one subscription delivers every link's messages."""

    def __init__(self, server: str, options: Mapping[str, Any], limits: NatsLimits) -> None:
        self.server = server
        self._options = options
        self._limits = limits
        self.client = Client()
        self.token = secrets.token_hex(8)
        self.links: dict[str, NatsLink] = {}
        self.users = 0
        self._last_error: Exception | None = None  # what nats-py last reported

    async def open(self) -> None:
        """Connect, within ``connect_timeout`` in all: nats-py retries a first connection
        forever when reconnecting is allowed (it is, for a connection that was up), so
        a wrong address or a TLS set-up the server refuses would otherwise never end.

        Raises:
            TransportError: not connected in time; says the last error nats-py saw.
        """
        try:
            with anyio.fail_after(self._limits.connect_timeout):
                await self.client.connect(
                    servers=[self.server],
                    name="crdt_mesh",
                    connect_timeout=math.ceil(self._limits.connect_timeout),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    error_cb=self._error,
                    disconnected_cb=self._lost,
                    closed_cb=self._lost,
                    **self._options,
                )
            await self.client.subscribe(f"{PREFIX}.link.{self.token}.*", cb=self._dispatch)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            await self.close()
            # a timeout says nothing itself: what nats-py last saw does
            reason = (self._last_error or "timed out") if isinstance(exc, TimeoutError) else exc
            raise TransportError(f"cannot reach the NATS server {self.server}: {reason}") from exc

    def inbox(self, link: str) -> str:
        return f"{PREFIX}.link.{self.token}.{link}"

    async def _dispatch(self, msg: Msg) -> None:
        link = self.links.get(msg.subject.rpartition(".")[2])
        if link is not None:
            link._deliver(msg.data, msg.reply)

    async def _lost(self) -> None:
        for link in list(self.links.values()):
            link._end(f"the connection to {self.server} was lost")

    async def _error(self, exc: Exception) -> None:
        self._last_error = exc
        log.debug("NATS %s: %r", self.server, exc)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.client.close()
            except Exception as exc:  # closing what failed to open: nothing to keep
                log.debug("closing the NATS connection: %r", exc)


class NatsLink(FramesUntilClosed):
    """An authenticated, encrypted link through a NATS server."""

    def __init__(self, transport: NatsTransport, connection: _Connection) -> None:
        self._transport = transport
        self._connection = connection
        self._limits = transport.limits
        self._token = secrets.token_hex(12)
        self.inbox = connection.inbox(self._token)
        self.remote_address = ""
        self._peer_inbox = ""
        self._remote: PeerId | None = None
        self._send_cipher: CipherState | None = None
        self._recv_cipher: CipherState | None = None
        self._handshake: deque[tuple[bytes, str | None]] = deque()
        self._early_bytes = 0
        self._stream = bytearray()  # frame-stream bytes not yet a whole frame
        self._frames: deque[bytes] = deque()
        self._unread = 0
        self._wake = anyio.Event()
        self._send_lock = anyio.Lock()
        self._closed = False
        self._ended: LinkClosed | None = None
        self._frame_rate = TokenBucket(self._limits.frames_per_second)
        self._byte_rate = TokenBucket(self._limits.bytes_per_second)
        self._heard = self._sent = time.monotonic()
        #: messages dropped because they failed authentication
        self.forged = 0
        connection.links[self._token] = self

    @property
    def remote(self) -> PeerId:
        if self._remote is None:
            raise LinkClosed("the handshake has not completed")
        return self._remote

    # -- receiving (called by the connection, in order) -----------------------------------

    def _deliver(self, data: bytes, reply: str | None) -> None:
        if self._ended is not None:
            return
        if self._recv_cipher is None:
            self._early_bytes += len(data)
            if len(self._handshake) >= _EARLY or self._early_bytes > _EARLY_BYTES:
                self._end("too much sent before the handshake completed")
                return
            self._handshake.append((data, reply))
            self._notify()
            return
        try:
            plain = self._recv_cipher.decrypt(b"", data)
        except DecryptError:
            self.forged += 1
            return
        self._heard = time.monotonic()
        if not plain or plain[0] == _PING:
            return
        if plain[0] == _CLOSE:
            self._end("the peer closed the link")
            return
        self._stream += plain[1:]
        while len(self._stream) >= 4:
            size = int.from_bytes(self._stream[:4], "big")
            if size > self._limits.max_frame:
                self._end(f"peer announced a frame of {size} bytes")
                return
            if len(self._stream) < 4 + size:
                break
            frame = bytes(self._stream[4 : 4 + size])
            del self._stream[: 4 + size]
            if not (self._frame_rate.take(1) and self._byte_rate.take(size)):
                self._end(f"{self.remote.short} exceeded the link's rate limits", rate=True)
                return
            self._unread += size
            if self._unread > self._limits.max_unread:
                self._end(f"{self.remote.short} sent {self._unread} bytes not yet read", rate=True)
                return
            self._frames.append(frame)
        self._notify()

    def _notify(self) -> None:
        self._wake.set()

    def _end(self, reason: str, *, rate: bool = False) -> None:
        """The link is over (from the peer, the connection, or a limit): wake readers."""
        if self._ended is None:
            self._ended = RateLimitExceeded(reason) if rate else LinkClosed(reason)
            self._connection.links.pop(self._token, None)
            self._notify()

    async def _wait(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await self._wake.wait()
        if self._wake.is_set():
            self._wake = anyio.Event()

    # -- the handshake ----------------------------------------------------------------------

    async def _next_handshake_message(self) -> tuple[bytes, str | None]:
        while not self._handshake:
            if self._ended is not None:
                raise HandshakeError(str(self._ended))
            await self._wait(self._limits.handshake_timeout)
        return self._handshake.popleft()

    def _established(
        self, peer: PeerId, send: CipherState, receive: CipherState, address: str
    ) -> None:
        self._remote, self._send_cipher, self._recv_cipher = peer, send, receive
        self.remote_address = address
        self._heard = time.monotonic()
        early = list(self._handshake)  # transport messages that came before we were ready
        self._handshake.clear()
        for data, reply in early:
            self._deliver(data, reply)

    # -- the Link interface -----------------------------------------------------------------

    async def send(self, frame: bytes) -> None:
        if self._closed or self._ended is not None:
            raise LinkClosed("link is closed")
        if len(frame) > self._limits.max_frame:
            raise TransportError(f"frame of {len(frame)} bytes exceeds {self._limits.max_frame}")
        data = len(frame).to_bytes(4, "big") + frame
        async with self._send_lock:
            for start in range(0, len(data), _CHUNK):
                await self._publish(_DATA, data[start : start + _CHUNK])

    async def _publish(self, kind: int, payload: bytes = b"") -> None:
        assert self._send_cipher is not None
        message = self._send_cipher.encrypt(b"", bytes([kind]) + payload)
        try:
            await self._connection.client.publish(self._peer_inbox, message)
        except (nats.errors.Error, OSError) as exc:
            self._end(f"publishing failed: {exc!r}")
            await self.aclose()
            raise LinkClosed(f"publishing failed: {exc!r}") from exc
        self._sent = time.monotonic()

    async def recv(self) -> bytes:
        keepalive = self._limits.keepalive
        while True:
            if self._frames:
                frame = self._frames.popleft()
                self._unread -= len(frame)
                return frame
            if self._ended is not None or self._closed:
                await self.aclose()
                raise self._ended or LinkClosed("link is closed")
            await self._wait(keepalive)
            now = time.monotonic()
            if self._frames or self._ended is not None:
                continue
            if now - self._heard > self._limits.dead_after:
                self._end(f"nothing heard from the peer for {self._limits.dead_after:.0f} s")
            elif now - self._sent >= keepalive and not self._closed:
                async with self._send_lock:
                    await self._publish(_PING)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._ended is None and self._send_cipher is not None:
                try:
                    async with self._send_lock:
                        await self._publish(_CLOSE)
                except LinkClosed:
                    pass
            self._end("link is closed")
            await self._transport._release(self._connection)


class NatsListener:
    """Answers handshakes on a listen subject; each completes in a task of its own."""

    def __init__(
        self,
        transport: NatsTransport,
        connection: _Connection,
        identity: Identity,
        address: NatsAddress,
    ) -> None:
        self._transport = transport
        self._connection = connection
        self._identity = identity
        self._limits = transport.limits
        self._address = str(address)
        self._server = address
        self._subject = address.subject
        self._openings: deque[tuple[bytes, str]] = deque()
        self._rate = TokenBucket(self._limits.handshakes_per_second)
        self._in_flight = 0
        self._wake = anyio.Event()
        self._closed = False
        self._subscription: Any = None
        #: openings dropped or handshakes failed
        self.refused = 0

    @property
    def address(self) -> str:
        return self._address

    async def _start(self) -> None:
        self._subscription = await self._connection.client.subscribe(
            self._subject, cb=self._opening, pending_msgs_limit=4 * self._limits.max_handshakes
        )

    async def _opening(self, msg: Msg) -> None:
        busy = len(self._openings) + self._in_flight >= self._limits.max_handshakes
        if self._closed or not msg.reply or busy or not self._rate.take(1):
            self.refused += 1
            return
        self._openings.append((msg.data, msg.reply))
        self._wake.set()

    async def _next_opening(self) -> tuple[bytes, str]:
        while not self._openings:
            if self._closed:
                raise TransportError("the listener is closed")
            await self._wake.wait()
            self._wake = anyio.Event()
        return self._openings.popleft()

    async def accept(self) -> NatsLink:
        while True:
            first, reply = await self._next_opening()
            self._in_flight += 1
            try:
                link = await self._answer(first, reply)
            finally:
                self._in_flight -= 1
            if link is not None:
                return link

    async def serve(self, handler: LinkHandler) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                try:
                    first, reply = await self._next_opening()
                except TransportError:
                    tg.cancel_scope.cancel()  # the listener closed: so do its links
                    break
                self._in_flight += 1
                tg.start_soon(self._serve_one, first, reply, handler)
        raise TransportError("the listener is closed")

    async def _serve_one(self, first: bytes, reply: str, handler: LinkHandler) -> None:
        try:
            link = await self._answer(first, reply)
        finally:
            self._in_flight -= 1
        if link is not None:
            await handler(link)

    async def _answer(self, first: bytes, reply: str) -> NatsLink | None:
        link = NatsLink(self._transport, self._connection)
        self._connection.users += 1
        given = [first]

        async def read() -> bytes:
            if given:
                return given.pop()
            data, peer_inbox = await link._next_handshake_message()
            if not _is_link_inbox(peer_inbox):
                raise HandshakeError("the closing handshake message names no link inbox")
            link._peer_inbox = peer_inbox  # type: ignore[assignment]
            return data

        async def write(message: bytes) -> None:
            await self._connection.client.publish(reply, message, reply=link.inbox)

        try:
            with anyio.fail_after(self._limits.handshake_timeout):
                peer, send, receive = await bound_handshake(
                    read, write, self._identity, initiator=False, prologue=_PROLOGUE
                )
        except (HandshakeError, TimeoutError, MeshError, nats.errors.Error) as exc:
            self.refused += 1
            log.debug("a handshake on %s failed: %s", self._subject, exc or "timed out")
            await link.aclose()
            return None
        except BaseException:
            await link.aclose()
            raise
        server = self._server
        link._established(peer, send, receive, str(NatsAddress(server.host, server.port, peer)))
        return link

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        with anyio.CancelScope(shield=True):
            try:
                await self._subscription.unsubscribe()
            except (nats.errors.Error, AttributeError) as exc:
                log.debug("unsubscribing %s: %r", self._subject, exc)
            await self._transport._release(self._connection)


def _on_asyncio() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise TransportError(
            "the nats:// transport runs on asyncio (nats-py is asyncio's)"
        ) from None


def options_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """nats-py ``connect`` options from the variables the ``nats`` command reads:
    ``NATS_CA`` (TLS, trusting that CA file beside the system's), ``NATS_CERT`` and
    ``NATS_KEY`` (TLS with this client certificate; the key may be in the certificate's
    file instead), ``NATS_CREDS`` (a credentials file: a user JWT and its key). None
    set: no options (plain TCP).

    Raises:
        TransportError: a file cannot be read, or NATS_KEY comes without NATS_CERT.
    """
    env = os.environ if environ is None else environ
    ca, cert, key = (env.get(name) or None for name in ("NATS_CA", "NATS_CERT", "NATS_KEY"))
    options: dict[str, Any] = {}
    if key is not None and cert is None:
        raise TransportError("NATS_KEY is the key of a client certificate: NATS_CERT names it")
    if ca or cert:
        try:
            context = ssl.create_default_context()
            if ca:
                context.load_verify_locations(cafile=ca)
            if cert:
                context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:  # a missing file, or not PEM
            raise TransportError(f"cannot set up TLS for NATS: {exc}") from exc
        options["tls"] = context
    creds = env.get("NATS_CREDS")
    if creds:
        if not os.path.isfile(creds):
            raise TransportError(f"NATS_CREDS names no file: {creds}")
        options["user_credentials"] = creds
    return options


class NatsTransport:
    """A :class:`~crdt_mesh.transport.Transport` through NATS servers, Noise end to end.

    Args:
        limits: per-link and per-listener limits.
        penalties: accepted for the registry's sake; a bus shows no host to blame
            before a peer proves itself, so none is counted here.
        connect_options: passed to nats-py's ``connect`` (credentials, TLS, ...);
            if not given, read from the environment as the ``nats`` command reads it
            (:func:`options_from_environment`): how ``crdt-mesh node`` gets them.
    """

    def __init__(
        self,
        limits: NatsLimits = NatsLimits(),
        penalties: Penalties | None = None,
        *,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.limits = limits
        self.penalties = penalties if penalties is not None else Penalties()
        self._options = (
            dict(connect_options) if connect_options is not None else options_from_environment()
        )
        self._connections: dict[str, _Connection] = {}
        self._opening: dict[str, anyio.Lock] = {}

    async def _acquire(self, server: str) -> _Connection:
        lock = self._opening.setdefault(server, anyio.Lock())
        async with lock:
            connection = self._connections.get(server)
            if connection is None or connection.client.is_closed:
                connection = _Connection(server, self._options, self.limits)
                await connection.open()
                self._connections[server] = connection
            connection.users += 1
            return connection

    async def _release(self, connection: _Connection) -> None:
        connection.users -= 1
        if connection.users <= 0 and self._connections.get(connection.server) is connection:
            del self._connections[connection.server]
            await connection.close()

    async def listen(self, address: str, identity: Identity) -> NatsListener:
        _on_asyncio()
        parsed = NatsAddress.parse(address)
        if parsed.peer is not None and parsed.peer != identity.peer_id:
            raise TransportError(f"{address} names another peer than this one")
        parsed = NatsAddress(parsed.host, parsed.port, identity.peer_id, parsed.name)
        connection = await self._acquire(parsed.server)
        listener = NatsListener(self, connection, identity, parsed)
        try:
            await listener._start()
        except BaseException:
            await listener.aclose()
            raise
        return listener

    async def dial(self, address: str, identity: Identity) -> NatsLink:
        _on_asyncio()
        parsed = NatsAddress.parse(address)
        subject = parsed.subject
        connection = await self._acquire(parsed.server)
        link = NatsLink(self, connection)
        answers: deque[bytes] = deque()

        async def write(message: bytes) -> None:
            if not link._peer_inbox:
                try:
                    answer = await connection.client.request(
                        subject, message, timeout=self.limits.handshake_timeout
                    )
                except nats.errors.NoRespondersError:
                    raise TransportError(f"nobody listens at {address}") from None
                if not _is_link_inbox(answer.reply):
                    raise HandshakeError("the answer names no link inbox")
                link._peer_inbox = answer.reply
                answers.append(answer.data)
            else:
                await connection.client.publish(link._peer_inbox, message, reply=link.inbox)

        async def read() -> bytes:
            return answers.popleft()

        try:
            with anyio.fail_after(self.limits.handshake_timeout):
                peer, send, receive = await bound_handshake(
                    read,
                    write,
                    identity,
                    initiator=True,
                    prologue=_PROLOGUE,
                    expected=parsed.peer,
                )
        except HandshakeError as exc:
            await link.aclose()
            raise AuthenticationError(f"{address}: {exc}") from exc
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            await link.aclose()
            raise TransportError(f"handshake with {address} failed: {exc!r}") from exc
        except BaseException:
            await link.aclose()
            raise
        link._established(peer, send, receive, address)
        return link


__all__ = [
    "NatsAddress",
    "NatsLimits",
    "NatsLink",
    "NatsListener",
    "NatsTransport",
    "options_from_environment",
]
