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
from .rules import (
    Filters,
    LexicalIndex,
    embed,
    fuse,
    searchable_text,
    semantic_available,
    tag_score,
)

#: Candidates taken from each ranking before fusion (beyond the results asked for).
_DEPTH = 200
#: From this many memories on, semantic ranking runs in two stages: cosine over the
#: first ``_PREFIX`` dimensions of every embedding picks ``_SHORTLIST`` times the
#: candidates wanted (at least 2,000), and the full embedding orders those. The
#: model is trained so that a prefix is an embedding too (Matryoshka); the benchmark
#: measures how much of the exact top the shortlist holds.
TWO_STAGE_FROM = 20_000
_PREFIX = 64
_SHORTLIST = 10
_SHORTLIST_AT_LEAST = 2000


class Ranker:
    """Ranks memories for a text over indexes of every memory the board may show."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[MemoryRef, float], Any] = {}
        self._version: int | None = None
        self._corpus: list[Memory] = []
        self._lexical: LexicalIndex | None = None
        self._matrix: Any = None
        self._prefix: Any = None

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
            self._lexical, self._matrix, self._prefix = None, None, None
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
        similarity = self._similarity(embed([text])[0], chosen, depth)
        semantic = _top(similarity, depth)
        if mode == "semantic":
            return [(float(similarity[i]), of(i)) for i in semantic]
        return [(score, of(i)) for i, score in fuse([lexical, semantic]).items()]

    def _similarity(self, vector: Any, chosen: Any, depth: int) -> Any:
        """Cosine of ``vector`` with each memory (of ``chosen`` rows, if given); in two
        stages from ``TWO_STAGE_FROM`` memories on, where those not shortlisted score
        -inf."""
        import numpy as np

        if self._matrix is None:
            self._matrix = self._embeddings(self._corpus)
        matrix = self._matrix
        size = len(matrix) if chosen is None else len(chosen)
        shortlist = max(_SHORTLIST * depth, _SHORTLIST_AT_LEAST)
        if size < TWO_STAGE_FROM or shortlist >= size:
            similarity = matrix @ vector
            return similarity if chosen is None else similarity[chosen]
        if self._prefix is None:
            prefix = np.ascontiguousarray(matrix[:, :_PREFIX])
            norms = np.linalg.norm(prefix, axis=1, keepdims=True)
            self._prefix = prefix / np.where(norms == 0, 1.0, norms)
        head = vector[:_PREFIX] / max(float(np.linalg.norm(vector[:_PREFIX])), 1e-12)
        coarse = self._prefix @ head
        coarse = coarse if chosen is None else coarse[chosen]
        picked = np.argpartition(-coarse, shortlist - 1)[:shortlist]
        rows = picked if chosen is None else chosen[picked]
        similarity = np.full(size, -np.inf, dtype=np.float32)
        similarity[picked] = matrix[rows] @ vector
        return similarity

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


def by_tags(
    listing: list[Memory], tags: frozenset[str] | None, limit: int
) -> list[tuple[float, Memory]]:
    """The best ``limit`` of ``listing`` (in the board's order: newer first, then by
    name) by how many of ``tags`` each has; ties keep the listing's order."""
    if not tags:
        return [(0.0, m) for m in listing[:limit]]
    counted = [(tag_score(m, tags), m) for m in listing]
    counted.sort(key=lambda pair: -pair[0])  # stable: ties stay in order
    return counted[:limit]


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
