"""Ranking of federated memory's text queries: lexical (BM25), semantic (local
embeddings), and the two fused by reciprocal rank.

The indexes are derived state, built from the memories a replica may show and
rebuilt when they change. Each reader embeds the memories it may read itself,
with the model in its own install: it never takes a vector from a peer (a vector
can lie about its text); a memory's embedding is kept while it is unchanged.
"""

from __future__ import annotations

from typing import Any

from .model import FederatedMemoryError, Memory, MemoryRef
from .rules import Filters, LexicalIndex, embed, fuse, searchable_text, semantic_available

#: Candidates taken from each ranking before fusion (beyond the results asked for).
_DEPTH = 200


class Ranker:
    """Ranks memories for a text over indexes of every memory the board may show."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[MemoryRef, float], Any] = {}
        self._version: int | None = None
        self._corpus: list[Memory] = []
        self._lexical: LexicalIndex | None = None
        self._matrix: Any = None

    def rank(
        self,
        corpus: list[Memory],
        version: int,
        rows: list[int] | None,
        text: str,
        mode: str | None = None,
        limit: int = 10,
    ) -> list[tuple[float, Memory]]:
        """(score, memory) for the best of ``corpus`` (only its ``rows``, if given) for
        ``text``, in no order. ``version`` names the corpus: the indexes are rebuilt when
        it changes. Every memory is scored at once (numpy), then the rows are taken."""
        import numpy as np

        mode = _mode(mode)
        if version != self._version:
            self._corpus, self._version = corpus, version
            self._lexical, self._matrix = None, None
        if not corpus or (rows is not None and not rows):
            return []
        chosen = None if rows is None else np.asarray(rows, dtype=np.int64)

        def of(kept: int) -> Memory:
            return corpus[kept if rows is None else rows[kept]]

        depth = min(len(corpus) if rows is None else len(rows), max(limit, 1) + _DEPTH)
        lexical: list[int] = []
        if mode in ("lexical", "hybrid"):
            if self._lexical is None:
                self._lexical = LexicalIndex([searchable_text(m) for m in self._corpus])
            scores = self._lexical.scores(text)
            scores = scores if chosen is None else scores[chosen]
            if mode == "lexical":
                return [(float(scores[i]), of(i)) for i in _top(scores, depth) if scores[i] > 0]
            lexical = [i for i in _top(scores, depth) if scores[i] > 0]
        if self._matrix is None:
            self._matrix = self._embeddings(self._corpus)
        similarity = self._matrix @ embed([text])[0]
        similarity = similarity if chosen is None else similarity[chosen]
        semantic = _top(similarity, depth)
        if mode == "semantic":
            return [(float(similarity[i]), of(i)) for i in semantic]
        return [(score, of(i)) for i, score in fuse([lexical, semantic]).items()]

    def _embeddings(self, memories: list[Memory]) -> Any:
        import numpy as np

        missing = [m for m in memories if (m.ref, m.updated_at) not in self._vectors]
        if missing:
            for memory, vector in zip(
                missing, embed([searchable_text(m) for m in missing]), strict=True
            ):
                self._vectors[(memory.ref, memory.updated_at)] = vector
        if not memories:
            return np.zeros((0, 256), dtype=np.float32)
        return np.stack([self._vectors[(m.ref, m.updated_at)] for m in memories])


class FilterIndex:
    """Which rows of a listing of memories each filter value names: a query's filters
    cost what they match, not a scan of every memory."""

    def __init__(self, corpus: list[Memory]) -> None:
        self._by: dict[str, dict[Any, list[int]]] = {
            "privacy": {},
            "channels": {},
            "organizations": {},
            "authors": {},
            "tags": {},
        }
        for row, memory in enumerate(corpus):
            self._by["privacy"].setdefault(memory.privacy, []).append(row)
            self._by["channels"].setdefault(memory.channel, []).append(row)
            self._by["organizations"].setdefault(memory.organization, []).append(row)
            self._by["authors"].setdefault(memory.author, []).append(row)
            for tag in memory.tags:
                self._by["tags"].setdefault(tag, []).append(row)

    def rows(self, filters: Filters) -> set[int] | None:
        """The rows the indexed filters keep (None: they keep every row); the times
        (``since``, ``until``) are left to :meth:`Filters.keeps`."""
        found: set[int] | None = None
        for name, index in self._by.items():
            wanted = getattr(filters, name)
            if wanted is None:
                continue
            rows = {row for value in wanted for row in index.get(value, ())}
            found = rows if found is None else found & rows
            if not found:
                return set()
        return found


def _top(scores: Any, depth: int) -> list[int]:
    """Indices of the ``depth`` highest scores, best first (ties: the lower index)."""
    import numpy as np

    if depth >= len(scores):
        chosen = np.arange(len(scores))
    else:
        chosen = np.argpartition(-scores, depth - 1)[:depth]
    return sorted(chosen.tolist(), key=lambda i: (-float(scores[i]), i))


def _mode(mode: Any) -> str:
    if mode is None:
        return "hybrid" if semantic_available() else "lexical"
    if mode not in ("lexical", "semantic", "hybrid"):
        raise FederatedMemoryError(f"mode: lexical, semantic or hybrid, not {mode!r}")
    return str(mode)
