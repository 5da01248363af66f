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
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from .errors import ClosedError, StoreError

T = TypeVar("T")

_DBS = ("entries", "void", "forks", "docs", "acls", "snapshots")
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
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(_DBS),
                subdir=True,
                sync=durability is Durability.FULL,
                metasync=durability is Durability.FULL,
                readahead=False,
                mode=0o700,
            )
            self._dbs = {name: self._env.open_db(name.encode()) for name in _DBS}
        except lmdb.Error as exc:
            raise StoreError(f"cannot open store at {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot open store at {self.path}: {exc}") from exc
        self._closed = False

    def db(self, name: str) -> Any:
        return self._dbs[name]

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
    def read(self) -> Iterator[Any]:
        """A read-only LMDB transaction, as a context manager."""
        self._check_open()
        try:
            with self._env.begin(write=False, buffers=False) as txn:
                yield txn
        except lmdb.Error as exc:
            raise StoreError(f"read from {self.path} failed: {exc}") from exc

    def write(self, work: Callable[[Any], T]) -> T:
        """Run ``work(txn)`` in one write transaction and commit it.

        ``work`` must only stage writes (it may run again): if the map is full,
        the transaction is aborted, the map doubled and ``work`` retried.
        """
        self._check_open()
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return work(txn)
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
