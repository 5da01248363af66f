"""Admission of incoming entries: checks, the pending area, forks, ACL cuts.

Everything here decides; nothing here commits. :class:`_Staging` holds the
heads, ACLs and fork proofs as they will be once committed, so that a batch is
judged as a whole in feed order, and the replica publishes them only after the
LMDB commit.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING

from ..errors import (
    ChainError,
    ClientIdViolation,
    ForkDetected,
    InvalidEntry,
    InvalidSignature,
    InvalidUpdate,
    MeshError,
    PendingOverflow,
    PolicyViolation,
)
from ..ledger import ZERO_HASH, Acl, DocumentId, Entry, EntryKind, ForkProof, Policy, client_id_for
from .records import FeedKey, Head, IngestReport, Rejection
from .state import feed_key
from .yupdate import check_update

if TYPE_CHECKING:
    from ..store import Store, Writer
    from .state import LedgerState

_NO_LIMIT = 1 << 63


def _checked_proof(item: ForkProof | bytes) -> ForkProof:
    if isinstance(item, ForkProof):
        item.first.verify()
        item.second.verify()
        return item
    return ForkProof.decode(bytes(item))


def _feed_order(entry: Entry) -> tuple[bytes, bytes, int]:
    return entry.document.key, entry.author.key, entry.seq


def _accepted(
    chunks: Iterable[list[Entry | Rejection] | None], report: IngestReport
) -> Iterator[Entry | None]:
    """The verified entries of each chunk, in feed order within it; reject the others.
    A pause (None) passes through."""
    for chunk in chunks:
        if chunk is None:
            yield None
            continue
        good: list[Entry] = []
        for result in chunk:
            if isinstance(result, Entry):
                good.append(result)
            else:
                report.rejected.append(Rejection(result.item, result.error))
        good.sort(key=_feed_order)
        yield from good


def _decode_chunk(items: list[Entry | bytes], report: IngestReport) -> list[Entry]:
    """The entries among ``items``, decoded but not yet verified; the rest rejected."""
    out: list[Entry] = []
    for item in items:
        try:
            out.append(item if isinstance(item, Entry) else Entry.decode(item, verify=False))
        except MeshError as exc:
            report.rejected.append(Rejection(item, exc))
        except (TypeError, ValueError) as exc:
            report.rejected.append(Rejection(item, InvalidEntry(f"not an entry: {exc}")))
    return out


def _check_chunk(entries: list[Entry]) -> list[Entry | Rejection]:
    """Each entry if it is signed by its author and its update writes as its author only."""
    out: list[Entry | Rejection] = []
    for entry in entries:
        try:
            entry.verify()
        except MeshError as exc:
            out.append(Rejection(entry, exc))
            continue
        out.append(_check_binding(entry))
    return out


def _check_binding(entry: Entry) -> Entry | Rejection:
    """The entry if its update writes structs of its author's client id only (invariant 3)."""
    if entry.kind is EntryKind.UPDATE:
        try:
            check_update(entry.payload, client_id_for(entry.document, entry.author))
        except (ClientIdViolation, InvalidUpdate) as exc:
            return Rejection(entry, type(exc)(str(exc), **entry.where()))
    return entry


def _bad_signature(entry: Entry) -> InvalidSignature:
    return InvalidSignature("bad signature", **entry.where())


_ADMITTED, _REJECTED, _IGNORED, _WAIT = object(), object(), object(), object()


class _Staging:
    """One ingest (or owner ACL write) being decided, before it is committed.

    Holds the heads, ACLs and fork proofs as they will be once committed, so that
    a batch is judged as a whole in feed order; nothing touches the replica's
    state until :meth:`publish`, after the LMDB commit.
    """

    def __init__(
        self, state: LedgerState, store: Store, *, now: float, source: Hashable = None
    ) -> None:
        self.state = state
        self.store = store
        self.source = source  # who sent what is offered: charged for what must wait
        self.now = now
        self.heads: dict[FeedKey, Head] = {}
        self.acls: dict[DocumentId, list[tuple[int, Acl]]] = {}
        self.forks: dict[FeedKey, ForkProof] = {}
        self.admitted: list[Entry] = []
        #: ids admitted here, by (document key, author key, seq): keys hashed in C
        self.new_ids: dict[tuple[bytes, bytes, int], bytes] = {}
        self.lowered: dict[FeedKey, Head | None] = {}
        self.rebuild: set[DocumentId] = set()
        self.touched: set[FeedKey] = set()
        #: members documents whose owner's feed grew: their waiting members are judged again
        self.owners_grew: set[DocumentId] = set()
        self.voided: dict[FeedKey, int] = {}

    @property
    def dirty(self) -> bool:
        return bool(self.admitted or self.forks or self.lowered)

    # Views through the staging overlay. A feed key is a tuple of two ids, hashed in
    # Python: each lookup costs about a microsecond, and these run for every entry
    # ingested, so an empty overlay (the usual case for lowered heads and forks) is
    # not asked.
    def head(self, feed: FeedKey) -> Head | None:
        staged = self.heads.get(feed)  # (staged heads are never None)
        if staged is not None:
            return staged
        if self.lowered and feed in self.lowered:
            return self.lowered[feed]
        return self.state.heads.get(feed)

    def acl_list(self, doc: DocumentId) -> list[tuple[int, Acl]]:
        return self.acls.get(doc) or self.state.acls.get(doc, [])

    def latest_acl(self, doc: DocumentId) -> Acl:
        acls = self.acl_list(doc)
        return acls[-1][1] if acls else Acl()

    def acl_at(self, doc: DocumentId, seq: int) -> Acl:
        found = Acl()
        for acl_seq, acl in self.acl_list(doc):
            if acl_seq > seq:
                break
            found = acl
        return found

    def fork(self, feed: FeedKey) -> ForkProof | None:
        proof = self.forks.get(feed) if self.forks else None
        if proof is None and self.state.forks:
            proof = self.state.forks.get(feed)
        return proof

    def limit(self, feed: FeedKey) -> int:
        """The last seq of ``feed`` that may count (a fork freezes it; an ACL may cut it)."""
        proof = self.fork(feed)
        limit = proof.seq - 1 if proof is not None else _NO_LIMIT
        if feed[0].policy is Policy.MEMBERS:
            limit = min(limit, self.latest_acl(feed[0]).cuts.get(feed[1], _NO_LIMIT))
        return limit

    def id_at(self, feed: FeedKey, seq: int) -> bytes | None:
        head = self.head(feed)
        if head is not None and head.seq == seq:
            return head.id
        new_id = self.new_ids.get((feed[0].key, feed[1].key, seq))
        if new_id is not None:
            return new_id
        with self.store.read() as txn:
            value = txn.entry(feed_key(*feed), seq)
        return Entry.from_store(value).id if value is not None else None

    # deciding
    def offer(self, entry: Entry, report: IngestReport) -> None:
        feed = (entry.document, entry.author)
        if entry.document.policy is Policy.LOCAL:
            report.rejected.append(
                Rejection(
                    entry,
                    PolicyViolation(
                        "local documents never accept entries from elsewhere", **entry.where()
                    ),
                )
            )
            return
        head = self.head(feed)
        if head is not None and entry.seq <= head.seq:
            known = self.id_at(feed, entry.seq)
            if known == entry.id:
                report.duplicates += 1
            elif known is not None:
                self._record_fork(entry, known, report)
            return
        proof = self.fork(feed)
        if proof is not None and entry.seq >= proof.seq:
            report.ignored += 1  # the feed is frozen: nothing from the fork on counts
            return
        pending = self.state.pending
        other = pending.get(feed, entry.seq)
        if other is not None:
            if other.id == entry.id:
                report.duplicates += 1
            else:
                self._fork_found(ForkProof.of(other, entry), entry, report)
            return
        next_seq = head.seq + 1 if head else 1
        if entry.seq == next_seq:
            if not pending.waiting(feed):
                # in order: the usual case, judged at once without the pending area
                if self._judge(feed, head, entry, report) is not _WAIT:
                    return
            else:
                # It fills the gap that others wait behind: judged with them now, so it
                # needs no room (unless it waits itself, for the ACL entry it cites).
                pending.add(feed, entry, self.source, force=True, now=self.now)
                self.touched.add(feed)
                while self._admit_next(feed, report):
                    pass
                if pending.get(feed, entry.seq) is not entry:
                    return
                pending.pop(feed, entry.seq)
        if not pending.add(feed, entry, self.source, now=self.now):
            report.rejected.append(
                Rejection(
                    entry,
                    PendingOverflow(
                        "no room to wait for the entries before it (sent again, it counts)",
                        **entry.where(),
                    ),
                )
            )
            return
        self.touched.add(feed)

    def _record_fork(self, entry: Entry, known_id: bytes, report: IngestReport) -> None:
        known = next((a for a in self.admitted if a.id == known_id), None)
        if known is None:
            with self.store.read() as txn:
                value = txn.entry(feed_key(entry.document, entry.author), entry.seq)
            assert value is not None  # below the head: stored
            known = Entry.from_store(value)
        self._fork_found(ForkProof.of(known, entry), entry, report)

    def _fork_found(self, proof: ForkProof, entry: Entry, report: IngestReport) -> None:
        """``entry`` revealed a fork: keep the proof, refuse the entry."""
        self.add_proof(proof, report)
        error = ForkDetected("author signed two entries at this seq", proof=proof, **entry.where())
        report.rejected.append(Rejection(entry, error))

    def add_proof(self, proof: ForkProof, report: IngestReport) -> None:
        feed = (proof.document, proof.author)
        existing = self.fork(feed)
        if existing is not None and existing.seq <= proof.seq:
            return
        if proof.document.policy is Policy.LOCAL:
            report.rejected.append(
                Rejection(
                    proof,
                    PolicyViolation(
                        "fork proofs of local documents are not accepted", **proof.first.where()
                    ),
                )
            )
            return
        self.forks[feed] = proof
        report.forks.append(proof)
        self._lower(feed, proof.seq - 1)
        self._drop_pending(feed, proof.seq - 1)

    def _lower(self, feed: FeedKey, limit: int) -> None:
        head = self.head(feed)
        if head is None or head.seq <= limit:
            return
        if limit == 0:
            new: Head | None = None
        else:
            new_id = self.id_at(feed, limit)
            assert new_id is not None
            new = Head(limit, new_id)
        self.heads.pop(feed, None)
        self.lowered[feed] = new
        self.voided[feed] = min(limit, self.voided.get(feed, limit))
        self.admitted = [
            e for e in self.admitted if (e.document, e.author) != feed or e.seq <= limit
        ]
        self.rebuild.add(feed[0])

    def _drop_pending(self, feed: FeedKey, limit: int) -> None:
        self.state.pending.drop_above(feed, limit)

    def drain(self, report: IngestReport) -> None:
        """Admit every pending entry that now extends its feed, until none does."""
        progress = True
        while progress:
            progress = False
            for document in self.owners_grew:
                self.touched.update(self.state.pending.feeds_of(document))
            self.owners_grew.clear()
            for feed in list(self.touched):
                while self._admit_next(feed, report):
                    progress = True

    def _admit_next(self, feed: FeedKey, report: IngestReport) -> bool:
        """Judge the pending entry that would extend ``feed``; True if it was admitted."""
        pending = self.state.pending
        if not pending.waiting(feed):
            return False
        head = self.head(feed)
        next_seq = head.seq + 1 if head else 1
        entry = pending.get(feed, next_seq)
        if entry is None:
            return False
        verdict = self._judge(feed, head, entry, report)
        if verdict is _WAIT:
            return False
        pending.pop(feed, next_seq)
        if verdict is _IGNORED:
            self._drop_pending(feed, self.limit(feed))
        return verdict is _ADMITTED

    def _judge(
        self, feed: FeedKey, head: Head | None, entry: Entry, report: IngestReport
    ) -> object:
        """Admit, refuse or hold ``entry``, the next entry of ``feed``."""
        try:
            if entry.seq > self.limit(feed):
                report.ignored += 1
                return _IGNORED
            if entry.prev != (head.id if head else ZERO_HASH):
                raise ChainError("prev does not hash the previous entry", **entry.where())
            if not self._authorized(entry):
                return _WAIT  # for the owner's ACL entry it cites
            self._check_content(entry)
        except InvalidEntry as exc:
            report.rejected.append(Rejection(entry, exc))
            return _REJECTED
        self.admitted.append(entry)
        self.heads[feed] = Head(entry.seq, entry.id)
        if self.lowered:
            self.lowered.pop(feed, None)
        self.new_ids[(entry.document.key, entry.author.key, entry.seq)] = entry.id
        if entry.kind is EntryKind.ACL:
            self._admit_acl(entry)
        elif entry.document.policy is Policy.MEMBERS and entry.author == entry.document.owner:
            # members' entries cite the owner's head, an update as well as an ACL entry:
            # those waiting for it are judged again (in drain: once per document)
            self.owners_grew.add(entry.document)
        return _ADMITTED

    def _authorized(self, entry: Entry) -> bool:
        doc = entry.document
        if doc.policy is Policy.OPEN:
            return True
        if entry.author == doc.owner:
            return True
        if doc.policy is Policy.OWNER:
            raise PolicyViolation("only the owner writes this document", **entry.where())
        # members: the entry cites the owner's ACL it relies on
        if entry.kind is not EntryKind.UPDATE:
            raise PolicyViolation("only the owner changes the member list", **entry.where())
        if entry.acl == 0:
            raise PolicyViolation("a member's entry must cite the owner's ACL", **entry.where())
        owner_head = self.head((doc, doc.owner))  # type: ignore[arg-type]
        if owner_head is None or owner_head.seq < entry.acl:
            self.touched.add((doc, doc.owner))  # type: ignore[arg-type]
            return False
        if entry.author not in self.acl_at(doc, entry.acl).members:
            raise PolicyViolation(
                f"{entry.author.short} is not a member as of ACL {entry.acl}", **entry.where()
            )
        return True

    def _check_content(self, entry: Entry) -> None:
        """ACL entries: owner of a members document, well formed. (Updates were
        checked for client-id binding with their signature, in ``_check_chunk``.)"""
        doc = entry.document
        if entry.kind is EntryKind.ACL:
            if doc.policy is not Policy.MEMBERS or entry.author != doc.owner:
                raise PolicyViolation(
                    "ACL entries belong to the owner of a members document", **entry.where()
                )
            Acl.decode(entry.payload)

    def _admit_acl(self, entry: Entry) -> None:
        doc = entry.document
        acl = Acl.decode(entry.payload)
        self.acls[doc] = [*self.acl_list(doc), (entry.seq, acl)]
        for member, cut in acl.cuts.items():
            feed = (doc, member)
            self._lower(feed, cut)
            self._drop_pending(feed, cut)
        # entries of members may have waited for this ACL
        self.touched.update(self.state.pending.feeds_of(doc))

    def write(self, txn: Writer) -> None:
        """Stage what was decided (the replica commits it, then calls :meth:`publish`)."""
        for feed, limit in self.voided.items():  # kept, but out of the feed
            txn.void_after(feed_key(*feed), limit)
        txn.put_entries(self.admitted, self.state.docs)
        for entry in self.admitted:
            if entry.kind is EntryKind.ACL:
                txn.put_acl(entry.document.key, entry.seq, entry.payload)
        for feed, proof in self.forks.items():
            txn.put_fork_proof(feed_key(*feed), proof.encode())
        for doc_id in self.rebuild:
            txn.delete_snapshot(doc_id.key)

    def publish(self) -> None:
        """Make the committed decisions the ledger state."""
        heads = self.state.heads
        for feed, lowered in self.lowered.items():
            if lowered is None:
                heads.pop(feed, None)
            else:
                heads[feed] = lowered
        heads.update(self.heads)
        self.state.acls.update(self.acls)
        forks = self.state.forks
        forks.update(self.forks)
        frozen = list(self.forks)
        if forks:  # entries from before a fork known earlier: their head is frozen too
            frozen.extend(feed for feed in self.heads if feed in forks)
        for feed in frozen:
            head = heads.get(feed)
            if head is not None:
                heads[feed] = Head(head.seq, head.id, frozen=True)
