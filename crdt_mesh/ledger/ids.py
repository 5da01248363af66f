"""Document ids: self-certifying names that commit to a policy and an owner."""

from __future__ import annotations

import enum
import functools
import hashlib
from dataclasses import dataclass, field

from ..errors import InvalidDocumentId
from ..identity import PeerId

MAX_NAME_LENGTH = 256
_CLIENT_DOMAIN = b"crdt_mesh/client/v1\x00"
_JS_SAFE_INT = (1 << 53) - 1  # Yjs client ids must stay JavaScript-safe integers


class Policy(enum.Enum):
    """Who may write a document (invariant 4 of docs/architecture.md)."""

    OPEN = "open"  # anyone
    OWNER = "owner"  # the owner alone
    MEMBERS = "members"  # the owner and the members of its signed ACL
    LOCAL = "local"  # this replica alone; never leaves it


_OWNED = frozenset({Policy.OWNER, Policy.MEMBERS})


@dataclass(frozen=True, slots=True, eq=False)
class DocumentId:
    """A self-certifying document id: it commits to its policy and owner.

    The printable form is ``policy:name`` for ``open`` and ``local`` documents and
    ``policy:<owner peer id>:name`` for ``owner`` and ``members`` documents, so a
    document's owner can never be claimed after the fact: it is part of the name.
    """

    policy: Policy
    name: str
    owner: PeerId | None = None
    text: str = field(init=False, repr=False, compare=False)
    key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.policy, Policy):
            raise InvalidDocumentId(f"policy must be a Policy, not {self.policy!r}")
        if not isinstance(self.name, str) or not 0 < len(self.name) <= MAX_NAME_LENGTH:
            raise InvalidDocumentId(f"a document name is 1..{MAX_NAME_LENGTH} characters")
        if not self.name.isprintable():
            raise InvalidDocumentId(f"document name {self.name!r} has unprintable characters")
        if (self.policy in _OWNED) != (self.owner is not None):
            raise InvalidDocumentId(
                f"{self.policy.value} documents {'need' if self.policy in _OWNED else 'have no'}"
                " owner"
            )
        if self.owner is not None and not isinstance(self.owner, PeerId):
            raise InvalidDocumentId("owner must be a PeerId")
        owner = f"{self.owner}:" if self.owner is not None else ""
        text = f"{self.policy.value}:{owner}{self.name}"
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "key", hashlib.blake2b(text.encode(), digest_size=16).digest())

    def __str__(self) -> str:
        return self.text

    # The printable form is canonical, so it stands for the whole id (and a str
    # caches its hash: ids are dict keys on every hot path).
    def __eq__(self, other: object) -> bool:
        return isinstance(other, DocumentId) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    @classmethod
    def parse(cls, text: str) -> DocumentId:
        """Parse the printable form.

        Raises:
            InvalidDocumentId: ``text`` is not a document id.
        """
        return _parse_document(text) if isinstance(text, str) else cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> DocumentId:
        """Parse the printable form.

        Raises:
            InvalidDocumentId: ``text`` is not a document id.
        """
        if not isinstance(text, str):
            raise InvalidDocumentId(f"a document id is a str, not {type(text).__name__}")
        policy_text, sep, rest = text.partition(":")
        try:
            policy = Policy(policy_text)
        except ValueError:
            raise InvalidDocumentId(f"unknown policy in document id {text!r}") from None
        if not sep:
            raise InvalidDocumentId(f"document id {text!r} has no name")
        if policy not in _OWNED:
            return cls(policy, rest)
        owner_text, sep, name = rest.partition(":")
        try:
            owner = PeerId.parse(owner_text)
        except ValueError:
            raise InvalidDocumentId(f"bad owner in document id {text!r}") from None
        return cls(policy, name, owner)


@functools.lru_cache(maxsize=4096)
def _parse_document(text: str) -> DocumentId:
    """:meth:`DocumentId._parse`, remembered for ids parsed lately (a refusal raises:
    it is not remembered)."""
    return DocumentId._parse(text)


def client_id_for(document: DocumentId, author: PeerId) -> int:
    """The Yrs client id that ``author`` writes with in ``document``.

    Derived from the key, so it needs no declaration that could be forged, and
    per document, so one author's clocks in one document say nothing of another.
    """
    return _client_id(document.key, author.key)


@functools.lru_cache(maxsize=4096)
def _client_id(document_key: bytes, author_key: bytes) -> int:
    """:func:`client_id_for` by keys, remembered: every update ingested is checked
    against its author's client id, and a feed's entries come in runs."""
    digest = hashlib.blake2b(_CLIENT_DOMAIN + document_key + author_key, digest_size=8).digest()
    return int.from_bytes(digest, "big") & _JS_SAFE_INT
