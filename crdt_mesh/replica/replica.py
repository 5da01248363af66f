"""The Replica: documents over a signed ledger in an LMDB store.

Synchronous and single-threaded by design (no event loop needed): property
tests drive it directly and the async Mesh calls it from one task. Incoming
entries go through verify -> chain -> policy -> client-id binding -> commit ->
apply (invariants 1-5 of docs/architecture.md); local transactions become one signed
entry each.

Why one module (~980 lines): this is where a store transaction, the ledger
state and the open documents change together, and nowhere else. The rules it
applies live in their own modules (admission, state, pending, document,
verifier); what remains here is the transaction boundaries and short
delegations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import cbor2

from ..arguments import integer, of_type
from ..arguments import path as check_path
from ..errors import (
    ArgumentTypeError,
    ClosedError,
    InvalidEntry,
    LocalError,
    MeshError,
    NotWritable,
    StoreError,
)
from ..identity import Identity, PeerId
from ..ledger import (
    ZERO_HASH,
    Acl,
    DocumentId,
    Entry,
    EntryKind,
    ForkProof,
    Policy,
    seal,
)
from ..store import Durability, Reader, Store, Writer
from .admission import (
    _accepted,
    _bad_signature,
    _check_binding,
    _check_chunk,
    _checked_proof,
    _decode_chunk,
    _Staging,
)
from .document import Document, DocumentHooks
from .pending import PendingArea, PendingLimits
from .records import (
    FeedHeads,
    FeedKey,
    Head,
    IngestReport,
    Rejection,
    ReplicaSummary,
)
from .state import LedgerState, feed_key
from .verifier import VerifierPool, shared_pool

log = logging.getLogger(__name__)

#: ``policy(document, peer)``: may ``peer`` read ``document``? None: no opinion.
ReadPolicy = Callable[[DocumentId, PeerId], bool | None]

#: A document's cached state is rewritten once this many update bytes (or its own
#: size, if larger) were applied since the last snapshot: opening stays O(state).
SNAPSHOT_MIN_DEBT = 64 * 1024
#: Entries per request to a verifier process, and the batch size worth one.
_VERIFY_CHUNK = 64
_POOL_MIN_BATCH = 512
#: The batch size worth *starting* the helpers for: its checks in-process take
#: about 0.25 s, more than starting a helper costs (0.2 s of CPU each). Smaller
#: batches use them once started; 40 nodes on 2 cores that each started two
#: helpers for rounds of a thousand entries spent more CPU starting them than
#: checking signatures.
_POOL_START_BATCH = 4096
#: Digests of the entries committed last that are kept, to know a copy without decoding
#: it (16 bytes each: about 2 MiB with the dict's own cost).
_RECENT_ENTRIES = 16384


def _by_document(entries: Iterable[Entry]) -> dict[DocumentId, list[Entry]]:
    """Entries grouped by document, each group in the order given."""
    by_doc: dict[DocumentId, list[Entry]] = {}
    for entry in entries:
        by_doc.setdefault(entry.document, []).append(entry)
    return by_doc


_INGESTIBLE = (Entry, ForkProof, bytes, bytearray, memoryview)
_FORK_PROOF_START = b"\x83"  # a CBOR array of 3; an entry is an array of 10


def _digest(encoded: bytes | bytearray | memoryview) -> bytes:
    return hashlib.blake2b(encoded, digest_size=16).digest()


def _chunk_bounds(count: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each chunk of a batch of ``count`` handed to the verifier:
    a first chunk of a quarter, so that the helpers start sooner, then full ones."""
    start = 0
    size = _VERIFY_CHUNK // 4
    while start < count:
        yield start, min(start + size, count)
        start += size
        size = _VERIFY_CHUNK


#: Admitted entries per LMDB transaction during one ingest.
_GROUP_COMMIT = 256


class Replica:
    """A peer's replica of the mesh's documents, stored in LMDB at ``path``.

    Use :meth:`open` (or the constructor) and close it (or use ``with``).
    Not thread-safe: use a replica from one thread at a time.

    Args:
        path: the store's directory (created if missing).
        identity: the key this replica signs its entries with.
        durability: :attr:`Durability.FULL` (default) fsyncs every commit.
        map_size: the LMDB map's starting size; it doubles when full.
        clock: seconds since the epoch, for entry timestamps (informative only).
        max_pending: entries that may wait for a missing predecessor, in all.
        pending: byte bounds of the pending area, in all and per source (see
            :class:`~crdt_mesh.PendingLimits`; ``max_pending`` overrides its count).
        verify_processes: helper processes that check signatures of ingest
            batches of 512 entries or more, beside this thread: ``None`` shares one
            per core but one across the process, ``0`` checks everything in this
            thread.
        snapshot_min_debt: update bytes applied before a document's cached state
            is rewritten (it is also rewritten once they exceed its own size).

    Raises:
        StoreError: the store cannot be opened (or is already open, in this process or another).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        identity: Identity,
        *,
        durability: Durability = Durability.FULL,
        map_size: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        max_pending: int | None = None,
        pending: PendingLimits | None = None,
        verify_processes: int | None = None,
        snapshot_min_debt: int = SNAPSHOT_MIN_DEBT,
    ) -> None:
        check_path("path", path)
        of_type("identity", identity, Identity, "an Identity (Identity.generate(), .load(...))")
        of_type("durability", durability, Durability, "a Durability (Durability.FULL ...)")
        integer("map_size", map_size, low=1 << 16)
        if max_pending is not None:
            integer("max_pending", max_pending, low=1)
        if pending is not None:
            of_type("pending", pending, PendingLimits, "PendingLimits or None")
        if verify_processes is not None:
            integer("verify_processes", verify_processes, low=0)
        integer("snapshot_min_debt", snapshot_min_debt, low=0)
        if not callable(clock):
            raise ArgumentTypeError(f"clock: a function returning seconds, not {clock!r}")
        self.identity = identity
        self.peer_id = identity.peer_id
        self._clock = clock
        self._store = Store(path, durability=durability, map_size=map_size)
        limits = pending or PendingLimits()
        if max_pending is not None:
            limits = dataclasses.replace(limits, max_entries=max_pending)
        with self._store.read() as reader:
            self._state = LedgerState.load(reader, PendingArea(limits))
        self._open: dict[DocumentId, Document] = {}
        self._batch: list[tuple[Document, Entry]] | None = None
        self._commit_hooks: list[Callable[[list[Entry]], None]] = []
        #: inputs refused at ingest since the replica opened, by the error's type
        self.rejections: Counter[str] = Counter()
        #: inputs that were entries already held
        self.duplicates = 0
        self._read_policies: list[ReadPolicy] = []
        self._pool: VerifierPool | None = None
        self._recent: OrderedDict[bytes, None] = OrderedDict()  # digests of entries committed
        self._verify_processes = verify_processes
        self._closed = False
        self._document_hooks = DocumentHooks(
            peer_id=self.peer_id,
            heads=self._heads_of,
            check_writable=self._check_writable,
            commit=self._commit_local,
            rebuild=self._rebuild,
            snapshot_min_debt=snapshot_min_debt,
        )

    @classmethod
    def open(cls, path: str | os.PathLike[str], identity: Identity, **options: Any) -> Replica:
        """Open (or create) the replica stored at ``path``. See the constructor's options."""
        return cls(path, identity, **options)

    def __enter__(self) -> Replica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Replica({self.peer_id.short}, {str(self._store.path)!r})"

    @property
    def store(self) -> Store:
        return self._store

    def close(self) -> None:
        """Write due snapshots and close the store. Idempotent."""
        if self._closed:
            return
        try:
            dirty = [d for d in self._open.values() if d._debt]
            if dirty:
                self._store.write(lambda writer: self._put_snapshots(writer, dirty))
        finally:
            self._closed = True
            self._store.close()
            if self._pool is not None:
                self._pool.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")

    # -- documents --------------------------------------------------------------------

    def document(self, name: str | DocumentId, *, policy: Policy = Policy.OPEN) -> Document:
        """Open a document, loading it from its snapshot plus the entries since.

        Args:
            name: a :class:`DocumentId`, its printable form, or a bare name; a bare
                name makes an ``open`` or ``local`` document, or an ``owner`` /
                ``members`` one owned by this replica's identity.
            policy: the policy for a bare name.
        """
        self._check_open()
        doc_id = self._resolve_id(name, policy)
        document = self._open.get(doc_id)
        if document is None:
            document = Document(self._document_hooks, doc_id)
            self._load_document(document)
            self._open[doc_id] = document
        return document

    def is_open(self, document: DocumentId) -> bool:
        """Whether ``document`` is held in memory (opened by :meth:`document`)."""
        return document in self._open

    def release(self, document: DocumentId) -> None:
        """Let an open document go from memory (its entries stay in the store; it loads
        again when next asked for). A :class:`Document` object for it that someone
        still holds stops following new entries: ask :meth:`document` again."""
        self._open.pop(document, None)

    def _resolve_id(self, name: str | DocumentId, policy: Policy) -> DocumentId:
        if isinstance(name, DocumentId):
            return name
        if not isinstance(name, str):
            raise ArgumentTypeError(
                f"name: a document name is a str or DocumentId, not {type(name).__name__}"
            )
        if not isinstance(policy, Policy):
            raise ArgumentTypeError(f"policy: a Policy (Policy.OPEN ...), not {policy!r}")
        if ":" in name and name.partition(":")[0] in {p.value for p in Policy}:
            return DocumentId.parse(name)
        owned = policy in (Policy.OWNER, Policy.MEMBERS)
        return DocumentId(policy, name, self.peer_id if owned else None)

    def has_document(self, document: DocumentId) -> bool:
        """Whether this replica holds entries of ``document``."""
        return document.key in self._state.docs

    def document_by_key(self, key: bytes) -> DocumentId | None:
        """The document whose 16-byte key is ``key``, if this replica holds entries of it."""
        return self._state.docs.get(key)

    def documents(self) -> list[DocumentId]:
        """Every document this replica has entries of."""
        return sorted(self._state.docs.values(), key=lambda d: d.text)

    def _load_document(self, document: Document) -> None:
        doc_id = document.id
        covered: dict[bytes, int] = {}
        unresolved: list[tuple[bytes, int]] = []
        with self._store.read() as txn:
            snapshot = txn.snapshot(doc_id.key)
            if snapshot is not None:
                state, covered, unresolved = cbor2.loads(snapshot)
                document._applying = True
                try:
                    document._ydoc.apply_update(state)
                finally:
                    document._applying = False
                document._snapshot_size = len(state)
            replay = [self._entry_at(txn, doc_id, PeerId(a), s) for a, s in unresolved]
            for author in self._state.heads.authors_of(doc_id):
                if (doc_id, author) in self._state.purged:
                    continue
                head = self._state.heads[(doc_id, author)]
                replay.extend(
                    self._read_feed(txn, doc_id, author, covered.get(author.key, 0) + 1, head.seq)
                )
        document._debt = 0
        document._apply(replay, check=True)

    def _rebuild(self, document: Document) -> None:
        """Replace the in-memory document by one rebuilt from all committed entries."""
        document._ydoc = document._new_ydoc()
        document._unresolved.clear()
        document._captured.clear()
        self._load_document(document)

    # -- local writes -----------------------------------------------------------------

    def _heads_of(self, doc_id: DocumentId) -> dict[PeerId, Head]:
        heads = self._state.heads
        return {author: heads[(doc_id, author)] for author in heads.authors_of(doc_id)}

    def _check_writable(self, doc_id: DocumentId) -> None:
        self._check_open()
        me = self.peer_id
        if (doc_id, me) in self._state.forks:
            raise NotWritable(f"{doc_id.text}: this identity's feed is frozen by a fork proof")
        if (doc_id, me) in self._state.purged:
            raise NotWritable(f"{doc_id.text}: this identity's feed was purged (forgotten)")
        if doc_id.policy is Policy.OWNER and doc_id.owner != me:
            raise NotWritable(f"{doc_id.text} is written by its owner only")
        if doc_id.policy is Policy.MEMBERS and doc_id.owner != me:
            acl = self._latest_acl(doc_id)
            if me not in acl.members:
                raise NotWritable(f"{doc_id.text}: {me.short} is not a member")

    def _commit_local(self, document: Document, update: bytes) -> None:
        self._check_writable(document.id)
        entry = self._next_entry(
            document.id, EntryKind.UPDATE, update, grouped=self._batch is not None
        )
        if self._batch is not None:
            self._state.heads[(document.id, self.peer_id)] = Head(entry.seq, entry.id)
            self._batch.append((document, entry))
            return
        document._debt += len(update)

        def work(txn: Writer) -> None:
            txn.put_entries((entry,), self._state.docs)
            if document._snapshot_due():
                self._put_snapshot(txn, document)

        self._store.write(work)
        self._state.docs[document.id.key] = document.id
        self._state.heads[(document.id, self.peer_id)] = Head(entry.seq, entry.id)
        self._after_commit([entry], local=True)

    def _next_entry(
        self, doc_id: DocumentId, kind: EntryKind, payload: bytes, *, grouped: bool = False
    ) -> Entry:
        """The next entry of this replica's feed in ``doc_id``; ``grouped``: unsigned,
        to be signed with its batch when the batch commits."""
        head = self._state.heads.get((doc_id, self.peer_id))
        acl = 0
        if doc_id.policy is Policy.MEMBERS and doc_id.owner != self.peer_id:
            owner_head = self._state.heads.get((doc_id, doc_id.owner))  # type: ignore[arg-type]
            acl = owner_head.seq if owner_head else 0
        seq, prev = (head.seq + 1, head.id) if head else (1, ZERO_HASH)
        timestamp = int(self._clock() * 1000)
        try:
            if grouped:
                return Entry.unsigned(
                    self.peer_id,
                    doc_id,
                    seq,
                    prev,
                    payload,
                    timestamp=timestamp,
                    kind=kind,
                    acl=acl,
                )
            return Entry.create(
                self.identity, doc_id, seq, prev, payload, timestamp=timestamp, kind=kind, acl=acl
            )
        except InvalidEntry as exc:
            raise LocalError(f"cannot write to {doc_id.text}: {exc}") from exc

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group-commit every document transaction in the block in one LMDB transaction.

        Nothing is durable, and no observer is called, until the block exits. If the
        commit fails, every document written in the block is rolled back.
        """
        self._check_open()
        if self._batch is not None:
            yield
            return
        heads_before = FeedHeads(self._state.heads)
        batch: list[tuple[Document, Entry]] = []
        self._batch = batch
        try:
            yield
        except BaseException:
            self._batch = None
            self._abort_batch(batch, heads_before)
            raise
        self._batch = None
        if not batch:
            return
        try:  # one signature for the whole group (a Merkle root over its entry ids)
            sealed = seal(self.identity, [entry for _, entry in batch])
        except BaseException:
            self._abort_batch(batch, heads_before)
            raise
        batch[:] = [(document, entry) for (document, _), entry in zip(batch, sealed, strict=True)]
        docs = {id(d): d for d, _ in batch}.values()
        for document, entry in batch:
            document._debt += len(entry.payload)

        def work(txn: Writer) -> None:
            txn.put_entries((entry for _, entry in batch), self._state.docs)
            for document in docs:
                if document._snapshot_due():
                    self._put_snapshot(txn, document)

        try:
            self._store.write(work)
        except BaseException:
            self._abort_batch(batch, heads_before)
            raise
        self._state.docs.update({d.id.key: d.id for d in docs})
        self._after_commit([e for _, e in batch], local=True)

    def _abort_batch(self, batch: list[tuple[Document, Entry]], heads_before: FeedHeads) -> None:
        self._state.heads = heads_before
        self._state.version += 1
        for document in {id(d): d for d, _ in batch}.values():
            self._rebuild(document)

    def set_members(
        self,
        document: str | DocumentId,
        *,
        add: Iterable[PeerId] = (),
        remove: Iterable[PeerId] = (),
    ) -> Acl:
        """Change the member list of a ``members`` document this replica owns.

        A removed member's entries after its current head (as this replica knows it)
        are void on every replica, however late they arrive.

        Raises:
            NotWritable: this identity does not own the document.
            LocalError: the document is not a ``members`` document.
        """
        doc_id = self._resolve_id(document, Policy.MEMBERS)
        if doc_id.policy is not Policy.MEMBERS:
            raise LocalError(f"{doc_id.text} is not a members document")
        if doc_id.owner != self.peer_id:
            raise NotWritable(f"only the owner changes the members of {doc_id.text}")
        self._check_writable(doc_id)
        cuts = {
            p: (self._state.heads[(doc_id, p)].seq if (doc_id, p) in self._state.heads else 0)
            for p in remove
        }
        acl = self._latest_acl(doc_id).with_changes(add, cuts)
        entry = self._next_entry(doc_id, EntryKind.ACL, acl.encode())
        report = self._admit_and_commit([entry], local=True)
        report.raise_first()
        return acl

    def members(self, document: str | DocumentId) -> frozenset[PeerId]:
        """The current members of a ``members`` document (its owner included)."""
        doc_id = self._resolve_id(document, Policy.MEMBERS)
        if doc_id.owner is None:
            return frozenset()
        return self._latest_acl(doc_id).members | {doc_id.owner}

    def acl(self, document: str | DocumentId) -> Acl:
        """The latest member list of a ``members`` document as this replica knows it:
        its members (the owner aside) and the cut of each removed member's feed."""
        return self._latest_acl(self._resolve_id(document, Policy.MEMBERS))

    def _latest_acl(self, doc_id: DocumentId) -> Acl:
        return self._state.latest_acl(doc_id)

    def _acl_at(self, doc_id: DocumentId, seq: int) -> Acl:
        found = Acl()
        for acl_seq, acl in self._state.acls.get(doc_id, ()):
            if acl_seq > seq:
                break
            found = acl
        return found

    # -- sync surface -----------------------------------------------------------------

    def heads(self, *, include_local: bool = False) -> dict[FeedKey, Head]:
        """The head of every feed. ``local`` documents are left out unless asked for."""
        self._check_open()
        return {
            k: h
            for k, h in self._state.heads.items()
            if include_local or k[0].policy is not Policy.LOCAL
        }

    def summary(self) -> ReplicaSummary:
        """Counts of what this replica holds (for logs, inspection and tests)."""
        self._check_open()
        return ReplicaSummary(
            documents=len(self._state.docs),
            feeds=len(self._state.heads),
            entries=sum(h.seq for h in self._state.heads.values()),
            fork_proofs=len(self._state.forks),
            pending=self._state.pending.count,
            bytes_on_disk=self._store.disk_usage(),
        )

    def readable_by(self, document: DocumentId, peer: PeerId) -> bool:
        """Whether ``peer`` may be offered this document's entries.

        ``local`` documents: never, whatever any rule says (invariant 4 of
        docs/architecture.md). Then the read policies added with
        :meth:`add_read_policy`, in order: the first that has an opinion decides.
        Else the default: ``members`` documents to the owner and the members of the
        ACL as this replica knows it; others to anyone (their policy governs who
        writes, not who reads).
        """
        if document.policy is Policy.LOCAL:
            return False
        for policy in self._read_policies:
            verdict = policy(document, peer)
            if verdict is not None:
                return bool(verdict)
        if document.policy is Policy.MEMBERS:
            return peer == document.owner or peer in self._latest_acl(document).members
        return True

    def add_read_policy(self, policy: ReadPolicy) -> Callable[[], None]:
        """Let ``policy(document, peer)`` decide who may read which documents: True or
        False decides, None leaves it to the next policy (or the default). How a
        service with read scopes of its own (memory's teams, organizations) plugs in
        without touching the replica. ``local`` documents stay unreadable.

        Returns:
            A function that removes the policy.
        """
        if not callable(policy):
            raise LocalError("a read policy is callable(document, peer) -> bool | None")
        self._read_policies.append(policy)
        self._state.version += 1

        def remove() -> None:
            if policy in self._read_policies:
                self._read_policies.remove(policy)
                self._state.version += 1

        return remove

    def policy_changed(self) -> None:
        """Say that a read policy's verdicts may have changed (what a peer follows, say):
        what each peer is offered is worked out again."""
        self._check_open()
        self._state.version += 1

    @property
    def version(self) -> int:
        """Grows whenever what a peer may be offered can have changed (heads, forks,
        ACLs, read policies): caches of it compare versions."""
        return self._state.version

    @property
    def has_read_policies(self) -> bool:
        """Whether a read policy was added (what a peer may read depends on it)."""
        return bool(self._read_policies)

    @property
    def per_peer_reads(self) -> bool:
        """Whether what a peer may read differs from peer to peer (``members``
        documents, or read policies): then an index of readable feeds is per peer."""
        return bool(self._read_policies) or any(
            d.policy is Policy.MEMBERS for d in self._state.docs.values()
        )

    def frozen_feeds(self) -> list[FeedKey]:
        """Feeds with a fork proof but no entry held (their head is nothing)."""
        return [feed for feed in self._state.forks if feed not in self._state.heads]

    def feed_entries(
        self,
        key: bytes,
        start: int,
        end: int,
        *,
        proof: bool = False,
        max_bytes: int | None = None,
    ) -> list[bytes]:
        """Encoded entries ``start..end`` of the feed with this 48-byte key (clamped to its
        head), preceded by its fork proof if ``proof`` and there is one.

        With ``max_bytes``, reading stops once that many bytes were read (at least
        one entry is returned if there is one): the sync shell reads a feed in
        slices as the link drains, never a whole feed at once.
        """
        self._check_open()
        doc = self._state.docs.get(key[:16])
        if doc is None or len(key) != 48:
            return []
        author = PeerId(key[16:])
        out: list[bytes] = []
        fork = self._state.forks.get((doc, author))
        if proof and fork is not None:
            out.append(fork.encode())
        head = self._state.heads.get((doc, author))
        end = min(end, head.seq if head else 0)
        if start <= end:
            with self._store.read() as txn:
                out.extend(txn.entries(feed_key(doc, author), max(start, 1), end, max_bytes))
        return out

    def purge(self, document: DocumentId, author: PeerId, seq: int, entry_id: bytes) -> bool:
        """Delete the content of one feed for good, keeping its head.

        For forgetting: the feed's entries (and the document's cached state) leave
        the store in one transaction; the head becomes ``seq`` / ``entry_id``, frozen,
        so every replica that purges at the same point agrees with the others in
        sync, and nothing of the feed is accepted or offered again. Meant for
        documents that one author writes (``owner``, ``local``): in a shared
        document, others' updates that build on the purged ones stay unintegrated.
        The freed pages of the file keep the old bytes until :meth:`compact`.

        Returns:
            False if the feed was purged already.
        """
        self._check_open()
        of_type("document", document, DocumentId, "a DocumentId")
        of_type("author", author, PeerId, "a PeerId")
        integer("seq", seq, low=0)
        if not isinstance(entry_id, bytes) or len(entry_id) != 32:
            raise ArgumentTypeError("entry_id: the 32-byte id of the feed's last entry")
        feed = (document, author)
        if feed in self._state.purged:
            return False

        def work(txn: Writer) -> None:
            txn.purge_feed(feed_key(document, author), seq, entry_id)
            txn.delete_snapshot(document.key)

        self._store.write(work)
        self._state.docs.setdefault(document.key, document)
        self._state.heads[feed] = Head(seq, entry_id, frozen=True)
        self._state.purged.add(feed)
        self._state.version += 1
        open_document = self._open.get(document)
        if open_document is not None:
            self._rebuild(open_document)  # its in-memory state held the purged content
        return True

    def purged(self, document: DocumentId, author: PeerId) -> bool:
        """Whether the feed of ``author`` in ``document`` was purged."""
        return (document, author) in self._state.purged

    def compact(self) -> None:
        """Rewrite the store's file with the pages in use only, so that purged content
        leaves the disk too (LMDB keeps freed pages' bytes until it reuses them).

        Takes time in proportion to the store's size: call it after purges, in batches.
        """
        self._check_open()
        self._store.compact()

    def fork_proofs(self) -> list[ForkProof]:
        """Every fork proof this replica holds."""
        return list(self._state.forks.values())

    def missing_from(
        self, heads: Mapping[FeedKey, Head], *, limit: int | None = None
    ) -> list[Entry | ForkProof]:
        """What a replica with ``heads`` lacks: fork proofs first, then entries oldest first.

        ``local`` documents are never offered.
        """
        self._check_open()
        out: list[Entry | ForkProof] = [
            proof
            for feed, proof in self._state.forks.items()
            if not (feed in heads and heads[feed].frozen)
        ]
        with self._store.read() as txn:
            for (doc, author), head in self._state.heads.items():
                if doc.policy is Policy.LOCAL or (doc, author) in self._state.purged:
                    continue
                theirs = heads.get((doc, author))
                start = theirs.seq + 1 if theirs else 1
                if start <= head.seq:
                    out.extend(self._read_feed(txn, doc, author, start, head.seq))
                if limit is not None and len(out) >= limit:
                    return out[:limit]
        return out

    entries_missing_from = missing_from

    def export(self, document: str | DocumentId) -> list[Entry]:
        """Every entry of one document (for backup or hand-carried sync).

        Raises:
            PolicyViolation: the document is ``local`` and never leaves this replica.
        """
        doc_id = self._resolve_id(document, Policy.OPEN)
        if doc_id.policy is Policy.LOCAL:
            raise NotWritable(f"{doc_id.text} is local: its entries never leave this replica")
        out: list[Entry] = []
        with self._store.read() as txn:  # the document's own feeds, not the whole store
            for author in self._state.heads.authors_of(doc_id):
                if (doc_id, author) not in self._state.purged:
                    head = self._state.heads[(doc_id, author)]
                    out.extend(self._read_feed(txn, doc_id, author, 1, head.seq))
        return out

    def on_commit(self, callback: Callable[[list[Entry]], None]) -> Callable[[], None]:
        """Call ``callback(entries)`` after each commit, local or ingested.

        Returns:
            A function that unsubscribes the callback.
        """
        self._commit_hooks.append(callback)
        return lambda: (
            self._commit_hooks.remove(callback) if callback in self._commit_hooks else None
        )

    # -- ingest -------------------------------------------------------------------------

    def ingest(
        self, items: Iterable[Entry | ForkProof | bytes], *, source: Hashable = None
    ) -> IngestReport:
        """Verify and commit entries and fork proofs from another replica.

        Each entry is taken whole or not at all; order and duplicates do not
        matter: an entry whose predecessor is missing waits (bounded) until it
        arrives. Accepted entries are committed in LMDB transactions of up to 256,
        each applied to the open documents once committed. In a large batch,
        signatures are checked by helper processes while this thread decodes and
        admits the rest (:mod:`crdt_mesh.replica.verifier`).

        Args:
            items: encoded entries and fork proofs, or the objects.
            source: who sent them (the peer of a link): entries that must wait are
                charged to it, so that no source can fill the pending area for others.

        Returns:
            An :class:`IngestReport`; refused inputs are in ``rejected`` with a typed
            error, and never change anything.
        """
        self._check_open()
        if isinstance(items, str | bytes | bytearray | memoryview):
            raise ArgumentTypeError(
                f"items: an iterable of entries (encoded or not), not one {type(items).__name__}"
            )
        items = list(items)
        for item in items:
            if type(item) is not bytes and not isinstance(item, _INGESTIBLE):
                raise ArgumentTypeError(
                    f"items: entries, fork proofs or their bytes, not {type(item).__name__}"
                )
        report = IngestReport()
        proofs: list[ForkProof] = []
        entries: list[Entry | bytes] = []
        #: the digest of each entry's bytes, by the id of those bytes (alive while
        #: this call runs): what is committed is remembered without hashing it again
        digests: dict[int, bytes] = {}
        for item in items:  # fork proofs first: they freeze feeds before entries are judged
            if isinstance(item, ForkProof) or (
                not isinstance(item, Entry) and bytes(item[:1]) == _FORK_PROOF_START
            ):
                try:
                    proofs.append(_checked_proof(item))
                except MeshError as exc:
                    report.rejected.append(Rejection(item, exc))
            else:
                entries.append(item)
        chunks = self._checked_chunks(entries, report, digests)
        self._admit_and_commit(
            _accepted(chunks, report),
            local=False,
            proofs=proofs,
            report=report,
            source=source,
            digests=digests,
        )
        self.duplicates += report.duplicates
        self.rejections.update(type(r.error).__name__ for r in report.rejected)
        return report

    def forget_pending(self, source: Hashable) -> None:
        """Drop what ``source`` sent that still waits for a gap (its link closed: what
        anti-entropy sends next fills the gap and whatever followed it)."""
        self._check_open()
        self._state.pending.forget_source(source)

    def expire_pending(self, max_wait: float) -> dict[Hashable, int]:
        """Drop entries that waited more than ``max_wait`` seconds; returns, per source,
        how many feeds it left waiting that long. An honest sender fills the gaps of
        what it sends within a round or two of anti-entropy: it holds every entry
        before one it committed."""
        self._check_open()
        return self._state.pending.expire(self._clock() - max_wait)

    @property
    def pending_bytes(self) -> int:
        """Bytes charged to the entries waiting in the pending area."""
        return self._state.pending.bytes

    def _checked_chunks(
        self, items: list[Entry | bytes], report: IngestReport, digests: dict[int, bytes]
    ) -> Iterator[list[Entry | Rejection] | None]:
        """Decode entries and check their signatures and client-id binding, in chunks.

        Signatures of a large batch are checked by helper processes (see
        :mod:`crdt_mesh.replica.verifier`), once they are started and ready, while
        this thread decodes the next chunks and admits the chunks already checked;
        a small batch is checked here. ``digests`` gets the digest of each entry's
        bytes, by their id. None: a pause, while the helpers check the last chunks.
        """
        if (
            len(items) < _POOL_MIN_BATCH
            or self._verify_processes == 0
            or (len(items) < _POOL_START_BATCH and not self._verifier().started)
        ):
            chunk = _decode_chunk(self._not_recent(items, report, digests), report)
            yield _check_chunk(self._unknown(chunk, report))
            return
        Message = tuple[bytes, bytes]
        handed: deque[tuple[list[Entry], list[Message], list[Message]]] = deque()

        def requests() -> Iterator[list[Message]]:
            # the first chunk small: the helpers start on it while this thread decodes on
            for start, end in _chunk_bounds(len(items)):
                fresh = self._not_recent(items[start:end], report, digests)
                chunk = self._unknown(_decode_chunk(fresh, report), report)
                messages = [entry.signed_message() for entry in chunk]
                unique = list(dict.fromkeys(messages))  # a signed group: one check
                handed.append((chunk, messages, unique))
                yield unique

        for answer in self._verifier().verify_or_pause(requests()):
            if answer is None:
                yield None  # the helpers are at work: commit what was admitted meanwhile
                continue
            chunk, messages, unique = handed.popleft()
            verdict = dict(zip(unique, answer, strict=True))
            yield [
                _check_binding(entry)
                if verdict[message]
                else Rejection(entry, _bad_signature(entry))
                for entry, message in zip(chunk, messages, strict=True)
            ]

    def _not_recent(
        self, items: list[Entry | bytes], report: IngestReport, digests: dict[int, bytes]
    ) -> list[Entry | bytes]:
        """``items`` less the very bytes of entries committed lately (counted as
        duplicates); the digest of each one kept is put in ``digests`` by the id of
        its bytes, for :meth:`_remember`."""
        recent = self._recent
        fresh: list[Entry | bytes] = []
        for item in items:
            raw = item.encoded if isinstance(item, Entry) else item
            digest = _digest(raw)
            if digest in recent:
                report.duplicates += 1
            else:
                fresh.append(item)
                digests[id(raw)] = digest
        return fresh

    def _remember(self, committed: list[Entry], digests: dict[int, bytes]) -> None:
        """Keep the digests of the entries last committed (a bounded window): a copy
        of the same bytes, which a mesh sends often, is then known without decoding.
        ``digests``: those computed already, by the id of the bytes they hash."""
        recent, known = self._recent, digests.get
        recent.update(
            dict.fromkeys([known(id(e.encoded)) or _digest(e.encoded) for e in committed])
        )
        for _ in range(len(recent) - _RECENT_ENTRIES):
            recent.popitem(last=False)

    def _unknown(self, entries: list[Entry], report: IngestReport) -> list[Entry]:
        """``entries`` less those this replica holds already (the same id at the same
        place, committed or waiting): counted as duplicates, never verified again. A
        mesh hears most entries from several peers; checking a signature is what an
        entry costs, so a copy must not cost it twice."""
        heads, pending = self._state.heads, self._state.pending
        fresh: list[Entry] = []
        older: list[tuple[Entry, FeedKey]] = []
        for entry in entries:
            feed = (entry.document, entry.author)
            head = heads.get(feed)
            if head is not None and entry.seq <= head.seq:
                if entry.seq == head.seq:
                    if head.id == entry.id:
                        report.duplicates += 1
                    else:
                        fresh.append(entry)
                else:
                    older.append((entry, feed))
                continue
            waiting = pending.get(feed, entry.seq)
            if waiting is not None and waiting.id == entry.id:
                report.duplicates += 1
                continue
            fresh.append(entry)
        if older:
            with self._store.read() as txn:
                for entry, feed in older:
                    value = txn.entry(feed_key(*feed), entry.seq)
                    if value is not None and Entry.from_store(value).id == entry.id:
                        report.duplicates += 1
                    else:
                        fresh.append(entry)
        return fresh

    def _verifier(self) -> VerifierPool:
        if self._verify_processes is None:
            return shared_pool()
        if self._pool is None:
            self._pool = VerifierPool(self._verify_processes)
        return self._pool

    def _admit_and_commit(
        self,
        entries: Iterable[Entry | None],
        *,
        local: bool,
        proofs: Iterable[ForkProof] = (),
        report: IngestReport | None = None,
        source: Hashable = None,
        digests: dict[int, bytes] | None = None,
    ) -> IngestReport:
        """Judge entries in order and commit the admitted ones in groups.

        Each group is one LMDB transaction, after which its entries are applied to
        the open documents (invariant 5 of docs/architecture.md). Committing as we go
        lets the verifier processes check the next chunks meanwhile; a None among
        ``entries`` (the helpers checking the last chunks) commits what is admitted
        so far, so that little is left to commit once the last answer is back.
        """
        report = report or IngestReport()
        digests = {} if digests is None else digests  # filled as chunks are read
        staging = _Staging(self._state, self._store, now=self._clock(), source=source)
        for proof in proofs:
            staging.add_proof(proof, report)
        for entry in entries:
            if entry is not None:
                staging.offer(entry, report)
            if len(staging.admitted) >= (1 if entry is None else _GROUP_COMMIT):
                self._commit_staged(staging, local=local, report=report, digests=digests)
                staging = _Staging(self._state, self._store, now=self._clock(), source=source)
        self._commit_staged(staging, local=local, report=report, digests=digests)
        report.pending = self._state.pending.count
        return report

    def _commit_staged(
        self, staging: _Staging, *, local: bool, report: IngestReport, digests: dict[int, bytes]
    ) -> None:
        staging.drain(report)
        if not staging.dirty:
            return
        self._store.write(staging.write)
        staging.publish()
        admitted = staging.admitted
        self._remember(admitted, digests)
        by_doc = _by_document(admitted)
        self._state.docs.update({doc_id.key: doc_id for doc_id in by_doc})
        report.applied.extend(admitted)
        for doc_id, doc_entries in by_doc.items():
            document = self._open.get(doc_id)
            if document is None or doc_id in staging.rebuild:
                continue
            document._apply(doc_entries, check=not local)
        for doc_id in staging.rebuild:
            if doc_id in self._open:
                self._rebuild(self._open[doc_id])
        due = [self._open[d] for d in by_doc if d in self._open and self._open[d]._snapshot_due()]
        if due:
            self._store.write(lambda writer: self._put_snapshots(writer, due))
        self._after_commit(admitted, local=local, by_doc=by_doc)

    def _after_commit(
        self,
        entries: list[Entry],
        *,
        local: bool,
        by_doc: dict[DocumentId, list[Entry]] | None = None,
    ) -> None:
        """Tell the open documents' observers and the commit hooks; ``by_doc``: the
        entries grouped by document, if the caller has them."""
        self._state.version += 1
        if not entries:
            return
        for doc_id, doc_entries in (by_doc or _by_document(entries)).items():
            document = self._open.get(doc_id)
            if document is not None:
                document._notify(doc_entries, local=local)
        for hook in list(self._commit_hooks):
            try:
                hook(entries)
            except Exception:
                log.exception("commit hook failed")

    # -- store helpers -------------------------------------------------------------------

    def _put_snapshots(self, txn: Writer, documents: Iterable[Document]) -> None:
        for document in documents:
            self._put_snapshot(txn, document)

    def _put_snapshot(self, txn: Writer, document: Document) -> None:
        state = document._ydoc.get_update()
        covered = {a.key: h.seq for (d, a), h in self._state.heads.items() if d == document.id}
        unresolved = [[a.key, s] for a, s in document._unresolved]
        txn.put_snapshot(document.id.key, cbor2.dumps([state, covered, unresolved]))
        document._debt = 0
        document._snapshot_size = len(state)

    def _read_feed(
        self, txn: Reader, doc: DocumentId, author: PeerId, start: int, end: int
    ) -> list[Entry]:
        if start > end:
            return []
        out = [Entry.from_store(e) for e in txn.entries(feed_key(doc, author), start, end)]
        if len(out) != end - start + 1:
            raise StoreError(
                f"store is missing entries of {doc.text}/{author.short} in {start}..{end}"
            )
        return out

    def _entry_at(self, txn: Reader, doc: DocumentId, author: PeerId, seq: int) -> Entry:
        value = txn.entry(feed_key(doc, author), seq)
        if value is None:
            raise StoreError(f"store is missing entry {doc.text}/{author.short}/{seq}")
        return Entry.from_store(value)
