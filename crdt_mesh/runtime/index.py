"""What each peer is shown: the sync index of the feeds it may read.

The sync protocol compares feed heads; the replica says which documents a peer
may read. This joins the two, so that neither knows the other: built from what
the replica exposes (heads, frozen feeds, ``readable_by``), cached until the
replica's version moves, and one index serves every peer unless reads differ
from peer to peer (``members`` documents, read policies).
"""

from __future__ import annotations

import weakref

from ..identity import PeerId
from ..ledger import ZERO_HASH
from ..replica.records import FeedKey, Head
from ..replica.replica import Replica
from ..sync.index import FeedIndex, FeedItem

_MAX_CACHED = 64


class ReadableIndex:
    """Sync indexes of one replica, per peer, rebuilt only when the replica changes."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self._indexes: dict[PeerId | None, tuple[int, FeedIndex]] = {}
        self._items: dict[FeedKey, FeedItem] = {}

    def for_peer(self, peer: PeerId) -> FeedIndex:
        """The heads of every feed ``peer`` may read."""
        replica = self._replica
        cache_key = peer if replica.per_peer_reads else None
        cached = self._indexes.get(cache_key)
        if cached is not None and cached[0] == replica.version:
            return cached[1]
        items = [
            self._item(feed, head)
            for feed, head in replica.heads().items()
            if replica.readable_by(feed[0], peer)
        ]
        items += [
            self._item(feed, Head(0, ZERO_HASH, True))
            for feed in replica.frozen_feeds()
            if replica.readable_by(feed[0], peer)
        ]
        index = FeedIndex(items)
        if len(self._indexes) >= _MAX_CACHED:
            self._indexes.clear()
        self._indexes[cache_key] = (replica.version, index)
        return index

    def _item(self, feed: FeedKey, head: Head) -> FeedItem:
        """A feed's item (memoized: its hash costs)."""
        cached = self._items.get(feed)
        if cached is None or (cached.seq, cached.id, cached.frozen) != (
            head.seq,
            head.id,
            head.frozen,
        ):
            cached = FeedItem(feed[0].key + feed[1].key, head.seq, head.id, head.frozen)
            self._items[feed] = cached
        return cached


_BY_REPLICA: weakref.WeakKeyDictionary[Replica, ReadableIndex] = weakref.WeakKeyDictionary()


def readable_index(replica: Replica) -> ReadableIndex:
    """The one :class:`ReadableIndex` of ``replica`` (shared by all its links)."""
    index = _BY_REPLICA.get(replica)
    if index is None:
        index = _BY_REPLICA[replica] = ReadableIndex(replica)
    return index


__all__ = ["ReadableIndex", "readable_index"]
