"""A sorted snapshot of feed heads, with range fingerprints for reconciliation.

Range-based set reconciliation (A. Meyer, "Range-Based Set Reconciliation",
SRDS 2023): each side can fingerprint any key range of its set; equal
fingerprints mean the range is in step, unequal ones are split and compared
again, so K differing feeds among F cost about K * log(F) exchanges.

An item is one feed's head (its key, seq, last entry id, frozen flag); its
fingerprint is the sum modulo 2**128 of the BLAKE2b-128 hashes of its items,
kept as prefix sums so that any range costs two binary searches.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

KEY_SIZE = 48  # document key (16) + author key (32)
#: An upper bound above every key: ranges are [lower, upper).
KEY_MAX = b"\xff" * (KEY_SIZE + 1)
_MOD = 1 << 128


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One feed's head as reconciliation sees it."""

    key: bytes
    seq: int
    id: bytes
    frozen: bool = False
    digest: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_SIZE:
            raise ValueError(f"a feed key is {KEY_SIZE} bytes")
        if not isinstance(self.seq, int) or isinstance(self.seq, bool) or self.seq < 0:
            raise ValueError("a feed head's seq is a non-negative integer")
        if not isinstance(self.id, bytes) or len(self.id) != 32:
            raise ValueError("a feed head's id is 32 bytes")
        material = self.key + self.seq.to_bytes(8, "big") + self.id + bytes((self.frozen,))
        object.__setattr__(
            self, "digest", int.from_bytes(hashlib.blake2b(material, digest_size=16).digest())
        )


class FeedIndex:
    """Feed heads sorted by key, with O(log F) range fingerprints."""

    __slots__ = ("_items", "_keys", "_prefix")

    def __init__(self, items: Iterable[FeedItem] = ()) -> None:
        self._items = sorted(items, key=lambda item: item.key)
        self._keys = [item.key for item in self._items]
        prefix = [0]
        for item in self._items:
            prefix.append((prefix[-1] + item.digest) % _MOD)
        self._prefix = prefix

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[FeedItem]:
        return iter(self._items)

    def _bounds(self, lower: bytes, upper: bytes) -> tuple[int, int]:
        start = bisect.bisect_left(self._keys, lower)
        end = bisect.bisect_left(self._keys, upper, lo=start)
        return start, end

    def fingerprint(self, lower: bytes, upper: bytes) -> tuple[bytes, int]:
        """(16-byte fingerprint, item count) of the keys in [lower, upper)."""
        start, end = self._bounds(lower, upper)
        value = (self._prefix[end] - self._prefix[start]) % _MOD
        return value.to_bytes(16, "big"), end - start

    def items(self, lower: bytes, upper: bytes) -> list[FeedItem]:
        start, end = self._bounds(lower, upper)
        return self._items[start:end]

    def get(self, key: bytes) -> FeedItem | None:
        index = bisect.bisect_left(self._keys, key)
        if index < len(self._keys) and self._keys[index] == key:
            return self._items[index]
        return None

    def split(self, lower: bytes, upper: bytes, parts: int) -> list[tuple[bytes, bytes]]:
        """Cut [lower, upper) into up to ``parts`` ranges holding about equal item counts."""
        start, end = self._bounds(lower, upper)
        count = end - start
        if count <= 1 or parts <= 1:
            return [(lower, upper)]
        step = -(-count // parts)
        cuts = [
            _separator(self._keys[i - 1], self._keys[i]) for i in range(start + step, end, step)
        ]
        bounds = [lower, *cuts, upper]
        return list(itertools.pairwise(bounds))


def _separator(before: bytes, key: bytes) -> bytes:
    """The shortest prefix of ``key`` that sorts after ``before``: a cheap split point.

    Every key <= ``before`` sorts below it and ``key`` does not, so the split puts
    the same keys on each side as ``key`` itself would (for this side's keys).
    """
    for length in range(1, len(key) + 1):
        if key[:length] > before:
            return key[:length]
    return key
