"""The encrypted level's keys: a channel's epoch keys in its lockbox, and a memory's own
key wrapped to chosen readers.

An epoch key is sealed (libsodium sealed box, to the X25519 form of each member's
Ed25519 key) once per member, in one signed entry of the channel's lockbox
document, which its admins write and anyone may carry: a box says nothing of
whom it is for, so a reader finds its own by trying each. An epoch is named
``<number>:<admin key>``: its number is one more than any the admin had seen, so
two admins that rotate at once make two epochs of one number, and the current
epoch — the highest (number, admin) — is the same on every replica that holds
both. Each epoch also records a digest of the members it was sealed to, keyed
with the epoch key (only key holders can check it): an admin that finds the
current epoch sealed to other members than the channel has now rotates again, so
concurrent changes end in one key for one membership. A new epoch starts whenever
the member list changes and after 100 memories or a week (Megolm's defaults); a
removed member holds no key of any epoch after its removal. Content is sealed
with XChaCha20-Poly1305.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ...identity import PeerId
from ...ledger import DocumentId
from ...replica.replica import Replica
from .model import FederatedMemoryError, MemoryPrivacyLevel
from .rules import Scope, lockbox_document, seal, unseal

_ROOT = "memory"
#: An admin rotates a channel's key after this many encrypted memories in one epoch,
#: or after this long (Megolm's defaults).
ROTATE_AFTER_MEMORIES = 100
ROTATE_AFTER_SECONDS = 7 * 24 * 3600


def _order(label: str) -> tuple[int, str]:
    number, _, admin = label.partition(":")
    return (int(number), admin) if number.isdigit() else (-1, "")


def members_digest(key: bytes, members: Iterable[PeerId]) -> bytes:
    """Which members an epoch was sealed to, as only its key holders can check."""
    joined = b"".join(sorted(p.key for p in members))
    return hashlib.blake2b(joined, key=key, digest_size=16).digest()


def read_root(replica: Replica, document: DocumentId) -> dict[str, Any]:
    """A memory document's record as plain values, without keeping the document in
    memory if it was not open (a replica may hold a hundred thousand memories)."""
    held = replica.is_open(document)
    value = replica.document(document).map(_ROOT).to_py()
    if not held:
        replica.release(document)
    return value if isinstance(value, dict) else {}


class Keyring:
    """Reads and writes the keys of the encrypted level over one replica."""

    def __init__(self, replica: Replica, clock: Callable[[], float] = time.time) -> None:
        self.replica = replica
        self.clock = clock
        #: epoch keys this identity could open: (creator, channel, epoch) -> key or None
        self._epoch_keys: dict[tuple[PeerId, str, str], bytes | None] = {}
        #: memories sealed in each epoch of the channels this peer administers
        self._sealed: dict[tuple[str, str], set[DocumentId]] = {}

    def rotate(self, creator: PeerId, channel: str, members: Iterable[PeerId]) -> str:
        """Seal a fresh key to each of ``members`` as the channel's next epoch (this peer
        is one of its admins). Returns the epoch's name."""
        me = self.replica.peer_id
        current = self.current_epoch(creator, channel)
        epoch = f"{_order(current)[0] + 1 if current else 1}:{me.key.hex()}"
        key = os.urandom(32)
        sealed_to = sorted(set(members), key=lambda p: p.key)
        lockbox = self.replica.document(lockbox_document(creator, channel))
        with lockbox.transaction():
            lockbox.map(_ROOT)[epoch] = {
                "boxes": [member.seal(key) for member in sealed_to],
                "for": members_digest(key, sealed_to),
                "at": self.clock(),
            }
        self._epoch_keys[(creator, channel, epoch)] = key
        return epoch

    def sealed_to(self, creator: PeerId, channel: str, members: Iterable[PeerId]) -> bool:
        """Whether the current epoch was sealed to exactly ``members`` (False also when
        this peer holds no key of it: it cannot tell)."""
        epoch = self.current_epoch(creator, channel)
        key = self.epoch_key(creator, channel, epoch) if epoch else None
        entry = self.epochs(creator, channel).get(epoch) if epoch else None
        if key is None or not isinstance(entry, Mapping):
            return False
        return bytes(entry.get("for") or b"") == members_digest(key, members)

    def count(self, document: DocumentId, scope: Scope | None) -> None:
        """Note an encrypted memory of a channel (an admin rotates after 100 in one epoch)."""
        if scope is None or scope.forgotten or scope.privacy is not MemoryPrivacyLevel.ENCRYPTED:
            return
        if scope.admin is None or scope.group is None:
            return
        stored = read_root(self.replica, document).get("encrypted")
        epoch = stored.get("epoch") if isinstance(stored, Mapping) else None
        if isinstance(epoch, str):
            self._sealed.setdefault((scope.group, epoch), set()).add(document)

    def rotation_due(self, creator: PeerId, channel: str) -> bool:
        """Whether a channel needs a new epoch: none yet, or the current one has sealed
        100 memories or is a week old."""
        epoch = self.current_epoch(creator, channel)
        entry = self.epochs(creator, channel).get(epoch)
        if not isinstance(entry, Mapping):
            return True
        if self.clock() - float(entry.get("at") or 0.0) > ROTATE_AFTER_SECONDS:
            return True
        return len(self._sealed.get((channel, epoch), ())) >= ROTATE_AFTER_MEMORIES

    def epochs(self, creator: PeerId, channel: str) -> dict[str, Any]:
        """The lockbox of a channel as this replica holds it: epoch -> entry."""
        document = lockbox_document(creator, channel)
        if not self.replica.has_document(document):
            return {}
        return read_root(self.replica, document)

    def current_epoch(self, creator: PeerId, channel: str) -> str:
        """The name of the channel's current epoch ("" if it has none here)."""
        named = [e for e in self.epochs(creator, channel) if _order(e)[0] >= 0]
        return max(named, key=_order, default="")

    def epoch_key(self, creator: PeerId, channel: str, epoch: str) -> bytes | None:
        """The key of one epoch, if it was sealed to this identity."""
        cached = (creator, channel, epoch)
        if cached in self._epoch_keys:
            return self._epoch_keys[cached]
        entry = self.epochs(creator, channel).get(epoch)
        if not isinstance(entry, Mapping):
            return None  # not here yet: ask again later
        key = self._open_any(entry.get("boxes"))
        self._epoch_keys[cached] = key
        return key

    def _open_any(self, boxes: Any) -> bytes | None:
        for box in boxes or ():
            try:
                opened = self.replica.identity.unseal(bytes(box))
            except (ValueError, TypeError):
                continue
            if len(opened) == 32:
                return opened
        return None

    def for_channel(
        self, document: DocumentId, value: Mapping[str, Any], admin: PeerId, channel: str
    ) -> dict[str, Any]:
        """``value`` sealed with the channel's current epoch key.

        Raises:
            FederatedMemoryError: this peer holds no key of the channel (yet).
        """
        epoch = self.current_epoch(admin, channel)
        key = self.epoch_key(admin, channel, epoch) if epoch else None
        if key is None:
            raise FederatedMemoryError(
                f"this peer holds no key of channel {channel!r} yet (its lockbox has not"
                " arrived, or the admin has not sealed one to it)"
            )
        return {"epoch": epoch, "sealed": seal(key, document, value)}

    def for_readers(
        self, document: DocumentId, value: Mapping[str, Any], readers: Sequence[PeerId]
    ) -> dict[str, Any]:
        """``value`` sealed with a key of its own, wrapped to each reader and to us."""
        key = os.urandom(32)
        everyone = sorted({*readers, self.replica.peer_id}, key=lambda p: p.key)
        return {
            "boxes": [reader.seal(key) for reader in everyone],
            "readers": [reader.key for reader in everyone],
            "sealed": seal(key, document, value),
        }

    @staticmethod
    def readers_of(stored: Any) -> list[PeerId]:
        keys = stored.get("readers") if isinstance(stored, Mapping) else None
        return [PeerId(bytes(k)) for k in keys or ()]

    def open(
        self, document: DocumentId, stored: Any, admin: PeerId | None, channel: str | None
    ) -> dict[str, Any] | None:
        """The record sealed in ``stored``, if this identity holds a key that opens it."""
        if not isinstance(stored, Mapping):
            return None
        key: bytes | None = None
        if admin is not None and channel is not None:
            epoch = stored.get("epoch")
            if isinstance(epoch, str):
                key = self.epoch_key(admin, channel, epoch)
        else:
            key = self._open_any(stored.get("boxes"))
        return unseal(key, document, stored.get("sealed")) if key is not None else None
