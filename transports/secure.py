"""What our network transports share: identities bound to a Noise XX handshake, and
the token buckets that bound a link's rate.

The handshake runs over any pair of "read one handshake message" / "write one"
coroutines, so a byte stream (TCP, a socket file) and a message bus (NATS) prove
identities the same way: the responder's second message and the initiator's third
carry ``CBOR [1, ed25519 key, signature]``, the identity key's signature over
``"crdt_mesh/noise-static/v1\\0" + Noise static key``. Each side checks it against
the static key the handshake proved, so after the handshake each side knows the
other's PeerId for certain. The prologue names the transport: a handshake begun
over one cannot be completed over another.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import cbor2
import nacl.bindings

from crdt_mesh.identity import Domain, Identity, PeerId
from transports.noise import CipherState, HandshakeError, XXHandshake

#: Reads the next handshake message (raises HandshakeError if the peer went away).
ReadMessage = Callable[[], Awaitable[bytes]]
#: Sends one handshake message.
WriteMessage = Callable[[bytes], Awaitable[None]]


def static_key(identity: Identity) -> bytes:
    """The node's X25519 static key, derived from its Ed25519 key (stable across runs)."""
    secret = identity.seed + identity.peer_id.key
    return bytes(nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret))


def _binding(identity: Identity, static_public: bytes) -> bytes:
    signature = identity.sign(Domain.NOISE_STATIC, static_public)
    return cbor2.dumps([1, identity.peer_id.key, signature])


def _check_binding(payload: bytes, remote_static: bytes | None) -> PeerId:
    try:
        version, key, signature = cbor2.loads(payload)
        if version != 1 or not isinstance(signature, bytes) or remote_static is None:
            raise ValueError("bad binding")
        peer = PeerId(key)
        if not peer.verify(Domain.NOISE_STATIC, remote_static, signature):
            raise ValueError("the binding's signature does not verify")
    except Exception as exc:  # any failure: the peer did not prove an identity
        raise HandshakeError(f"peer did not prove its identity: {exc}") from None
    return peer


async def bound_handshake(
    read: ReadMessage,
    write: WriteMessage,
    identity: Identity,
    *,
    initiator: bool,
    prologue: bytes,
    expected: PeerId | None = None,
) -> tuple[PeerId, CipherState, CipherState]:
    """Run Noise XX with identities bound; returns (peer, send cipher, receive cipher).

    Raises:
        HandshakeError: the peer failed to complete it, or to prove its identity,
            or proved one other than ``expected``.
    """
    noise = XXHandshake(initiator=initiator, static=static_key(identity), prologue=prologue)
    binding = _binding(identity, noise.static_public)
    if initiator:
        await write(noise.write_message())
        peer = _check_binding(noise.read_message(await read()), noise.remote_static)
        if expected is not None and peer != expected:
            raise HandshakeError(f"dialled {expected.short} but reached {peer.short}")
        await write(noise.write_message(binding))
    else:
        noise.read_message(await read())
        await write(noise.write_message(binding))
        peer = _check_binding(noise.read_message(await read()), noise.remote_static)
    send, receive = noise.split()
    return peer, send, receive


class TokenBucket:
    """A rate with a burst of one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def take(self, amount: float) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= amount
        return self.tokens >= -self.rate  # allow a burst of one second's worth

    def full(self) -> bool:
        """Whether the bucket refilled completely (nothing to remember)."""
        return self.tokens + (time.monotonic() - self.stamp) * self.rate >= self.rate


__all__ = ["ReadMessage", "TokenBucket", "WriteMessage", "bound_handshake", "static_key"]
