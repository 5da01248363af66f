"""Values the replica hands out: heads, ingest reports, changes, summaries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from ..errors import MeshError
from ..identity import PeerId
from ..ledger import DocumentId, Entry, ForkProof

FeedKey = tuple[DocumentId, PeerId]


@dataclass(frozen=True, slots=True)
class Head:
    """The last entry of a feed that counts: its seq and id; ``frozen`` after a fork."""

    seq: int
    id: bytes
    frozen: bool = False

    def __init__(self, seq: int, id: bytes, frozen: bool = False) -> None:
        # Through each slot's own setter: one head is made per entry admitted, and
        # the __init__ a frozen dataclass generates costs twice as much.
        _HEAD_SETTERS[0](self, seq)
        _HEAD_SETTERS[1](self, id)
        _HEAD_SETTERS[2](self, frozen)


_HEAD_SETTERS = tuple(getattr(Head, f.name).__set__ for f in fields(Head))


@dataclass(frozen=True, slots=True)
class ReplicaSummary:
    """What a replica holds: see :meth:`Replica.summary`."""

    documents: int
    feeds: int
    entries: int
    fork_proofs: int
    pending: int
    bytes_on_disk: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input that was refused, and the typed reason."""

    item: Entry | ForkProof | bytes
    error: MeshError


@dataclass(slots=True)
class IngestReport:
    """What one :meth:`Replica.ingest` call did with each input."""

    applied: list[Entry] = field(default_factory=list)
    duplicates: int = 0
    pending: int = 0
    ignored: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    forks: list[ForkProof] = field(default_factory=list)

    def raise_first(self) -> None:
        """Raise the first rejection's error, if there was one."""
        if self.rejected:
            raise self.rejected[0].error


@dataclass(frozen=True, slots=True)
class DocumentChange:
    """A committed entry applied to a document (local or remote)."""

    document: DocumentId
    author: PeerId
    seq: int
    local: bool


class FeedHeads(dict[FeedKey, Head]):
    """Feed heads, with the authors of each document indexed (a document load
    then finds its feeds without scanning every feed of the replica)."""

    def __init__(self, heads: Mapping[FeedKey, Head] | None = None) -> None:
        super().__init__(heads or {})
        self._authors: dict[DocumentId, set[PeerId]] = {}
        for doc, author in self:
            self._authors.setdefault(doc, set()).add(author)

    def __setitem__(self, feed: FeedKey, head: Head) -> None:
        super().__setitem__(feed, head)
        self._authors.setdefault(feed[0], set()).add(feed[1])

    def update(self, other: Mapping[FeedKey, Head]) -> None:  # type: ignore[override]
        for feed, head in other.items():
            self[feed] = head

    def setdefault(self, feed: FeedKey, default: Head) -> Head:
        if feed not in self:
            self[feed] = default
        return self[feed]

    def __delitem__(self, feed: FeedKey) -> None:
        super().__delitem__(feed)
        self._forget(feed)

    def pop(self, feed: FeedKey, *default: Head | None) -> Head | None:  # type: ignore[override]
        had = feed in self
        value = super().pop(feed, *default)
        if had:
            self._forget(feed)
        return value

    def _forget(self, feed: FeedKey) -> None:
        authors = self._authors.get(feed[0])
        if authors is not None:
            authors.discard(feed[1])
            if not authors:
                del self._authors[feed[0]]

    def authors_of(self, doc: DocumentId) -> list[PeerId]:
        """Authors with a feed in ``doc``."""
        return sorted(self._authors.get(doc, ()), key=lambda p: p.key)
