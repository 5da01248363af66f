"""Values the replica hands out: heads, ingest reports, changes, summaries."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import MeshError
from .identity import PeerId
from .ledger import DocumentId, Entry, ForkProof

FeedKey = tuple[DocumentId, PeerId]


@dataclass(frozen=True, slots=True)
class Head:
    """The last entry of a feed that counts: its seq and id; ``frozen`` after a fork."""

    seq: int
    id: bytes
    frozen: bool = False


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
