"""Fork proofs: self-contained evidence that an author equivocated."""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from ..errors import InvalidEntry
from ..identity import PeerId
from .entry import Entry
from .ids import DocumentId


@dataclass(frozen=True, slots=True)
class ForkProof:
    """Two different entries signed by one author at one (document, author, seq).

    Self-contained evidence: anyone can check it with :meth:`decode`, with no
    other state. ``first.id < second.id`` so that a fork has one proof.
    """

    first: Entry
    second: Entry

    def __post_init__(self) -> None:
        a, b = self.first, self.second
        if (a.document, a.author, a.seq) != (b.document, b.author, b.seq):
            raise InvalidEntry("a fork proof needs two entries of one document, author and seq")
        if a.id == b.id:
            raise InvalidEntry("a fork proof needs two different entries", **a.where())
        if a.id > b.id:
            raise InvalidEntry("fork proof entries out of order", **a.where())

    @classmethod
    def of(cls, one: Entry, other: Entry) -> ForkProof:
        """The proof of the fork between two entries, in canonical order."""
        return cls(one, other) if one.id < other.id else cls(other, one)

    @property
    def document(self) -> DocumentId:
        return self.first.document

    @property
    def author(self) -> PeerId:
        return self.first.author

    @property
    def seq(self) -> int:
        return self.first.seq

    def encode(self) -> bytes:
        return cbor2.dumps(["fork", self.first.encoded, self.second.encoded], canonical=True)

    @classmethod
    def decode(cls, data: bytes) -> ForkProof:
        """Decode and verify a fork proof (both signatures, same slot, different entries).

        Raises:
            InvalidEntry: anything about it is wrong.
        """
        try:
            items = cbor2.loads(data)
        except Exception as exc:
            raise InvalidEntry(f"malformed fork proof: {exc}") from None
        if not (isinstance(items, list) and len(items) == 3 and items[0] == "fork"):
            raise InvalidEntry("not a fork proof")
        proof = cls.of(Entry.decode(items[1]), Entry.decode(items[2]))
        if proof.encode() != bytes(data):
            raise InvalidEntry("fork proof is not in canonical encoding")
        return proof
