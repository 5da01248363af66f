"""An index of the documents a service cares about, kept up to date as entries commit.

A service finds its documents through an index it owns, not by scanning every
document the replica holds on each call: the index scans once when made, then
looks only at the documents of each commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from ..ledger import DocumentId, Entry

if TYPE_CHECKING:
    from .replica import Replica

K = TypeVar("K")


class DocumentIndex(Generic[K]):
    """Documents by key, for the documents ``key_of`` gives a key (None: not ours).

    ``version`` grows whenever a document is added, so that views derived from the
    index can tell when to rebuild.
    """

    def __init__(self, replica: Replica, key_of: Callable[[DocumentId], K | None]) -> None:
        self._key_of = key_of
        self._documents: dict[K, list[DocumentId]] = {}
        self._known: set[DocumentId] = set()
        self.version = 0
        for document in replica.documents():
            self._add(document)
        self._unsubscribe = replica.on_commit(self._on_commit)

    def _add(self, document: DocumentId) -> None:
        if document in self._known:
            return
        self._known.add(document)
        key = self._key_of(document)
        if key is not None:
            self._documents.setdefault(key, []).append(document)
            self.version += 1

    def _on_commit(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._add(entry.document)

    def known_keys(self) -> list[K]:
        return list(self._documents)

    def get(self, key: K) -> list[DocumentId]:
        """The documents of ``key`` (in the order they appeared)."""
        return list(self._documents.get(key, ()))

    def items(self) -> list[tuple[K, list[DocumentId]]]:
        return [(key, list(documents)) for key, documents in self._documents.items()]

    def close(self) -> None:
        """Stop following commits."""
        self._unsubscribe()


__all__ = ["DocumentIndex"]
