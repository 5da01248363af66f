from __future__ import annotations

from pathlib import Path

import pytest

from crdt_mesh import (
    ArgumentTypeError,
    ClosedError,
    DocumentChange,
    Durability,
    Entry,
    Identity,
    LocalError,
    Replica,
    StoreError,
    client_id_for,
)
from crdt_mesh.ledger import ZERO_HASH
from crdt_mesh.replica.replica import SNAPSHOT_MIN_DEBT
from tests.conftest import ReplicaFactory
from tests.helpers import NOTES, feed, update_as


def test_quick_start(make_replica: ReplicaFactory) -> None:
    alice = make_replica()
    notes = alice.document("notes")
    with notes.transaction():
        notes.map("todo")["buy"] = "milk"
        notes.text("log").insert(0, "hello")
    bob = make_replica()
    report = bob.ingest(alice.missing_from(bob.heads()))
    assert [e.seq for e in report.applied] == [1] and not report.rejected
    assert bob.document("notes").map("todo")["buy"] == "milk"
    assert str(bob.document("notes").text("log")) == "hello"
    assert bob.heads() == alice.heads()


def test_one_transaction_is_one_entry(make_replica: ReplicaFactory) -> None:
    alice = make_replica()
    notes = alice.document("notes")
    with notes.transaction():
        for i in range(10):
            notes.map("m")[str(i)] = i
    notes.map("m")["solo"] = 1  # outside a transaction: its own entry
    with notes.transaction():
        pass  # no change, no entry
    (head,) = notes.heads().values()
    assert head.seq == 2


def test_ingest_is_idempotent(make_replica: ReplicaFactory) -> None:
    alice, bob = make_replica(), make_replica()
    notes = alice.document("notes")
    for i in range(3):
        with notes.transaction():
            notes.map("m")[str(i)] = i
    entries = alice.missing_from({})
    first = bob.ingest(entries)
    state = bob.document("notes").update()
    second = bob.ingest(entries + [e.encoded for e in entries])  # type: ignore[operator]
    assert len(first.applied) == 3
    assert second.applied == [] and second.duplicates == 6
    assert bob.document("notes").update() == state


def test_observers_see_local_and_remote_commits(make_replica: ReplicaFactory) -> None:
    alice, bob = make_replica(), make_replica()
    seen: list[DocumentChange] = []
    bob_notes = bob.document("notes")
    unsubscribe = bob_notes.observe(seen.append)
    with bob_notes.transaction():
        bob_notes.map("m")["x"] = 1
    notes = alice.document("notes")
    with notes.transaction():
        notes.map("m")["y"] = 2
    bob.ingest(alice.missing_from(bob.heads()))
    assert [(c.author, c.local) for c in seen] == [(bob.peer_id, True), (alice.peer_id, False)]
    unsubscribe()
    bob.ingest(alice.missing_from({}))
    with bob_notes.transaction():
        bob_notes.map("m")["z"] = 3
    assert len(seen) == 2


def test_failing_observer_does_not_break_the_commit(make_replica: ReplicaFactory) -> None:
    alice = make_replica()
    notes = alice.document("notes")
    notes.observe(lambda change: 1 / 0)  # type: ignore[func-returns-value]
    with notes.transaction():
        notes.map("m")["x"] = 1
    assert notes.heads()[alice.peer_id].seq == 1


def test_exception_inside_a_transaction_changes_nothing(make_replica: ReplicaFactory) -> None:
    alice = make_replica()
    notes = alice.document("notes")
    with notes.transaction():
        notes.map("m")["kept"] = 1
    with pytest.raises(RuntimeError), notes.transaction():
        notes.map("m")["lost"] = 2
        raise RuntimeError("changed my mind")
    assert notes.map("m").to_py() == {"kept": 1}
    assert notes.heads()[alice.peer_id].seq == 1


def test_batch_group_commits(make_replica: ReplicaFactory) -> None:
    alice = make_replica()
    notes, other = alice.document("notes"), alice.document("other")
    committed: list[int] = []
    alice.on_commit(lambda entries: committed.append(len(entries)))
    with alice.batch():
        for i in range(5):
            with notes.transaction():
                notes.map("m")[str(i)] = i
        with other.transaction():
            other.text("t").insert(0, "x")
        assert committed == []  # nothing is announced before the commit
    assert committed == [6]
    assert notes.heads()[alice.peer_id].seq == 5


def test_batch_that_raises_rolls_back(make_replica: ReplicaFactory) -> None:
    alice = make_replica()
    notes = alice.document("notes")
    with notes.transaction():
        notes.map("m")["kept"] = 1
    with pytest.raises(KeyError), alice.batch():
        with notes.transaction():
            notes.map("m")["lost"] = 2
        raise KeyError("abort")
    assert notes.map("m").to_py() == {"kept": 1}
    assert notes.heads()[alice.peer_id].seq == 1


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    identity = Identity.generate()
    with Replica.open(tmp_path / "a", identity) as alice:
        notes = alice.document("notes")
        for i in range(20):
            with notes.transaction():
                notes.map("m")[str(i)] = i
                notes.text("t").insert(0, str(i % 10))
        expected_json = notes.map("m").to_py(), str(notes.text("t"))
        expected_heads = alice.heads()
    with Replica.open(tmp_path / "a", identity) as again:
        notes = again.document("notes")
        assert (notes.map("m").to_py(), str(notes.text("t"))) == expected_json
        assert again.heads() == expected_heads
        with notes.transaction():  # writing goes on from the stored head
            notes.map("m")["after"] = True
        assert notes.heads()[identity.peer_id].seq == 21


def test_open_costs_state_not_history(tmp_path: Path) -> None:
    """The cached state bounds the replay on open, however long the history."""
    identity = Identity.generate()
    with Replica.open(tmp_path / "a", identity, durability=Durability.PROCESS) as alice:
        notes = alice.document("notes")
        for i in range(3000):
            with alice.batch() if i % 100 == 0 else notes.transaction():
                notes.map("m")["counter"] = i
    with Replica.open(tmp_path / "a", identity) as again:
        replayed: list[int] = []
        original = again._read_feed

        def counting(*args: object) -> object:
            result = original(*args)  # type: ignore[arg-type]
            replayed.append(len(result))  # type: ignore[arg-type]
            return result

        again._read_feed = counting  # type: ignore[method-assign]
        notes = again.document("notes")
        assert notes.map("m")["counter"] == 2999
        assert sum(replayed) < 3000 // 4
        assert notes._snapshot_size > 0
        assert sum(replayed) * 20 <= max(SNAPSHOT_MIN_DEBT, notes._snapshot_size) * 2


def test_store_map_grows_when_full(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "small", Identity.generate(), map_size=256 * 1024) as alice:
        before = alice.store.map_size()
        notes = alice.document("notes")
        with alice.batch():
            for i in range(400):
                with notes.transaction():
                    notes.map("m")[str(i)] = "x" * 1000
        assert alice.store.map_size() > before
        assert len(notes.map("m")) == 400


def test_closed_replica_refuses(make_replica: ReplicaFactory) -> None:
    alice = make_replica()
    alice.close()
    with pytest.raises(ClosedError):
        alice.document("notes")
    with pytest.raises(ClosedError):
        alice.heads()
    alice.close()  # idempotent


def test_bad_document_names_are_local_errors(make_replica: ReplicaFactory) -> None:
    alice = make_replica()
    with pytest.raises(LocalError):
        alice.document("")
    with pytest.raises(LocalError):
        alice.document(42)  # type: ignore[arg-type]


def test_unopenable_store_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError):
        Replica.open(blocker / "store", Identity.generate())


def test_ingest_of_garbage_is_rejected_and_changes_nothing(make_replica: ReplicaFactory) -> None:
    alice = make_replica()
    report = alice.ingest([b"", b"\x8a", b"hello", b"\x83\x01\x02\x03"])
    assert len(report.rejected) == 4 and report.applied == []
    assert alice.heads() == {}
    with pytest.raises(ArgumentTypeError, match="items"):  # not bytes at all: the caller's bug
        alice.ingest([b"", 12])  # type: ignore[list-item]
    assert alice.heads() == {} and alice.summary().pending == 0


def test_summary_counts_what_is_held(make_replica: ReplicaFactory) -> None:
    alice = make_replica()
    notes, other = alice.document("notes"), alice.document("other")
    for document in (notes, notes, other):
        with document.transaction():
            document.map("m")["x"] = 1
    summary = alice.summary()
    assert (summary.documents, summary.feeds, summary.entries) == (2, 2, 3)
    assert summary.fork_proofs == summary.pending == 0 and summary.bytes_on_disk > 0


def test_a_store_opens_once_per_process(tmp_path: Path) -> None:
    identity = Identity.generate()
    with Replica.open(tmp_path / "a", identity), pytest.raises(StoreError, match="already open"):
        Replica.open(tmp_path / "a", identity)


def test_a_long_reader_does_not_block_the_writer(make_replica: ReplicaFactory) -> None:
    """LMDB's MVCC: a read transaction held open (here by another thread) sees its
    snapshot while the writer commits on."""
    import threading

    alice = make_replica()
    notes = alice.document("notes")
    with notes.transaction():
        notes.map("m")["before"] = 1
    reading, release, seen = threading.Event(), threading.Event(), []

    def reader() -> None:
        with alice.store.read() as txn:
            reading.set()
            release.wait(timeout=10)
            seen.append(sum(seq for _, seq, _ in txn.feed_heads()))

    thread = threading.Thread(target=reader)
    thread.start()
    assert reading.wait(timeout=10)
    for i in range(5):  # commits while the read transaction is open
        with notes.transaction():
            notes.map("m")[str(i)] = i
    release.set()
    thread.join(timeout=10)
    assert seen == [1]  # the reader kept its snapshot
    assert notes.heads()[alice.peer_id].seq == 6


def test_observers_and_hooks_run_only_once_the_entry_is_durable(
    make_replica: ReplicaFactory,
) -> None:
    """No event before the commit (invariant 5 of docs/architecture.md). Each observer and
    commit hook, when called, finds the entry in the store (a fresh read transaction) and
    in heads(), for a local transaction, a batch, and an ingest."""
    alice, bob = make_replica(), make_replica()
    seen: list[tuple[str, bool]] = []

    def stored(replica: Replica, entry: Entry) -> bool:
        with replica.store.read() as txn:
            in_store = txn.entry(entry.document.key + entry.author.key, entry.seq) is not None
        head = replica.heads().get((entry.document, entry.author))
        return in_store and head is not None and head.seq >= entry.seq

    for replica in (alice, bob):
        replica.on_commit(
            lambda entries, r=replica: seen.extend(("hook", stored(r, e)) for e in entries)
        )
        notes = replica.document("notes")
        notes.observe(
            lambda change, r=replica: seen.append(
                ("observer", r.heads().get((change.document, change.author), None) is not None
                 and r.heads()[(change.document, change.author)].seq >= change.seq)
            )
        )  # fmt: skip
    notes = alice.document("notes")
    with notes.transaction():
        notes.map("m")["a"] = 1
    with alice.batch():
        for i in range(3):
            with notes.transaction():
                notes.map("m")[str(i)] = i
    bob.ingest(alice.missing_from({}))
    assert len(seen) == 2 * (4 + 4)  # alice's four entries, twice; bob's four, twice
    assert all(ok for _, ok in seen), seen


def test_export_reads_the_documents_own_feeds_only(make_replica: ReplicaFactory) -> None:
    """One document's entries, in feed order, without reading the rest of the store."""
    alice, bob = make_replica(), make_replica()
    for name in ("a", "b"):
        doc = alice.document(name)
        for i in range(3):
            with doc.transaction():
                doc.map("m")[str(i)] = i
    shared = bob.document("a")
    with shared.transaction():
        shared.map("m")["bob"] = 1
    alice.ingest(bob.missing_from(alice.heads())).raise_first()
    exported = alice.export("a")
    assert {(e.author, e.seq) for e in exported} == {
        (alice.peer_id, 1),
        (alice.peer_id, 2),
        (alice.peer_id, 3),
        (bob.peer_id, 1),
    }
    calls: list[object] = []
    original = alice.missing_from
    alice.missing_from = lambda *a, **k: calls.append(a) or original(*a, **k)  # type: ignore[method-assign]
    alice.export("b")
    assert calls == []  # not a scan of everything this replica holds


def test_an_update_that_cannot_be_integrated_yet_is_tracked_alone_until_it_can(
    make_replica: ReplicaFactory,
) -> None:
    """Updates are applied merged, a group at a time; an update whose dependency is
    missing (Yrs keeps it pending) is tracked on its own (what a snapshot lists to
    replay), the others applied beside it are not, and none once it is integrated."""
    alice, bob = Identity.generate(), Identity.generate()
    first = update_as(client_id_for(NOTES, alice.peer_id), "k", "alice")
    over = update_as(client_id_for(NOTES, bob.peer_id), "k", "bob", base=first)  # after hers
    depends = Entry.create(bob, NOTES, 1, ZERO_HASH, over, timestamp=1)
    others = feed(Identity.generate(), 5)
    dependency = Entry.create(alice, NOTES, 1, ZERO_HASH, first, timestamp=1)
    replica = make_replica()
    notes = replica.document(NOTES)
    report = replica.ingest([e.encoded for e in [*others[:2], depends, *others[2:]]])
    assert len(report.applied) == 6
    assert set(notes._unresolved) == {(bob.peer_id, 1)}
    assert notes.map("map").to_py() == {f"k{s}": s for s in range(1, 6)}
    replica.ingest([dependency.encoded]).raise_first()
    assert notes._unresolved == {}
    assert notes.map("map").to_py()["k"] == "bob"
