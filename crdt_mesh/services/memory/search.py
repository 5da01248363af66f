"""Ranking of federated memory's text queries: lexical (BM25), semantic (local
embeddings), and the two fused by reciprocal rank.

Each reader embeds the memories it may read itself, with the model in its own
install: it never takes a vector from a peer (a vector can lie about its text).
"""

from __future__ import annotations

from typing import Any

from .model import FederatedMemoryError, Memory, MemoryRef
from .rules import embed, fuse, lexical_scores, order_key, searchable_text, semantic_available


class Ranker:
    """Ranks memories for a text, keeping each memory's embedding while it is unchanged."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[MemoryRef, float], Any] = {}

    def rank(
        self, kept: list[Memory], text: str, mode: str | None = None
    ) -> list[tuple[float, Memory]]:
        """(score, memory) for the memories ``text`` ranks, in no order."""
        mode = _mode(mode)
        texts = [searchable_text(m) for m in kept]
        lexical: list[int] = []
        if mode in ("lexical", "hybrid"):
            scores = lexical_scores(texts, text)
            if mode == "lexical":
                return [(s, m) for s, m in zip(scores, kept, strict=True) if s > 0]
            matched = [i for i, score in enumerate(scores) if score > 0]
            lexical = sorted(matched, key=lambda i: (-scores[i], *order_key(0, kept[i])[1:]))
        if not kept:
            return []
        vectors = self._embeddings(kept)
        similarity = (vectors @ embed([text])[0]).tolist()
        if mode == "semantic":
            return [(float(s), m) for s, m in zip(similarity, kept, strict=True)]
        semantic = sorted(range(len(kept)), key=lambda i: -similarity[i])
        fused = fuse([lexical, semantic])
        return [(score, kept[i]) for i, score in fused.items()]

    def _embeddings(self, memories: list[Memory]) -> Any:
        """Each memory's embedding, computed here (never taken from a peer) and kept
        while the memory is unchanged."""
        import numpy as np

        missing = [m for m in memories if (m.ref, m.updated_at) not in self._vectors]
        if missing:
            for memory, vector in zip(
                missing, embed([searchable_text(m) for m in missing]), strict=True
            ):
                self._vectors[(memory.ref, memory.updated_at)] = vector
        return np.stack([self._vectors[(m.ref, m.updated_at)] for m in memories])


def _mode(mode: Any) -> str:
    if mode is None:
        return "hybrid" if semantic_available() else "lexical"
    if mode not in ("lexical", "semantic", "hybrid"):
        raise FederatedMemoryError(f"mode: lexical, semantic or hybrid, not {mode!r}")
    return str(mode)
