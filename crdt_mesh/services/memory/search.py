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
from .rules import LexicalIndex, embed, fuse, searchable_text, semantic_available

#: Candidates taken from each ranking before fusion (beyond the results asked for).
_DEPTH = 200


class Ranker:
    """Ranks memories for a text over indexes of every memory the board may show."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[MemoryRef, float], Any] = {}
        self._version: int | None = None
        self._corpus: list[Memory] = []
        self._position: dict[MemoryRef, int] = {}
        self._lexical: LexicalIndex | None = None
        self._matrix: Any = None

    def rank(
        self,
        corpus: list[Memory],
        version: int,
        kept: list[Memory],
        text: str,
        mode: str | None = None,
        limit: int = 10,
    ) -> list[tuple[float, Memory]]:
        """(score, memory) for the best of ``kept`` (a part of ``corpus``) for ``text``,
        in no order. ``version`` names the corpus: the indexes are rebuilt when it
        changes."""
        import numpy as np

        mode = _mode(mode)
        if not kept:
            return []
        if version != self._version:
            self._corpus, self._version = corpus, version
            self._position = {m.ref: i for i, m in enumerate(corpus)}
            self._lexical, self._matrix = None, None
        rows = np.fromiter((self._position[m.ref] for m in kept), dtype=np.int64, count=len(kept))
        depth = min(len(kept), max(limit, 1) + _DEPTH)
        lexical: list[int] = []
        if mode in ("lexical", "hybrid"):
            if self._lexical is None:
                self._lexical = LexicalIndex([searchable_text(m) for m in self._corpus])
            scores = self._lexical.scores(text)[rows]
            if mode == "lexical":
                best = _top(scores, depth)
                return [(float(scores[i]), kept[i]) for i in best if scores[i] > 0]
            lexical = [i for i in _top(scores, depth) if scores[i] > 0]
        if self._matrix is None:
            self._matrix = self._embeddings(self._corpus)
        similarity = self._matrix[rows] @ embed([text])[0]
        semantic = _top(similarity, depth)
        if mode == "semantic":
            return [(float(similarity[i]), kept[i]) for i in semantic]
        return [(score, kept[i]) for i, score in fuse([lexical, semantic]).items()]

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
