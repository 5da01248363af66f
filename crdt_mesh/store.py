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
transaction, committed with fsync by default (:attr:`Durability.FULL`).

This is the only module that names the sub-databases: :meth:`Store.read` hands out
a :class:`Reader` and :meth:`Store.write` a :class:`Writer`, whose methods say what
they read and write in the ledger's terms (a feed's key is its document key and
author key, 48 bytes).
"""

from __future__ import annotations

import enum
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from .errors import ClosedError, StoreError
from .ledger import Entry

T = TypeVar("T")

_DBS = ("entries", "void", "forks", "docs", "acls", "snapshots", "purged")
_DEFAULT_MAP_SIZE = 64 * 1024 * 1024
_MAX_MAP_SIZE = 1 << 40


class Durability(enum.Enum):
    """How hard a commit tries to reach the disk before it returns."""

    #: fsync on every commit: a committed entry survives a power cut (the default).
    FULL = "full"
    #: no fsync: survives a crash of the process, not of the machine. Faster.
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
    """What a write transaction can stage (committed together, or not at all)."""

    def put_entries(self, entries: Iterable[Entry], known: Collection[bytes]) -> None:
        """Stage entries, and each document not in ``known`` (their keys).

        A feed's head is its last stored entry, so a commit touches one sub-database
        (fewer pages to fsync) unless a document is new.
        """
        entries_db, docs_db = self._dbs["entries"], self._dbs["docs"]
        new: dict[bytes, bytes] = {}
        for entry in entries:
            doc = entry.document
            self._txn.put(
                doc.key + entry.author.key + seq_bytes(entry.seq), entry.encoded, db=entries_db
            )
            if doc.key not in known:
                new[doc.key] = doc.text.encode()
        for key, text in new.items():
            self._txn.put(key, text, db=docs_db)

    def void_after(self, feed: bytes, seq: int) -> None:
        """Move the entries of ``feed`` after ``seq`` to ``void``: kept, out of the feed."""
        entries_db, void_db = self._dbs["entries"], self._dbs["void"]
        cursor = self._txn.cursor(db=entries_db)
        found = cursor.set_range(feed + seq_bytes(seq + 1))
        while found and bytes(cursor.key()).startswith(feed):
            self._txn.put(cursor.key(), cursor.value(), db=void_db)
            found = cursor.delete()

    def purge_feed(self, feed: bytes, seq: int, entry_id: bytes) -> None:
        """Delete every entry of ``feed`` (kept or void) and remember that it was purged
        at ``seq`` / ``entry_id``: its head stays, its content is gone."""
        for name in ("entries", "void"):
            cursor = self._txn.cursor(db=self._dbs[name])
            found = cursor.set_range(feed)
            while found and bytes(cursor.key()).startswith(feed):
                found = cursor.delete()
        self._txn.put(feed, seq_bytes(seq) + entry_id, db=self._dbs["purged"])

    def put_acl(self, document_key: bytes, seq: int, payload: bytes) -> None:
        self._txn.put(document_key + seq_bytes(seq), payload, db=self._dbs["acls"])

    def put_fork_proof(self, feed: bytes, encoded: bytes) -> None:
        self._txn.put(feed, encoded, db=self._dbs["forks"])

    def put_snapshot(self, document_key: bytes, value: bytes) -> None:
        self._txn.put(document_key, value, db=self._dbs["snapshots"])

    def delete_snapshot(self, document_key: bytes) -> None:
        self._txn.delete(document_key, db=self._dbs["snapshots"])


class Store:
    """An LMDB environment holding a replica's ledger.

    Not for direct use by applications: :class:`~crdt_mesh.Replica` owns one.
    Every ``lmdb.Error`` is translated into :class:`StoreError`.
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
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open store at {self.path}: {exc}") from exc
        self._open_env(map_size)
        self._closed = False

    def _open_env(self, map_size: int) -> None:
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(_DBS),
                subdir=True,
                sync=self.durability is Durability.FULL,
                metasync=self.durability is Durability.FULL,
                readahead=False,
                mode=0o700,
            )
            self._dbs = {name: self._env.open_db(name.encode()) for name in _DBS}
        except (lmdb.Error, OSError) as exc:
            raise StoreError(f"cannot open store at {self.path}: {exc}") from exc

    def compact(self) -> None:
        """Rewrite the data file with the pages in use only.

        LMDB keeps the old bytes of freed pages until it reuses them: after a purge,
        the purged content is still in the file. A compacting copy leaves it out; the
        copy is made durable, then atomically takes the old file's place.

        Raises:
            StoreError: the copy or the swap failed (the store is left as it was).
        """
        self._check_open()
        scratch = self.path / "compacting"
        try:
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            self._env.copy(str(scratch), compact=True)
            copied = scratch / "data.mdb"
            with open(copied, "rb+") as handle:
                os.fsync(handle.fileno())
        except (lmdb.Error, OSError) as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise StoreError(f"cannot compact {self.path}: {exc}") from exc
        map_size = self.map_size()
        self._env.close()
        try:
            os.replace(copied, self.path / "data.mdb")
            directory = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            self._open_env(map_size)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._env.close()

    @property
    def closed(self) -> bool:
        return self._closed

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
        the transaction is aborted, the map doubled and ``work`` retried.
        """
        self._check_open()
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return work(Writer(txn, self._dbs))
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as exc:
                raise StoreError(f"write to {self.path} failed: {exc}") from exc

    def _grow(self) -> None:
        current = self._env.info()["map_size"]
        if current >= _MAX_MAP_SIZE:
            raise StoreError(f"store {self.path} reached its maximum size of {current} bytes")
        try:
            self._env.set_mapsize(min(current * 2, _MAX_MAP_SIZE))
        except lmdb.Error as exc:
            raise StoreError(f"cannot grow store {self.path}: {exc}") from exc

    def map_size(self) -> int:
        return int(self._env.info()["map_size"])

    def disk_usage(self) -> int:
        """Bytes used by the data file (its pages in use, not the reserved map)."""
        info, stat = self._env.info(), self._env.stat()
        return int((info["last_pgno"] + 1) * stat["psize"])

    def sync(self) -> None:
        """Flush to disk (useful under :attr:`Durability.PROCESS`)."""
        self._check_open()
        try:
            self._env.sync(True)
        except lmdb.Error as exc:
            raise StoreError(f"sync of {self.path} failed: {exc}") from exc
