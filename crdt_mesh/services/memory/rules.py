"""Federated memory's pure rules: document names, record codecs, encryption at rest,
filters and ranking. No replica, no clock."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import nacl.bindings
import nacl.exceptions

from ...identity import PeerId
from ...ledger import DocumentId, Policy
from .model import FORGOTTEN, PREFIX, FederatedMemoryError, Memory, MemoryPrivacyLevel, MemoryRef

_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MEMORY_ID = re.compile(r"[0-9a-f]{16}")
_AT_REST_DOMAIN = b"crdt_mesh/memory-at-rest/v1"
_TAG = re.compile(r"[^\s:,]{1,64}")
MAX_CONTENT = 64 * 1024  # bytes of UTF-8 in one memory
MAX_TAGS = 32


_KINDS = {
    "team": MemoryPrivacyLevel.TEAM,
    "org": MemoryPrivacyLevel.ORGANIZATION,
    "enc": MemoryPrivacyLevel.ENCRYPTED,
}


@dataclass(frozen=True, slots=True)
class Scope:
    """What a memory document's name says: its level, its group, its id."""

    privacy: MemoryPrivacyLevel
    admin: PeerId | None
    group: str | None
    id: str
    forgotten: bool

    @property
    def group_kind(self) -> str:
        """``organization`` or ``channel``: the kind of group an ``admin``'s memory is of."""
        return "organization" if self.privacy is MemoryPrivacyLevel.ORGANIZATION else "channel"


def check_group_name(name: Any, what: str) -> str:
    """A channel's or organization's name: 1..64 of letters, digits, ``.``, ``_``, ``-``."""
    if not isinstance(name, str) or not _GROUP_NAME.fullmatch(name):
        raise FederatedMemoryError(
            f"{what}: 1 to 64 letters, digits, '.', '_' or '-' (starting with a letter or"
            f" digit), not {name!r}"
        )
    return name


def channel_document(admin: PeerId, name: str) -> DocumentId:
    return DocumentId(Policy.MEMBERS, f"{PREFIX}channel:{name}", admin)


def organization_document(admin: PeerId, name: str) -> DocumentId:
    return DocumentId(Policy.MEMBERS, f"{PREFIX}organization:{name}", admin)


def is_memorys(document: DocumentId) -> bool:
    """Whether ``document`` may be one of memory's (memories, groups, lockboxes)."""
    return document.name.startswith(PREFIX)


def group_of(document: DocumentId) -> tuple[str, str] | None:
    """(``channel`` or ``organization``, name) of a group's members document."""
    if document.policy is not Policy.MEMBERS or not document.name.startswith(PREFIX):
        return None
    kind, _, name = document.name[len(PREFIX) :].partition(":")
    if kind in ("channel", "organization") and _GROUP_NAME.fullmatch(name):
        return kind, name
    return None


def new_memory_id() -> str:
    return os.urandom(8).hex()


def memory_document(
    author: PeerId,
    privacy: MemoryPrivacyLevel,
    memory_id: str,
    admin: PeerId | None = None,
    group: str | None = None,
) -> DocumentId:
    """The document one memory lives in (its author's section)."""
    if privacy is MemoryPrivacyLevel.PRIVATE:
        return DocumentId(Policy.LOCAL, f"{PREFIX}private:{memory_id}")
    if privacy is MemoryPrivacyLevel.PUBLIC:
        return DocumentId(Policy.OWNER, f"{PREFIX}public:{memory_id}", author)
    if privacy is MemoryPrivacyLevel.ENCRYPTED and admin is None:
        return DocumentId(Policy.OWNER, f"{PREFIX}enc:{memory_id}", author)  # chosen readers
    kind = {
        MemoryPrivacyLevel.TEAM: "team",
        MemoryPrivacyLevel.ORGANIZATION: "org",
        MemoryPrivacyLevel.ENCRYPTED: "enc",
    }[privacy]
    return DocumentId(Policy.OWNER, f"{PREFIX}{kind}:{admin}:{group}:{memory_id}", author)


def lockbox_document(creator: PeerId, channel: str) -> DocumentId:
    """Where a channel's admins seal each epoch key to each member (its ACL: the admins;
    anyone may carry it)."""
    return DocumentId(Policy.MEMBERS, f"{PREFIX}lockbox:{channel}", creator)


def lockbox_of(document: DocumentId) -> str | None:
    """The channel a lockbox document is of (None: not a lockbox)."""
    if document.policy is not Policy.MEMBERS or not document.name.startswith(f"{PREFIX}lockbox:"):
        return None
    name = document.name[len(f"{PREFIX}lockbox:") :]
    return name if _GROUP_NAME.fullmatch(name) else None


def forget_document(memory: DocumentId) -> DocumentId:
    """Where a memory's author records that it is forgotten (read as the memory is)."""
    assert memory.owner is not None
    return DocumentId(Policy.OWNER, memory.name + FORGOTTEN, memory.owner)


def memory_of_forget(forget: DocumentId) -> DocumentId:
    return DocumentId(forget.policy, forget.name[: -len(FORGOTTEN)], forget.owner)


def scope_of(document: DocumentId) -> Scope | None:
    """The scope a memory (or forget) document's name gives; None: not one of ours."""
    name = document.name
    if not name.startswith(PREFIX):
        return None
    forgotten = name.endswith(FORGOTTEN)
    parts = (name[: -len(FORGOTTEN)] if forgotten else name).split(":")
    if not _MEMORY_ID.fullmatch(parts[-1]):
        return None
    kind = parts[1]
    if kind == "private" and len(parts) == 3 and document.policy is Policy.LOCAL:
        return Scope(MemoryPrivacyLevel.PRIVATE, None, None, parts[2], forgotten)
    if document.policy is not Policy.OWNER:
        return None
    if kind == "public" and len(parts) == 3:
        return Scope(MemoryPrivacyLevel.PUBLIC, None, None, parts[2], forgotten)
    if kind == "enc" and len(parts) == 3:
        return Scope(MemoryPrivacyLevel.ENCRYPTED, None, None, parts[2], forgotten)
    if kind in _KINDS and len(parts) == 5 and _GROUP_NAME.fullmatch(parts[3]):
        try:
            admin = PeerId.parse(parts[2])
        except ValueError:
            return None
        return Scope(_KINDS[kind], admin, parts[3], parts[4], forgotten)
    return None


# -- records -------------------------------------------------------------------------------


def check_content(content: Any) -> str:
    if not isinstance(content, str):
        raise FederatedMemoryError(f"content: a str, not {type(content).__name__}")
    if not content.strip():
        raise FederatedMemoryError("content: a memory says something (not empty)")
    if len(content.encode()) > MAX_CONTENT:
        raise FederatedMemoryError(f"content: at most {MAX_CONTENT} bytes of UTF-8")
    return content


def check_tags(tags: Any) -> tuple[str, ...]:
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise FederatedMemoryError(f"tags: a list of strings, not {tags!r}")
    out = tuple(dict.fromkeys(tags))
    if len(out) > MAX_TAGS or not all(isinstance(t, str) and _TAG.fullmatch(t) for t in out):
        raise FederatedMemoryError(
            f"tags: at most {MAX_TAGS} strings of 1..64 characters without spaces, ':' or ','"
        )
    return out


def check_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise FederatedMemoryError(f"metadata: a mapping with str keys, not {metadata!r}")
    try:
        cbor2.dumps(dict(metadata), canonical=True)
    except Exception as exc:
        raise FederatedMemoryError(f"metadata: plain values only ({exc})") from None
    return dict(metadata)


def record(
    content: str, tags: Sequence[str], metadata: Mapping[str, Any], created: float, updated: float
) -> dict[str, Any]:
    return {
        "content": content,
        "tags": list(tags),
        "metadata": dict(metadata),
        "created_at": float(created),
        "updated_at": float(updated),
    }


def at_rest_key(seed: bytes) -> bytes:
    """The key private memories are sealed with on disk: derived from the identity."""
    return hashlib.blake2b(seed, key=_AT_REST_DOMAIN, digest_size=32).digest()


def seal(key: bytes, document: DocumentId, value: Mapping[str, Any]) -> bytes:
    """XChaCha20-Poly1305 of the record, bound to its document (nonce + box)."""
    nonce = os.urandom(24)
    box = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        cbor2.dumps(dict(value), canonical=True), document.text.encode(), nonce, key
    )
    return nonce + box


def unseal(key: bytes, document: DocumentId, sealed: Any) -> dict[str, Any] | None:
    try:
        raw = bytes(sealed)
        plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            raw[24:], document.text.encode(), raw[:24], key
        )
        value = cbor2.loads(plain)
    except (ValueError, TypeError, nacl.exceptions.CryptoError, cbor2.CBORDecodeError):
        return None
    return value if isinstance(value, dict) else None


def parse_memory(
    ref: MemoryRef, author: PeerId, scope: Scope, value: Any, organization: str | None
) -> Memory | None:
    """A memory from its stored record; None if the record is malformed."""
    if not isinstance(value, Mapping):
        return None
    try:
        content = check_content(value["content"])
        tags = check_tags(value.get("tags") or ())
        metadata = check_metadata(value.get("metadata"))
        created, updated = float(value["created_at"]), float(value["updated_at"])
    except (FederatedMemoryError, KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(created) and math.isfinite(updated)):
        return None
    grouped = (MemoryPrivacyLevel.TEAM, MemoryPrivacyLevel.ENCRYPTED)
    channel = scope.group if scope.privacy in grouped else None
    topic = value.get("channel")
    if scope.privacy is MemoryPrivacyLevel.PUBLIC and isinstance(topic, str):
        channel = topic if _GROUP_NAME.fullmatch(topic) else None  # posted to a topic
    if scope.privacy is MemoryPrivacyLevel.ORGANIZATION:
        organization = scope.group
    return Memory(
        ref, author, scope.privacy, content, tags, channel, organization, metadata, created, updated
    )


# -- search --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """What a query keeps: each filter given narrows (AND); within one, any value matches."""

    privacy: frozenset[MemoryPrivacyLevel] | None = None
    channels: frozenset[str] | None = None
    organizations: frozenset[str] | None = None
    authors: frozenset[PeerId] | None = None
    tags: frozenset[str] | None = None
    since: float | None = None
    until: float | None = None

    @property
    def narrows(self) -> bool:
        """Whether any filter is given (else every memory is kept)."""
        return any(
            value is not None
            for value in (
                self.privacy,
                self.channels,
                self.organizations,
                self.authors,
                self.tags,
                self.since,
                self.until,
            )
        )

    def keeps(self, memory: Memory) -> bool:
        return (
            (self.privacy is None or memory.privacy in self.privacy)
            and (self.channels is None or memory.channel in self.channels)
            and (self.organizations is None or memory.organization in self.organizations)
            and (self.authors is None or memory.author in self.authors)
            and (self.tags is None or not self.tags.isdisjoint(memory.tags))
            and (self.since is None or memory.created_at >= self.since)
            and (self.until is None or memory.created_at <= self.until)
        )


def tag_score(memory: Memory, tags: frozenset[str] | None) -> float:
    return float(len(tags.intersection(memory.tags))) if tags else 0.0


def order_key(score: float, memory: Memory) -> tuple[float, float, str]:
    """Higher score first, then the newer, then by name: one order on every replica."""
    return (-score, -memory.updated_at, str(memory.ref))


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError:
        raise FederatedMemoryError(
            "text queries rank with bm25s: pip install 'crdt_mesh[search]'"
        ) from None
    return bm25s


class LexicalIndex:
    """A BM25 index over texts (bm25s, the ``search`` extra).

    Raises:
        FederatedMemoryError: bm25s is not installed.
    """

    def __init__(self, texts: Sequence[str]) -> None:
        bm25s = _bm25s()
        self._size = len(texts)
        self._retriever = bm25s.BM25()
        if texts:
            corpus = bm25s.tokenize(list(texts), stopwords="en", show_progress=False)
            self._retriever.index(corpus, show_progress=False)

    def scores(self, query: str) -> Any:
        """The BM25 score of every text for ``query`` (numpy, 0 where no word matches)."""
        import numpy as np

        bm25s = _bm25s()
        words = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        if not words or not self._size:
            return np.zeros(self._size, dtype=np.float32)
        return np.asarray(self._retriever.get_scores(list(words)), dtype=np.float32)


def lexical_scores(texts: Sequence[str], query: str) -> list[float]:
    """BM25 scores of ``texts`` for ``query``."""
    return [float(s) for s in LexicalIndex(texts).scores(query)]


def searchable_text(memory: Memory) -> str:
    return " ".join([memory.content, *memory.tags])


# -- semantic ranking ----------------------------------------------------------------------

_EMBEDDER: Any = None
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al., 2009)


def _embedder() -> Any:
    """The local embedding model, loaded once from the weights inside its wheel.

    Raises:
        FederatedMemoryError: wordllama (the ``search`` extra) is not installed.
    """
    global _EMBEDDER
    if _EMBEDDER is None:
        root = logging.getLogger()
        level, handlers = root.level, list(root.handlers)
        try:
            import wordllama
        except ImportError:
            raise FederatedMemoryError(
                "semantic queries embed with wordllama: pip install 'crdt_mesh[search]'"
            ) from None
        finally:  # wordllama configures the root logger when imported: undo it
            root.setLevel(level)
            root.handlers[:] = handlers
        from pathlib import Path

        # its weights and tokenizer ship in the wheel: load them there, never download
        folder = Path(wordllama.__file__).parent
        _EMBEDDER = wordllama.WordLlama.load(cache_dir=folder, disable_download=True)
    return _EMBEDDER


def semantic_available() -> bool:
    try:
        _embedder()
    except FederatedMemoryError:
        return False
    return True


def embed(texts: Sequence[str]) -> Any:
    """Unit-length embeddings (numpy, one row per text) from the local model."""
    import numpy as np

    vectors = np.asarray(_embedder().embed(list(texts)), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion: each item scores the sum of 1 / (k + rank) over the
    rankings it appears in (rank from 1)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return scores


# -- checks of arguments ---------------------------------------------------------------


def check_level(privacy: Any) -> MemoryPrivacyLevel:
    try:
        return MemoryPrivacyLevel(privacy)
    except ValueError:
        known = [p.value for p in MemoryPrivacyLevel]
        raise FederatedMemoryError(f"privacy: one of {known}, not {privacy!r}") from None


def check_levels(privacy: Any) -> frozenset[MemoryPrivacyLevel] | None:
    if privacy is None:
        return None
    if isinstance(privacy, str):
        return frozenset({check_level(privacy)})
    return frozenset(check_level(p) for p in privacy)


def check_names(names: Iterable[str] | None, what: str) -> frozenset[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        raise FederatedMemoryError(f"{what}: a list of names, not the one str {names!r}")
    return frozenset(check_group_name(n, what) for n in names)


def check_peers(peers: Iterable[PeerId], what: str) -> list[PeerId]:
    if isinstance(peers, str | bytes) or not isinstance(peers, Iterable):
        raise FederatedMemoryError(f"{what}: a list of PeerIds, not {peers!r}")
    out = list(peers)
    if not all(isinstance(p, PeerId) for p in out):
        raise FederatedMemoryError(f"{what}: PeerIds only")
    return out


def check_time(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FederatedMemoryError(f"{what}: a time in seconds, not {value!r}")
    return float(value)


def make_filters(
    privacy: Any,
    channels: Any,
    organizations: Any,
    authors: Any,
    tags: Any,
    since: Any,
    until: Any,
) -> Filters:
    """The filters of a query, each argument checked (a FederatedMemoryError names it)."""
    return Filters(
        privacy=check_levels(privacy),
        channels=check_names(channels, "channels"),
        organizations=check_names(organizations, "organizations"),
        authors=frozenset(check_peers(authors, "authors")) if authors is not None else None,
        tags=frozenset(check_tags(tags)) if tags is not None else None,
        since=check_time(since, "since"),
        until=check_time(until, "until"),
    )
