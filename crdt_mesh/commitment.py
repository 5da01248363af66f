"""Commit, then reveal: a hash that binds a hidden value to its purpose, to what it is
about and to who committed, and padded boxes that carry it until the reveal.

Task negotiation's sealed bids and reputation's jury votes are both made this way.
Binding the committer is what makes a copied commitment worthless to the copier:
the opening that matches it names someone else. Pure values, no I/O.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Any

import cbor2

from .identity import PeerId


class Purpose(enum.Enum):
    """What a commitment is for: hashed in front, so one never verifies for another."""

    SEALED_BID = b"crdt_mesh/sealed-bid/v2\x00"
    JURY_VOTE = b"crdt_mesh/jury-vote/v1\x00"


def commitment(purpose: Purpose, about: str, committer: PeerId, value: bytes, nonce: bytes) -> str:
    """The hash (hex) that commits ``committer`` to ``value`` about ``about``."""
    bound = cbor2.dumps([about, committer.key, value, nonce], canonical=True)
    return hashlib.blake2b(purpose.value + bound, digest_size=32).hexdigest()


def opening_matches(
    purpose: Purpose, about: str, committer: PeerId, opening: Any, committed: Any
) -> bool:
    """Whether ``opening`` (``[value hex, nonce hex]``, as documents hold it) opens
    ``committed`` for ``committer``; False for anything malformed."""
    try:
        value, nonce = bytes.fromhex(opening[0]), bytes.fromhex(opening[1])
    except (ValueError, TypeError, IndexError, KeyError):
        return False
    return bool(commitment(purpose, about, committer, value, nonce) == committed)


#: Boxes are padded to the smallest of these sizes that fits (then to a multiple of the
#: largest), so their length says nothing of what they hold.
PAD_BUCKETS = (256, 512, 1024, 2048, 4096)


def pad(content: bytes) -> bytes:
    """``content`` framed with its length and padded to a bucket size."""
    framed = len(content).to_bytes(4, "big") + content
    size = next((b for b in PAD_BUCKETS if b >= len(framed)), None)
    if size is None:
        largest = PAD_BUCKETS[-1]
        size = -(-len(framed) // largest) * largest
    return framed.ljust(size, b"\x00")


def unpad(box: bytes) -> bytes | None:
    """What :func:`pad` framed (None: not a framed box)."""
    length = int.from_bytes(box[:4], "big")
    if len(box) < 4 + length:
        return None
    return box[4 : 4 + length]
