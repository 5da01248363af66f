"""Noise_XX_25519_ChaChaPoly_BLAKE2b, on PyNaCl's primitives. Sans-IO.

Implements the Noise Protocol Framework (revision 34, https://noiseprotocol.org/noise.html)
for the one pattern crdt_mesh needs:

    XX:
      -> e
      <- e, ee, s, es
      -> s, se

X25519 (``crypto_scalarmult``), ChaCha20-Poly1305 IETF (96-bit nonce: four zero
bytes and the 64-bit little-endian counter), BLAKE2b (HASHLEN 64) with
HMAC-BLAKE2b for HKDF. Checked byte for byte against the cacophony test
vectors. The transport (``transports.tcp``) moves the bytes; this module only
computes them.
"""

from __future__ import annotations

import hashlib
import hmac

import nacl.bindings
import nacl.exceptions
import nacl.utils

from crdt_mesh.errors import RemoteError

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2b"
HASHLEN = 64
DHLEN = 32
TAGLEN = 16
#: Largest Noise message (the spec's limit).
MAX_MESSAGE = 65535
_MAX_NONCE = 2**64 - 1


class HandshakeError(RemoteError):
    """The Noise handshake failed: bad message, bad key, or failed authentication."""


class DecryptError(RemoteError):
    """A transport message failed authentication (altered, replayed or reordered)."""


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASHLEN).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2b).digest()


def _hkdf(chaining_key: bytes, material: bytes) -> tuple[bytes, bytes]:
    temp = _hmac(chaining_key, material)
    first = _hmac(temp, b"\x01")
    return first, _hmac(temp, first + b"\x02")


def _dh(private: bytes, public: bytes) -> bytes:
    try:
        return bytes(nacl.bindings.crypto_scalarmult(private, public))
    except (nacl.exceptions.RuntimeError, nacl.exceptions.CryptoError, ValueError) as exc:
        raise HandshakeError(f"X25519 failed (a low-order key?): {exc}") from None


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    return bytes(nacl.bindings.crypto_scalarmult_base(private))


def generate_private() -> bytes:
    return nacl.utils.random(DHLEN)


class CipherState:
    """A key and a nonce counter: encrypts one direction of a session."""

    __slots__ = ("key", "nonce")

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.nonce = 0

    def _nonce_bytes(self) -> bytes:
        if self.nonce >= _MAX_NONCE:
            raise DecryptError("nonce space exhausted: the session must end")
        return b"\x00\x00\x00\x00" + self.nonce.to_bytes(8, "little")

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.key is None:
            return plaintext
        out = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, ad, self._nonce_bytes(), self.key
        )
        self.nonce += 1
        return bytes(out)

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.key is None:
            return ciphertext
        try:
            out = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                ciphertext, ad, self._nonce_bytes(), self.key
            )
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise DecryptError("message failed authentication") from None
        self.nonce += 1  # only after success: a bad message changes nothing
        return bytes(out)


class _SymmetricState:
    def __init__(self) -> None:
        name = PROTOCOL_NAME
        self.h = name.ljust(HASHLEN, b"\x00") if len(name) <= HASHLEN else _hash(name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, material: bytes) -> None:
        self.ck, key = _hkdf(self.ck, material)
        self.cipher = CipherState(key[:32])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        try:
            plaintext = self.cipher.decrypt(self.h, ciphertext)
        except DecryptError:
            raise HandshakeError("handshake message failed authentication") from None
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        first, second = _hkdf(self.ck, b"")
        return CipherState(first[:32]), CipherState(second[:32])


class XXHandshake:
    """One side of a Noise XX handshake, as a state machine over messages.

    The initiator calls ``write_message``, ``read_message``, ``write_message``;
    the responder ``read_message``, ``write_message``, ``read_message``. Then
    :attr:`complete` is true, :attr:`remote_static` is the peer's static key, and
    :meth:`split` gives the (send, receive) cipher states.

    Args:
        initiator: which side this is.
        static: this side's X25519 private key.
        prologue: bytes both sides must agree on (mixed into the hash).
        ephemeral: a fixed ephemeral private key (for test vectors only).
    """

    def __init__(
        self,
        *,
        initiator: bool,
        static: bytes,
        prologue: bytes = b"",
        ephemeral: bytes | None = None,
    ) -> None:
        self.initiator = initiator
        self._s = static
        self._s_pub = public_key(static)
        self._e = ephemeral
        self._e_pub: bytes | None = None
        self._re: bytes | None = None
        self.remote_static: bytes | None = None
        self._state = _SymmetricState()
        self._state.mix_hash(prologue)
        self._step = 0
        self.failed = False

    @property
    def static_public(self) -> bytes:
        """This side's static public key."""
        return self._s_pub

    @property
    def complete(self) -> bool:
        return self._step == 3

    @property
    def handshake_hash(self) -> bytes:
        """Channel binding: equal on both sides once complete."""
        return self._state.h

    def _expect(self, writing: bool) -> None:
        if self.failed:
            raise HandshakeError("the handshake already failed")
        if self.complete:
            raise HandshakeError("the handshake is complete")
        my_turn = (self._step % 2 == 0) == self.initiator
        if my_turn != writing:
            raise HandshakeError("message out of turn")

    def write_message(self, payload: bytes = b"") -> bytes:
        """The next handshake message of this side, carrying ``payload``."""
        self._expect(writing=True)
        st = self._state
        out = b""
        if self._step in (0, 1):  # "e"
            if self._e is None:
                self._e = generate_private()
            self._e_pub = public_key(self._e)
            out += self._e_pub
            st.mix_hash(self._e_pub)
        if self._step == 1:  # responder: e, ee, s, es
            assert self._re is not None and self._e is not None
            st.mix_key(_dh(self._e, self._re))
            out += st.encrypt_and_hash(self._s_pub)
            st.mix_key(_dh(self._s, self._re))
        elif self._step == 2:  # initiator: s, se
            assert self._re is not None
            out += st.encrypt_and_hash(self._s_pub)
            st.mix_key(_dh(self._s, self._re))
        out += st.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE:
            raise ValueError("handshake payload too large")
        self._step += 1
        return out

    def read_message(self, message: bytes) -> bytes:
        """Take the peer's next handshake message; return its payload.

        Raises:
            HandshakeError: the message is malformed or fails authentication; the
                handshake is then dead.
        """
        self._expect(writing=False)
        try:
            return self._read(message)
        except HandshakeError:
            self.failed = True
            raise

    def _read(self, message: bytes) -> bytes:
        st = self._state
        if not isinstance(message, bytes) or len(message) > MAX_MESSAGE:
            raise HandshakeError("handshake message of a wrong size")
        rest = message
        if self._step in (0, 1):  # "e"
            if len(rest) < DHLEN:
                raise HandshakeError("truncated handshake message")
            self._re, rest = rest[:DHLEN], rest[DHLEN:]
            st.mix_hash(self._re)
        if self._step == 1:  # initiator reads: e, ee, s, es
            assert self._e is not None
            st.mix_key(_dh(self._e, self._re))  # type: ignore[arg-type]
            rest = self._read_static(rest)
            st.mix_key(_dh(self._e, self.remote_static))  # type: ignore[arg-type]
        elif self._step == 2:  # responder reads: s, se
            rest = self._read_static(rest)
            assert self._e is not None
            st.mix_key(_dh(self._e, self.remote_static))  # type: ignore[arg-type]
        payload = st.decrypt_and_hash(rest)  # with a key, even an empty payload has a tag
        self._step += 1
        return payload

    def _read_static(self, rest: bytes) -> bytes:
        size = DHLEN + TAGLEN
        if len(rest) < size:
            raise HandshakeError("truncated handshake message")
        self.remote_static = self._state.decrypt_and_hash(rest[:size])
        return rest[size:]

    def split(self) -> tuple[CipherState, CipherState]:
        """(sending, receiving) cipher states for the transport phase."""
        if not self.complete:
            raise HandshakeError("the handshake is not complete")
        first, second = self._state.split()
        return (first, second) if self.initiator else (second, first)
