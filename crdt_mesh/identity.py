"""Peer identities: Ed25519 keys (PyNaCl) and their printable ids."""

from __future__ import annotations

import base64
import enum
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils

from .errors import ArgumentTypeError, ArgumentValueError, InvalidKeyFile
from .signatures import open_signed as open_signed

_KEY_FILE_MAGIC = "crdt_mesh/key/v1"
_SHORT_LEN = 12
# A key file may not make us burn more than libsodium's "sensitive" limits.
_MAX_OPS = nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE
_MAX_MEM = nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE


class Domain(enum.Enum):
    """What a signature is for. The tag is signed in front of the message, so that a
    signature made for one purpose never verifies for another; every signature of
    crdt_mesh is made by :meth:`Identity.sign` and checked by :meth:`PeerId.verify`
    (or, for batches in helper processes, :func:`open_signed`) with one of these."""

    ENTRY = b"crdt_mesh/entry/v1\x00"
    ENTRY_GROUP = b"crdt_mesh/entry-batch/v1\x00"
    BROADCAST = b"crdt_mesh/broadcast/v2\x00"
    SWIM_FRAME = b"crdt_mesh/swim/v1\x00"
    SWIM_ALIVE = b"crdt_mesh/swim-alive/v1\x00"
    NOISE_STATIC = b"crdt_mesh/noise-static/v1\x00"


@dataclass(frozen=True, slots=True, order=True)
class PeerId:
    """A peer's identity: its 32-byte Ed25519 public key.

    The printable form (``str(peer)``) is lowercase base32 without padding
    (52 characters); :attr:`short` is its first 12 characters, for logs.
    """

    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes):
            raise ArgumentTypeError(
                f"key: a PeerId's key is 32 bytes, not {type(self.key).__name__}"
            )
        if len(self.key) != 32:
            raise ArgumentValueError(
                f"key: a PeerId's key is exactly 32 bytes, not {len(self.key)}"
            )

    def __hash__(self) -> int:
        return hash(self.key)  # bytes cache their hash; a PeerId is a key on hot paths

    def __str__(self) -> str:
        return _printable(self.key)

    def __repr__(self) -> str:
        return f"PeerId({self.short})"

    @property
    def short(self) -> str:
        """A short printable prefix of the id, for logs and messages."""
        return str(self)[:_SHORT_LEN]

    @classmethod
    def parse(cls, text: str) -> PeerId:
        """Parse the printable form made by ``str(peer)``.

        Ids parsed lately are remembered (bounded): services keep peer ids as text in
        their documents and read policies parse them for every entry they judge.

        Raises:
            ValueError: ``text`` is not a printable peer id.
        """
        return _parse_peer(text) if isinstance(text, str) else cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> PeerId:
        if not isinstance(text, str):
            raise ArgumentTypeError(
                f"text: a printable peer id is a str, not {type(text).__name__}"
            )
        if len(text) != 52:
            raise ArgumentValueError(f"not a peer id (52 base32 characters): {text!r}")
        try:
            key = base64.b32decode(text.upper() + "====", casefold=False)
        except (ValueError, TypeError) as exc:
            raise ArgumentValueError(f"not a peer id: {text!r}") from exc
        peer = cls(key)
        if str(peer) != text:  # one key, one spelling: ids are compared as text too
            raise ArgumentValueError(f"not a canonical peer id: {text!r}")
        return peer

    def verify(self, domain: Domain, message: bytes, signature: bytes) -> bool:
        """Whether this peer signed ``message`` for ``domain``."""
        if not isinstance(signature, bytes) or len(signature) != 64:
            return False
        return open_signed(self.key, signature + domain.value + message)

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` so that only this peer can read it (a libsodium sealed
        box to the X25519 form of its key); the sender stays anonymous."""
        public = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(self.key)
        return nacl.bindings.crypto_box_seal(plaintext, public)


@functools.lru_cache(maxsize=4096)
def _parse_peer(text: str) -> PeerId:
    """:meth:`PeerId._parse`, remembered for ids parsed lately (a refusal raises: it is
    not remembered)."""
    return PeerId._parse(text)


@functools.lru_cache(maxsize=1 << 16)
def _printable(key: bytes) -> str:
    """Base32 of a key (cached: ids are printed and compared as text on hot paths)."""
    return base64.b32encode(key).decode("ascii").rstrip("=").lower()


class Identity:
    """A peer's secret Ed25519 signing key, and the :class:`PeerId` it proves."""

    __slots__ = ("_secret", "_signing_key", "peer_id")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self.peer_id = PeerId(bytes(signing_key.verify_key))
        self._secret = bytes(signing_key) + self.peer_id.key  # libsodium's 64-byte secret key

    def __repr__(self) -> str:
        return f"Identity({self.peer_id.short})"

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity of a 32-byte seed (deterministic; for tests and key files)."""
        if not isinstance(seed, bytes):
            raise ArgumentTypeError(f"seed: 32 bytes, not {type(seed).__name__}")
        if len(seed) != 32:
            raise ArgumentValueError(f"seed: an identity seed is exactly 32 bytes, not {len(seed)}")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed. Keep it secret."""
        return bytes(self._signing_key)

    def sign(self, domain: Domain, message: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``message`` for ``domain``."""
        return nacl.bindings.crypto_sign(domain.value + message, self._secret)[:64]

    def unseal(self, ciphertext: bytes) -> bytes:
        """Open a sealed box made with :meth:`PeerId.seal` for this peer.

        Raises:
            ValueError: it was not sealed for this peer, or was altered.
        """
        public = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(self.peer_id.key)
        secret = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(self._secret)
        try:
            return nacl.bindings.crypto_box_seal_open(ciphertext, public, secret)
        except (nacl.exceptions.CryptoError, TypeError) as exc:
            raise ValueError("not a sealed box for this peer, or altered") from exc

    def save(self, path: str | os.PathLike[str], passphrase: str | bytes | None = None) -> None:
        """Write the key to ``path`` with mode 0600, sealed if a passphrase is given.

        The passphrase is stretched with Argon2id (libsodium's moderate limits) and
        the seed sealed with XSalsa20-Poly1305 (``SecretBox``). An existing file is
        replaced atomically.
        """
        record: dict[str, object] = {"format": _KEY_FILE_MAGIC}
        if passphrase is None:
            record["seed"] = self.seed
        else:
            salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
            ops = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
            mem = nacl.pwhash.argon2id.MEMLIMIT_MODERATE
            box = nacl.secret.SecretBox(_stretch(passphrase, salt, ops, mem))
            record.update(salt=salt, ops=ops, mem=mem, sealed=bytes(box.encrypt(self.seed)))
        data = cbor2.dumps(record, canonical=True)
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str], passphrase: str | bytes | None = None) -> Identity:
        """Read a key written by :meth:`save`.

        Raises:
            InvalidKeyFile: the file is malformed, sealed without a passphrase
                given, or the passphrase is wrong.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidKeyFile(f"cannot read key file {path}: {exc.strerror or exc}") from None
        try:
            record = cbor2.loads(data)
        except Exception:  # any bytes at all: a decoder's complaint helps nobody here
            raise InvalidKeyFile(f"{path} is not a crdt_mesh key file") from None
        if not isinstance(record, dict) or record.get("format") != _KEY_FILE_MAGIC:
            raise InvalidKeyFile(f"{path} is not a crdt_mesh key file")
        if "seed" not in record and passphrase is None:
            raise InvalidKeyFile(f"{path} is sealed: a passphrase is required")
        try:
            if "seed" in record:
                return cls.from_seed(record["seed"])
            ops, mem = int(record["ops"]), int(record["mem"])
            if not (0 < ops <= _MAX_OPS and 0 < mem <= _MAX_MEM):
                raise ValueError("Argon2id limits out of range")
            key = _stretch(passphrase, record["salt"], ops, mem)
            seed = nacl.secret.SecretBox(key).decrypt(record["sealed"])
            return cls.from_seed(seed)
        except nacl.exceptions.CryptoError as exc:
            raise InvalidKeyFile(f"wrong passphrase for {path}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidKeyFile(f"{path} is corrupt: {exc}") from exc


def _stretch(passphrase: str | bytes | None, salt: bytes, ops: int, mem: int) -> bytes:
    if passphrase is None:
        raise InvalidKeyFile("a passphrase is required")
    secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
    return bytes(
        nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE, secret, salt, opslimit=ops, memlimit=mem
        )
    )
