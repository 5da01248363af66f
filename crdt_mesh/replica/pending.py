"""The pending area: entries that wait for a missing predecessor (or for the owner's
ACL entry they cite), bounded in bytes, fair between the peers that sent them.

An entry that arrives ahead of its feed cannot be judged yet, so it waits; a peer
that sends entries whose gap never fills would hold that memory forever. So:

* every waiting entry is charged to its *source* (the peer whose link delivered
  it; ``None`` for local callers of ``Replica.ingest``) at about what it costs in
  memory (:func:`charge`);
* a source may hold at most ``per_source`` bytes: past that, its own oldest
  waiting entries make room (a gap that large is filled by anti-entropy anyway);
* all sources together hold at most ``total`` bytes (and ``max_entries``
  entries): past that, the source holding the most makes room, and an entry whose
  own source would then hold more than any other is refused instead
  (:class:`~crdt_mesh.errors.PendingOverflow`).

So an honest peer's entry is never refused, nor evicted, because of another
peer's: only the largest holder pays, and a peer holding little is never the
largest while someone else holds more. The worst a node holds is ``total``, and
``per_source`` for each source.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from ..ledger import DocumentId, Entry
from .records import FeedKey

#: Bytes of memory a decoded entry costs beyond twice its encoding (measured ~350).
_OVERHEAD = 256


def charge(entry: Entry) -> int:
    """What waiting costs: the encoding, the decoded payload, and the object around them."""
    return 2 * len(entry.encoded) + _OVERHEAD


@dataclass(frozen=True, slots=True)
class PendingLimits:
    """Bounds of the pending area (bytes are charged as :func:`charge` says)."""

    total: int = 32 * 1024 * 1024
    per_source: int = 4 * 1024 * 1024
    max_entries: int = 50_000

    def __post_init__(self) -> None:
        if not 0 < self.per_source <= self.total or self.max_entries < 1:
            raise ValueError("pending limits: 0 < per_source <= total, max_entries >= 1")


@dataclass(frozen=True, slots=True)
class _Held:
    entry: Entry
    source: Hashable
    size: int
    since: float


class PendingArea:
    """Waiting entries by feed and seq, with per-source byte accounting. See the module doc."""

    def __init__(self, limits: PendingLimits | None = None) -> None:
        self.limits = limits or PendingLimits()
        self._feeds: dict[FeedKey, dict[int, _Held]] = {}
        # per source, its waiting entries in the order they came (oldest first)
        self._by_source: dict[Hashable, OrderedDict[tuple[FeedKey, int], int]] = {}
        self._source_bytes: dict[Hashable, int] = {}
        self.bytes = 0
        self.count = 0
        #: entries evicted to make room, and entries refused for lack of it
        self.evicted = 0
        self.refused = 0

    # -- reading --------------------------------------------------------------------------

    # An empty area is the usual case: it answers without hashing the feed key (a
    # tuple of two ids, hashed in Python: several such lookups per entry ingested).
    def get(self, feed: FeedKey, seq: int) -> Entry | None:
        if not self._feeds:
            return None
        held = self._feeds.get(feed, {}).get(seq)
        return held.entry if held is not None else None

    def waiting(self, feed: FeedKey) -> bool:
        """Whether any entry of ``feed`` waits."""
        return bool(self._feeds) and bool(self._feeds.get(feed))

    def feeds(self) -> Iterator[FeedKey]:
        return iter(list(self._feeds))

    def feeds_of(self, document: DocumentId) -> list[FeedKey]:
        return [feed for feed in self._feeds if feed[0] == document]

    def held_by(self, source: Hashable) -> int:
        """Bytes charged to ``source``."""
        return self._source_bytes.get(source, 0)

    # -- writing --------------------------------------------------------------------------

    def add(
        self,
        feed: FeedKey,
        entry: Entry,
        source: Hashable,
        *,
        force: bool = False,
        now: float = 0.0,
    ) -> bool:
        """Hold ``entry`` (the caller checked that none waits at its seq); False if refused.

        ``force``: hold it whatever the bounds (an entry about to be judged with the
        entries waiting behind it, taken out again at once).
        """
        size = charge(entry)
        limits = self.limits
        if force:
            self._hold(feed, entry, source, size, now)
            return True
        if size > limits.per_source and source is not None:
            self.refused += 1
            return False
        if source is not None:
            while self.held_by(source) + size > limits.per_source:
                self._evict_oldest(source)
        while self.bytes + size > limits.total or self.count + 1 > limits.max_entries:
            others = [s for s in self._source_bytes if s != source]
            if not others:
                self.refused += 1
                return False
            largest = max(others, key=self._source_bytes.__getitem__)
            if self.held_by(largest) < self.held_by(source) + size:
                # The sender would hold the most: it is the one to wait.
                self.refused += 1
                return False
            self._evict_oldest(largest)
        self._hold(feed, entry, source, size, now)
        return True

    def _hold(self, feed: FeedKey, entry: Entry, source: Hashable, size: int, now: float) -> None:
        self._feeds.setdefault(feed, {})[entry.seq] = _Held(entry, source, size, now)
        self._by_source.setdefault(source, OrderedDict())[(feed, entry.seq)] = size
        self._source_bytes[source] = self.held_by(source) + size
        self.bytes += size
        self.count += 1

    def pop(self, feed: FeedKey, seq: int) -> Entry | None:
        """Take the entry of ``feed`` at ``seq`` out (to judge it)."""
        pool = self._feeds.get(feed)
        held = pool.pop(seq, None) if pool else None
        if held is None:
            return None
        self._release(feed, seq, held)
        if not pool:
            del self._feeds[feed]
        return held.entry

    def drop_above(self, feed: FeedKey, limit: int) -> None:
        """Forget the waiting entries of ``feed`` past ``limit`` (a fork or a cut ends it)."""
        for seq in [s for s in self._feeds.get(feed, {}) if s > limit]:
            self.pop(feed, seq)

    def expire(self, before: float) -> dict[Hashable, int]:
        """Forget entries that waited since before ``before``; the feeds each source
        left waiting that long (a gap its sender could have filled and did not)."""
        stale: dict[Hashable, set[FeedKey]] = {}
        for source, queue in list(self._by_source.items()):
            for feed, seq in list(queue):  # oldest first: stop at the first recent one
                held = self._feeds[feed][seq]
                if held.since >= before:
                    break
                stale.setdefault(source, set()).add(feed)
                self.pop(feed, seq)
        return {source: len(feeds) for source, feeds in stale.items()}

    def forget_source(self, source: Hashable) -> None:
        """Forget everything ``source`` sent that still waits (its link closed)."""
        for feed, seq in list(self._by_source.get(source, {})):
            self.pop(feed, seq)

    def _evict_oldest(self, source: Hashable) -> None:
        queue = self._by_source[source]
        feed, seq = next(iter(queue))
        self.pop(feed, seq)
        self.evicted += 1

    def _release(self, feed: FeedKey, seq: int, held: _Held) -> None:
        queue = self._by_source[held.source]
        del queue[(feed, seq)]
        remaining = self._source_bytes[held.source] - held.size
        if queue:
            self._source_bytes[held.source] = remaining
        else:
            del self._by_source[held.source]
            del self._source_bytes[held.source]
        self.bytes -= held.size
        self.count -= 1


__all__ = ["PendingArea", "PendingLimits", "charge"]
