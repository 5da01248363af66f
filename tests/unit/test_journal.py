"""The journal makes each durable commit survive a power cut, whatever reached the disk.

A power cut is simulated from the files themselves: the data file is rebuilt page by
page, each page either as it was at the last checkpoint (flushed then) or as it is
now (written since, maybe reaching the disk, maybe not), the meta pages included;
the journal is as it is now (each record was flushed before its commit returned),
with the last record torn or not. Whatever the mix, reopening must give exactly
the acknowledged writes.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_mesh.errors import StoreError
from crdt_mesh.journal import BLOCK, RECORDS_START
from crdt_mesh.store import Durability, Store

KEYS = [bytes([k]) * 16 for k in range(6)]

step = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(min_size=1, max_size=3000)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("acl"), st.sampled_from(KEYS), st.binary(max_size=200)),
    st.tuples(st.just("checkpoint"), st.none(), st.none()),
)


def _apply(store: Store, kind: str, key: bytes, value: bytes | None, seq: int) -> None:
    if kind == "put":
        store.write(lambda w: w.put_snapshot(key, value))
    elif kind == "delete":
        store.write(lambda w: w.delete_snapshot(key))
    elif kind == "acl":
        store.write(lambda w: w.put_acl(key, seq, value or b""))
    else:
        store.sync()


def _model(steps: list[tuple[str, bytes | None, bytes | None]]) -> dict[str, object]:
    snapshots: dict[bytes, bytes] = {}
    acls: dict[tuple[bytes, int], bytes] = {}
    for seq, (kind, key, value) in enumerate(steps):
        assert kind == "checkpoint" or key is not None
        if kind == "put":
            snapshots[key] = value  # type: ignore[index,assignment]
        elif kind == "delete":
            snapshots.pop(key, None)  # type: ignore[arg-type]
        elif kind == "acl":
            acls[(key, seq)] = value or b""  # type: ignore[index]
    return {"snapshots": snapshots, "acls": acls}


def _contents(store: Store) -> dict[str, object]:
    with store.read() as reader:
        snapshots = {k: v for k in KEYS if (v := reader.snapshot(k)) is not None}
        acls = {(doc, seq): payload for doc, seq, payload in reader.acls()}
    return {"snapshots": snapshots, "acls": acls}


def _power_cut(live: Path, flushed: bytes, crashed: Path, rng: random.Random) -> None:
    """``crashed``: what the disk may hold of ``live`` if the power went now."""
    crashed.mkdir()
    shutil.copy(live / "journal", crashed / "journal")
    current = (live / "data.mdb").read_bytes()
    page = 4096
    mixed = bytearray()
    for start in range(0, len(current), page):
        old = flushed[start : start + page]
        new = current[start : start + page]
        if len(old) < len(new):
            old = old + bytes(len(new) - len(old))  # past the old end: never written
        mixed += new if rng.random() < 0.5 else old
    (crashed / "data.mdb").write_bytes(bytes(mixed))


@given(
    steps=st.lists(step, min_size=1, max_size=40),
    seed=st.integers(0, 2**32 - 1),
    torn=st.booleans(),
)
def test_after_a_power_cut_every_acknowledged_commit_is_there_and_nothing_else(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[str, bytes | None, bytes | None]],
    seed: int,
    torn: bool,
) -> None:
    root = tmp_path_factory.mktemp("cut")
    live = root / "live"
    store = Store(live)
    try:
        flushed = (live / "data.mdb").read_bytes()  # opening checkpoints
        acknowledged = steps
        for seq, (kind, key, value) in enumerate(steps):
            generation = store._journal.checkpoint.generation  # type: ignore[union-attr]
            _apply(store, kind, key or b"", value, seq)
            if store._journal.checkpoint.generation != generation:  # type: ignore[union-attr]
                flushed = (live / "data.mdb").read_bytes()
        journal = store._journal
        assert journal is not None
        last_record = journal._last if journal.used else None
        _power_cut(live, flushed, root / "crashed", random.Random(seed))
    finally:
        store.close()
    if torn and last_record is not None:  # the last write was still under way
        with open(root / "crashed" / "journal", "r+b") as handle:
            handle.seek(last_record + 40 + random.Random(seed).randrange(8))
            handle.write(b"\xff")
        last = max(i for i, (kind, _, _) in enumerate(steps) if kind != "checkpoint")
        acknowledged = steps[:last]
    recovered = Store(root / "crashed")
    try:
        assert _contents(recovered) == _model(acknowledged)
        _apply(recovered, "put", KEYS[0], b"after", len(steps))  # and it goes on
        assert _contents(recovered)["snapshots"][KEYS[0]] == b"after"  # type: ignore[index]
    finally:
        recovered.close()


def test_a_transaction_larger_than_the_journal_is_durable_through_a_checkpoint(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s")
    try:
        size = store._journal.size  # type: ignore[union-attr]
        generation = store._journal.checkpoint.generation  # type: ignore[union-attr]
        big = bytes(random.Random(1).randbytes(size))
        store.write(lambda w: w.put_snapshot(KEYS[0], big))
        assert store._journal.checkpoint.generation == generation + 1  # type: ignore[union-attr]
        assert store._journal.used == 0  # type: ignore[union-attr]
        flushed = (tmp_path / "s" / "data.mdb").read_bytes()
        store.write(lambda w: w.put_snapshot(KEYS[1], b"small"))
        _power_cut(tmp_path / "s", flushed, tmp_path / "crashed", random.Random(2))
    finally:
        store.close()
    recovered = Store(tmp_path / "crashed")
    try:
        with recovered.read() as reader:
            assert reader.snapshot(KEYS[0]) == big
            assert reader.snapshot(KEYS[1]) == b"small"
    finally:
        recovered.close()


class _CommitFails:
    """A write transaction whose commit fails (a full disk, say) after its writes."""

    def __init__(self, txn: Any) -> None:
        self._txn = txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)

    def commit(self) -> None:
        self._txn.abort()
        raise lmdb.DiskError("simulated: no space left on device")


class _EnvWhoseCommitsFail:
    def __init__(self, env: Any) -> None:
        self._env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def begin(self, write: bool = False, **options: Any) -> Any:
        txn = self._env.begin(write=write, **options)
        return _CommitFails(txn) if write else txn


def test_records_are_block_aligned_and_a_commit_that_fails_is_taken_back(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s")
    flushed = (tmp_path / "s" / "data.mdb").read_bytes()  # opening checkpoints
    try:
        store.write(lambda w: w.put_snapshot(KEYS[0], b"one"))
        journal = store._journal
        assert journal is not None
        assert journal._last == RECORDS_START and journal.used == BLOCK
        env, store._env = store._env, _EnvWhoseCommitsFail(store._env)
        with pytest.raises(StoreError, match="no space"):
            store.write(lambda w: w.put_snapshot(KEYS[1], b"two"))
        store._env = env
        assert journal.used == BLOCK  # its record unwritten, the next goes in its place
        with store.read() as reader:
            assert reader.snapshot(KEYS[1]) is None
        _power_cut(tmp_path / "s", flushed, tmp_path / "crashed", random.Random(3))
    finally:
        store.close()
    recovered = Store(tmp_path / "crashed")
    try:
        with recovered.read() as reader:
            assert reader.snapshot(KEYS[0]) == b"one"
            assert reader.snapshot(KEYS[1]) is None  # refused: it does not come back
    finally:
        recovered.close()


def test_a_store_opened_for_process_durability_recovers_the_journal_then_drops_it(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s")
    flushed = (tmp_path / "s" / "data.mdb").read_bytes()
    store.write(lambda w: w.put_snapshot(KEYS[0], b"kept"))
    _power_cut(tmp_path / "s", flushed, tmp_path / "crashed", random.Random(4))
    store.close()
    process = Store(tmp_path / "crashed", durability=Durability.PROCESS)
    try:
        with process.read() as reader:
            assert reader.snapshot(KEYS[0]) == b"kept"
        assert not (tmp_path / "crashed" / "journal").exists()
    finally:
        process.close()


def test_a_journal_whose_data_file_is_gone_is_a_typed_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write(lambda w: w.put_snapshot(KEYS[0], b"x"))
    store.close()
    (tmp_path / "s" / "data.mdb").unlink()
    with pytest.raises(StoreError, match="recover"):
        Store(tmp_path / "s")


def test_a_record_carries_no_bytes_of_an_earlier_one(tmp_path: Path) -> None:
    """Records are padded to whole blocks: the padding must not repeat what an
    earlier, larger record held (a purge scrubs the journal once, not its copies)."""
    marker = b"journal-marker-5c1e"
    store = Store(tmp_path / "s")
    try:
        store.write(lambda w: w.put_snapshot(KEYS[0], b"x" * 1000 + marker * 100))
        store.write(lambda w: w.put_snapshot(KEYS[1], b"small"))
        journal = (tmp_path / "s" / "journal").read_bytes()
    finally:
        store.close()
    second = journal[RECORDS_START + BLOCK : RECORDS_START + 2 * BLOCK]
    assert b"small" in second and marker not in second


def test_a_store_open_already_is_not_opened_twice(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    try:
        store.write(lambda w: w.put_snapshot(KEYS[0], b"live"))
        with pytest.raises(StoreError, match="already open"):
            Store(tmp_path / "s")  # would put old meta pages back under the live one
        with pytest.raises(StoreError, match="already open"):
            Store(tmp_path / "s", durability=Durability.PROCESS)
        with store.read() as reader:
            assert reader.snapshot(KEYS[0]) == b"live"
    finally:
        store.close()
    Store(tmp_path / "s").close()  # free once closed
