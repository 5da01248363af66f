"""The LMDB store: one environment, a few named sub-databases.

Keys are fixed-width byte strings so that LMDB's sorted order is the order we
want (feeds grouped by document, entries by big-endian seq). A feed's head is
its last entry, found by a cursor seek, so a commit of one entry writes to one
sub-database:

==============  ==========================================  ===========================
sub-database    key                                         value
==============  ==========================================  ===========================
``entries``     doc key(16) + author(32) + seq(8, BE)       encoded entry
``void``        as ``entries``                              entries after a fork or cut
``forks``       doc key(16) + author(32)                    encoded fork proof
``docs``        doc key(16)                                 document id (UTF-8)
``acls``        doc key(16) + seq(8, BE)                    encoded ACL (owner's entries)
``snapshots``   doc key(16)                                 CBOR [state, covered, unresolved]
==============  ==========================================  ===========================

Readers never block the writer (LMDB's MVCC). Every write is one LMDB write
transaction. Under :attr:`Durability.FULL` (the default) it is durable when the
commit returns: its writes are in the store's journal, flushed once
(:mod:`crdt_mesh.journal`; LMDB itself is flushed at checkpoints).

This is the only module that names the sub-databases: :meth:`Store.read` hands out
a :class:`Reader` and :meth:`Store.write` a :class:`Writer`, whose methods say what
they read and write in the ledger's terms (a feed's key is its document key and
author key, 48 bytes).
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import cbor2
import lmdb

from .errors import ClosedError, StoreError
from .journal import Journal, JournalInUse, sync_directory
from .ledger import Entry

T = TypeVar("T")

#: The sub-databases; a journal record names one by its index here (so: append only).
_DBS = ("entries", "void", "forks", "docs", "acls", "snapshots", "purged")
_DB_INDEX = {name: index for index, name in enumerate(_DBS)}
_ENTRIES = _DB_INDEX["entries"]
_Op = tuple[int, bytes, bytes | None]
#: A checkpoint is due after this many journaled commits, or once LMDB's file grew
#: by this many pages since the last (the pages of a checkpoint's state are held
#: until the next, so the file grows meanwhile by what the commits write).
_CHECKPOINT_COMMITS = 1024
_CHECKPOINT_PAGES = 1024
_DEFAULT_MAP_SIZE = 64 * 1024 * 1024
_MAX_MAP_SIZE = 1 << 40


class Durability(enum.Enum):
    """How hard a commit tries to reach the disk before it returns."""

    #: each commit flushed (its journal record) before it returns: a committed entry
    #: survives a power cut (the default).
    FULL = "full"
    #: no flush: survives a crash of the process, not of the machine. Faster.
    PROCESS = "process"


def seq_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


_LAST_SEQ = b"\xff" * 8


class Reader:
    """What a read transaction can see: the ledger's records, by their keys."""

    def __init__(self, txn: Any, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def documents(self) -> Iterator[tuple[bytes, str]]:
        """Every document: (16-byte key, printable id)."""
        for key, text in self._txn.cursor(db=self._dbs["docs"]):
            yield bytes(key), bytes(text).decode()

    def feed_heads(self) -> Iterator[tuple[bytes, int, bytes]]:
        """The last stored entry of every feed: (48-byte feed key, seq, encoded entry).

        Jumps from feed to feed: the cost is per feed, not per entry.
        """
        cursor = self._txn.cursor(db=self._dbs["entries"])
        found = cursor.first()
        while found:
            feed = bytes(cursor.key()[:48])
            found = cursor.set_range(feed + _LAST_SEQ)
            if not (found and bytes(cursor.key()).startswith(feed)):
                cursor.prev() if found else cursor.last()
            key, value = cursor.item()
            yield feed, int.from_bytes(key[48:], "big"), bytes(value)
            found = cursor.set_range(feed + _LAST_SEQ)

    def fork_proofs(self) -> Iterator[bytes]:
        """Every stored fork proof (encoded)."""
        for _, value in self._txn.cursor(db=self._dbs["forks"]):
            yield bytes(value)

    def acls(self) -> Iterator[tuple[bytes, int, bytes]]:
        """Every owner's ACL entry payload: (document key, seq, payload)."""
        for key, value in self._txn.cursor(db=self._dbs["acls"]):
            yield bytes(key[:16]), int.from_bytes(key[16:], "big"), bytes(value)

    def purged(self) -> Iterator[tuple[bytes, int, bytes]]:
        """Every purged feed: (48-byte feed key, seq, id of the entry it was purged at)."""
        for key, value in self._txn.cursor(db=self._dbs["purged"]):
            yield bytes(key), int.from_bytes(value[:8], "big"), bytes(value[8:])

    def snapshot(self, document_key: bytes) -> bytes | None:
        value = self._txn.get(document_key, db=self._dbs["snapshots"])
        return None if value is None else bytes(value)

    def entry(self, feed: bytes, seq: int) -> bytes | None:
        """The encoded entry ``seq`` of ``feed`` (None if it is not stored)."""
        value = self._txn.get(feed + seq_bytes(seq), db=self._dbs["entries"])
        return None if value is None else bytes(value)

    def entries(
        self, feed: bytes, start: int, end: int, max_bytes: int | None = None
    ) -> list[bytes]:
        """Encoded entries ``start..end`` of ``feed``, in order; with ``max_bytes``, stop
        once that many bytes were read (at least one entry)."""
        out: list[bytes] = []
        size = 0
        cursor = self._txn.cursor(db=self._dbs["entries"])
        if cursor.set_key(feed + seq_bytes(start)):
            for key, value in cursor:
                if not bytes(key).startswith(feed) or int.from_bytes(key[48:], "big") > end:
                    break
                out.append(bytes(value))
                size += len(value)
                if max_bytes is not None and size >= max_bytes:
                    break
        return out


class Writer(Reader):
    """What a write transaction can stage (committed together, or not at all).

    Each write is also noted in ``ops`` (sub-database index, key, value or None for
    a delete), when given: what the store's journal records of the transaction.
    """

    def __init__(self, txn: Any, dbs: dict[str, Any], ops: list[_Op] | None = None) -> None:
        super().__init__(txn, dbs)
        self._ops = ops

    def _put(self, name: str, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._dbs[name])
        if self._ops is not None:
            self._ops.append((_DB_INDEX[name], key, value))

    def _noted_delete(self, name: str, key: bytes) -> None:
        if self._ops is not None:
            self._ops.append((_DB_INDEX[name], key, None))

    def put_entries(self, entries: Iterable[Entry], known: Collection[bytes]) -> None:
        """Stage entries, and each document not in ``known`` (their keys).

        A feed's head is its last stored entry, so a commit touches one sub-database
        (fewer pages to fsync) unless a document is new.
        """
        put, entries_db, ops = self._txn.put, self._dbs["entries"], self._ops
        new: dict[bytes, bytes] = {}
        for entry in entries:
            doc = entry.document
            key = doc.key + entry.author.key + seq_bytes(entry.seq)
            put(key, entry.encoded, db=entries_db)
            if ops is not None:
                ops.append((_ENTRIES, key, entry.encoded))
            if doc.key not in known:
                new[doc.key] = doc.text.encode()
        for key, text in new.items():
            self._put("docs", key, text)

    def void_after(self, feed: bytes, seq: int) -> None:
        """Move the entries of ``feed`` after ``seq`` to ``void``: kept, out of the feed."""
        cursor = self._txn.cursor(db=self._dbs["entries"])
        found = cursor.set_range(feed + seq_bytes(seq + 1))
        while found and bytes(cursor.key()).startswith(feed):
            key = bytes(cursor.key())
            self._put("void", key, bytes(cursor.value()))
            self._noted_delete("entries", key)
            found = cursor.delete()

    def purge_feed(self, feed: bytes, seq: int, entry_id: bytes) -> None:
        """Delete every entry of ``feed`` (kept or void) and remember that it was purged
        at ``seq`` / ``entry_id``: its head stays, its content is gone."""
        for name in ("entries", "void"):
            cursor = self._txn.cursor(db=self._dbs[name])
            found = cursor.set_range(feed)
            while found and bytes(cursor.key()).startswith(feed):
                self._noted_delete(name, bytes(cursor.key()))
                found = cursor.delete()
        self._put("purged", feed, seq_bytes(seq) + entry_id)

    def put_acl(self, document_key: bytes, seq: int, payload: bytes) -> None:
        self._put("acls", document_key + seq_bytes(seq), payload)

    def put_fork_proof(self, feed: bytes, encoded: bytes) -> None:
        self._put("forks", feed, encoded)

    def put_snapshot(self, document_key: bytes, value: bytes) -> None:
        self._put("snapshots", document_key, value)

    def delete_snapshot(self, document_key: bytes) -> None:
        self._txn.delete(document_key, db=self._dbs["snapshots"])
        self._noted_delete("snapshots", document_key)


class Store:
    """An LMDB environment holding a replica's ledger.

    Not for direct use by applications: :class:`~crdt_mesh.Replica` owns one.
    Every ``lmdb.Error`` is translated into :class:`StoreError`.

    Under :attr:`Durability.FULL`, a commit is made durable by the store's journal
    (:mod:`crdt_mesh.journal`): LMDB commits without flushing, the transaction's
    writes are appended to the journal with one flush, and a checkpoint now and
    then flushes LMDB. Opening a store recovers what its journal holds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = Durability.FULL,
        map_size: int = _DEFAULT_MAP_SIZE,
    ) -> None:
        self.path = Path(path)
        self.durability = durability
        self._lock = threading.Lock()  # one commit (and its checkpoint) at a time
        self._journal: Journal | None = None
        self._pin: Any = None  # the read transaction that holds a checkpoint's pages
        self._data_fd = -1
        self._broken: BaseException | None = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open store at {self.path}: {exc}") from exc
        journal_path = self.path / "journal"
        try:
            if durability is Durability.FULL or journal_path.exists():
                self._open_journaled(journal_path, map_size)
            else:
                self._open_env(map_size)
        except BaseException:
            self._release()
            if self._journal is not None:
                self._journal.close()
            raise
        self._closed = False

    def _open_env(self, map_size: int) -> None:
        """Open LMDB, which never flushes by itself: the journal or a checkpoint does."""
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(_DBS),
                subdir=True,
                sync=False,
                metasync=False,
                readahead=False,
                mode=0o700,
            )
            self._dbs = {name: self._env.open_db(name.encode()) for name in _DBS}
            self._page_size = int(self._env.stat()["psize"])
        except (lmdb.Error, OSError) as exc:
            raise StoreError(f"cannot open store at {self.path}: {exc}") from exc

    def _open_journaled(self, journal_path: Path, map_size: int) -> None:
        """Open LMDB at its last checkpoint, apply the journal's records since, and
        checkpoint; under PROCESS durability the journal is then removed."""
        try:
            self._journal = Journal.open(journal_path)
            checkpoint = self._journal.checkpoint
            if checkpoint is not None and checkpoint.meta_pages:
                _restore_meta_pages(self.path / "data.mdb", checkpoint.meta_pages)
        except JournalInUse as exc:
            raise StoreError(
                f"cannot open store at {self.path}: it is already open (here, or by a running node)"
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot recover store at {self.path}: {exc}") from exc
        self._open_env(map_size)
        try:
            self._data_fd = os.open(self.path / "data.mdb", os.O_RDONLY)
            self._pin = self._env.begin(write=False)
            self._replay(list(self._journal.records()))
            self._checkpoint()
        except (lmdb.Error, OSError) as exc:
            raise StoreError(f"cannot recover store at {self.path}: {exc}") from exc
        if self.durability is Durability.PROCESS:
            self._journal.close()
            self._journal = None
            self._pin.abort()
            self._pin = None
            try:
                journal_path.unlink()
                sync_directory(self.path)
            except OSError as exc:
                raise StoreError(f"cannot open store at {self.path}: {exc}") from exc

    def _replay(self, payloads: list[bytes]) -> None:
        if not payloads:
            return
        records = []
        for payload in payloads:
            ops = cbor2.loads(payload)
            if not isinstance(ops, list) or not all(_is_op(op) for op in ops):
                raise StoreError(f"journal of {self.path} holds a malformed record")
            records.append(ops)
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for ops in records:
                        for index, key, value in ops:
                            db = self._dbs[_DBS[index]]
                            if value is None:
                                txn.delete(key, db=db)
                            else:
                                txn.put(key, value, db=db)
                return
            except lmdb.MapFullError:
                self._grow()

    def _checkpoint(self) -> None:
        """Flush LMDB, record its meta pages in the journal, and hold that state."""
        assert self._journal is not None
        self._env.sync(True)
        meta_pages = os.pread(self._data_fd, 2 * self._page_size, 0)
        self._journal.write_checkpoint(meta_pages)
        pin, self._pin = self._pin, self._env.begin(write=False)
        if pin is not None:
            with contextlib.suppress(lmdb.Error):  # a grown map has already ended it
                pin.abort()
        self._commits = 0
        self._checkpoint_page = int(self._env.info()["last_pgno"])

    def compact(self) -> None:
        """Rewrite the data file with the pages in use only.

        LMDB keeps the old bytes of freed pages until it reuses them: after a purge,
        the purged content is still in the file. A compacting copy leaves it out; the
        copy is made durable, then atomically takes the old file's place.

        Raises:
            StoreError: the copy or the swap failed (the store is left as it was).
        """
        self._check_open()
        with self._lock:
            self._compact()

    def _compact(self) -> None:
        scratch = self.path / "compacting"
        try:
            if self._journal is not None:
                self._checkpoint()
                self._journal.scrub()  # its records may hold what was purged
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            self._env.copy(str(scratch), compact=True)
            copied = scratch / "data.mdb"
            with open(copied, "rb+") as handle:
                os.fsync(handle.fileno())
            if self._journal is not None:
                # either file, old or new, is whole on disk now: until the new one's
                # meta pages are recorded, recovery takes the data file as it is
                self._journal.write_checkpoint(b"")
        except (lmdb.Error, OSError) as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise StoreError(f"cannot compact {self.path}: {exc}") from exc
        map_size = self.map_size()
        self._release()
        try:
            os.replace(copied, self.path / "data.mdb")
            sync_directory(self.path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            if self._journal is not None:
                self._open_env(map_size)
                try:
                    self._data_fd = os.open(self.path / "data.mdb", os.O_RDONLY)
                    self._checkpoint()
                except (lmdb.Error, OSError) as exc:
                    self._broken = exc
                    raise StoreError(f"cannot reopen {self.path}: {exc}") from exc
            else:
                self._open_env(map_size)

    def _release(self) -> None:
        """End the pin and close LMDB and the data file (not the journal)."""
        if self._pin is not None:
            with contextlib.suppress(lmdb.Error):
                self._pin.abort()
            self._pin = None
        if self._data_fd >= 0:
            os.close(self._data_fd)
            self._data_fd = -1
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()

    def close(self) -> None:
        """Checkpoint (so that the next open has nothing to replay) and close."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            try:
                if self._journal is not None and self._broken is None:
                    with contextlib.suppress(lmdb.Error, OSError):
                        self._checkpoint()  # else: the next open replays the journal
            finally:
                self._release()
                if self._journal is not None:
                    self._journal.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def journaled(self) -> bool:
        """Whether commits are made durable by the journal (:attr:`Durability.FULL`)."""
        return self._journal is not None

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"store {self.path} is closed")

    @contextmanager
    def read(self) -> Iterator[Reader]:
        """A read-only transaction, as a context manager."""
        self._check_open()
        try:
            with self._env.begin(write=False, buffers=False) as txn:
                yield Reader(txn, self._dbs)
        except lmdb.Error as exc:
            raise StoreError(f"read from {self.path} failed: {exc}") from exc

    def write(self, work: Callable[[Writer], T]) -> T:
        """Run ``work(writer)`` in one write transaction and commit it.

        ``work`` must only stage writes (it may run again): if the map is full,
        the transaction is aborted, the map doubled and ``work`` retried. Under
        :attr:`Durability.FULL`, the commit is durable when this returns.
        """
        self._check_open()
        with self._lock:
            if self._broken is not None:
                raise StoreError(f"store {self.path} must be reopened: {self._broken}")
            while True:
                try:
                    if self._journal is None:
                        with self._env.begin(write=True) as txn:
                            return work(Writer(txn, self._dbs))
                    return self._journaled_write(work)
                except lmdb.MapFullError:
                    self._grow()
                except lmdb.Error as exc:
                    raise StoreError(f"write to {self.path} failed: {exc}") from exc

    def _journaled_write(self, work: Callable[[Writer], T]) -> T:
        journal = self._journal
        assert journal is not None
        ops: list[_Op] = []
        txn = self._env.begin(write=True)
        try:
            result = work(Writer(txn, self._dbs, ops))
            if not ops:
                txn.commit()
                return result
            payload = cbor2.dumps(ops)
            if not journal.fits(payload):  # larger than the journal has room for
                txn.commit()
                self._checkpoint_or_break()  # durable by the checkpoint's own flushes
                return result
            try:
                journal.append(payload)
            except OSError as exc:
                raise StoreError(f"write to {self.path} failed: {exc}") from exc
        except BaseException:
            txn.abort()
            raise
        try:
            txn.commit()
        except lmdb.Error:
            try:
                journal.retract()
            except OSError as exc:
                self._broken = exc  # the record may come back on reopening
            raise
        self._commits += 1
        if self._commits % 16 == 0 and (  # env.info() costs a few µs: not every commit
            self._commits >= _CHECKPOINT_COMMITS
            or int(self._env.info()["last_pgno"]) - self._checkpoint_page >= _CHECKPOINT_PAGES
        ):
            self._checkpoint_or_break()
        return result

    def _checkpoint_or_break(self) -> None:
        """Checkpoint after a commit; if that fails, the journal no longer describes
        what LMDB holds: no more writes until the store is reopened (which recovers
        the last checkpoint and the records since)."""
        try:
            self._checkpoint()
        except (lmdb.Error, OSError) as exc:
            self._broken = exc
            raise StoreError(f"checkpoint of {self.path} failed: {exc}") from exc

    def _grow(self) -> None:
        current = self._env.info()["map_size"]
        if current >= _MAX_MAP_SIZE:
            raise StoreError(f"store {self.path} reached its maximum size of {current} bytes")
        try:
            self._env.set_mapsize(min(current * 2, _MAX_MAP_SIZE))
        except lmdb.Error as exc:
            raise StoreError(f"cannot grow store {self.path}: {exc}") from exc
        if self._journal is not None:
            self._checkpoint_or_break()  # growing ended every transaction, the pin too

    def map_size(self) -> int:
        return int(self._env.info()["map_size"])

    def disk_usage(self) -> int:
        """Bytes used by the data file (its pages in use, not the reserved map)."""
        info, stat = self._env.info(), self._env.stat()
        return int((info["last_pgno"] + 1) * stat["psize"])

    def sync(self) -> None:
        """Flush to disk (useful under :attr:`Durability.PROCESS`)."""
        self._check_open()
        with self._lock:
            try:
                if self._journal is not None:
                    self._checkpoint()
                else:
                    self._env.sync(True)
            except (lmdb.Error, OSError) as exc:
                raise StoreError(f"sync of {self.path} failed: {exc}") from exc


def _is_op(op: object) -> bool:
    return (
        isinstance(op, list)
        and len(op) == 3
        and type(op[0]) is int
        and 0 <= op[0] < len(_DBS)
        and type(op[1]) is bytes
        and (op[2] is None or type(op[2]) is bytes)
    )


def _restore_meta_pages(data_file: Path, meta_pages: bytes) -> None:
    """Put LMDB's meta pages back as a checkpoint recorded them (if they differ)."""
    fd = os.open(data_file, os.O_RDWR)
    try:
        if os.pread(fd, len(meta_pages), 0) == meta_pages:
            return
        if os.fstat(fd).st_size < len(meta_pages):
            raise OSError(f"{data_file} is shorter than its journal's checkpoint")
        view, offset = memoryview(meta_pages), 0
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        os.fsync(fd)
    finally:
        os.close(fd)
