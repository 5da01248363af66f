"""The ledger's state as a replica knows it: documents, feed heads, fork proofs,
ACLs, and the entries waiting for a gap.

One explicit object, owned by the replica and handed to admission: admission
decides against it (through a staging overlay) and the replica publishes into it
after each commit. Nothing else reaches into the replica's privates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..identity import PeerId
from ..ledger import Acl, DocumentId, Entry, ForkProof
from ..store import Reader
from .pending import PendingArea
from .records import FeedHeads, FeedKey, Head


@dataclass(slots=True)
class LedgerState:
    """What a replica holds, in memory (its store holds the entries themselves)."""

    docs: dict[bytes, DocumentId] = field(default_factory=dict)
    heads: FeedHeads = field(default_factory=FeedHeads)
    forks: dict[FeedKey, ForkProof] = field(default_factory=dict)
    acls: dict[DocumentId, list[tuple[int, Acl]]] = field(default_factory=dict)
    pending: PendingArea = field(default_factory=PendingArea)
    #: feeds whose content was purged: their head stays (frozen), their entries are gone
    purged: set[FeedKey] = field(default_factory=set)
    #: grows on every change of heads, forks, ACLs or read rules (for caches)
    version: int = 0

    @classmethod
    def load(cls, reader: Reader, pending: PendingArea) -> LedgerState:
        """The state of a store, read in one transaction."""
        state = cls(pending=pending)
        for key, text in reader.documents():
            state.docs[key] = DocumentId.parse(text)
        for feed, seq, encoded in reader.feed_heads():
            entry_id = Entry.from_store(encoded).id
            state.heads[(state.docs[feed[:16]], PeerId(feed[16:]))] = Head(seq, entry_id)
        for encoded in reader.fork_proofs():
            proof = ForkProof.decode(encoded)
            state.forks[(proof.document, proof.author)] = proof
        for doc_key, seq, payload in reader.acls():
            state.acls.setdefault(state.docs[doc_key], []).append((seq, Acl.decode(payload)))
        for feed, seq, entry_id in reader.purged():
            purged = (state.docs[feed[:16]], PeerId(feed[16:]))
            state.heads[purged] = Head(seq, entry_id, frozen=True)
            state.purged.add(purged)
        for forked in state.forks:
            head = state.heads.get(forked)
            if head is not None:
                state.heads[forked] = Head(head.seq, head.id, frozen=True)
        return state

    def latest_acl(self, document: DocumentId) -> Acl:
        """The owner's latest ACL of a ``members`` document (empty if none)."""
        acls = self.acls.get(document)
        return acls[-1][1] if acls else Acl()


def feed_key(document: DocumentId, author: PeerId) -> bytes:
    """The 48-byte key of a feed in the store."""
    return document.key + author.key


__all__ = ["LedgerState", "feed_key"]
