"""Purging a feed removes its content from the store's files for good; its head stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt_mesh import Identity, NotWritable, Policy, Replica
from tests.conftest import ReplicaFactory

MARKER = "purge-marker-7f3a9c"


def _files_hold(root: Path, marker: str) -> bool:
    needle = marker.encode()
    return any(needle in p.read_bytes() for p in root.rglob("*") if p.is_file())


def _write_secret(replica: Replica, name: str = "secret", policy: Policy = Policy.OWNER) -> None:
    doc = replica.document(name, policy=policy)
    for i in range(3):
        with doc.transaction():
            doc.map("m")[f"k{i}"] = f"{MARKER} {i}"


def test_a_purged_feed_leaves_no_content_in_the_files_and_keeps_its_head(
    make_replica: ReplicaFactory, tmp_path: Path
) -> None:
    alice, bob = make_replica(name="alice"), make_replica(name="bob")
    _write_secret(alice)
    bob.ingest(alice.missing_from(bob.heads())).raise_first()
    doc_id = alice.document("secret", policy=Policy.OWNER).id
    head = alice.heads()[(doc_id, alice.peer_id)]
    for replica, folder in ((alice, "alice"), (bob, "bob")):
        replica.store.sync()
        assert _files_hold(tmp_path / folder, MARKER)  # the control: it was there
        assert replica.purge(doc_id, alice.peer_id, head.seq, head.id)
        assert not replica.purge(doc_id, alice.peer_id, head.seq, head.id)  # once
        replica.compact()
        assert not _files_hold(tmp_path / folder, MARKER)
        assert replica.document(doc_id).map("m").to_py() in (None, {})
        assert replica.heads()[(doc_id, alice.peer_id)].seq == head.seq
    assert alice.heads() == bob.heads()  # both purged at the same point: in step
    assert all(getattr(e, "document", None) != doc_id for e in alice.missing_from({}))


def test_a_purged_feed_takes_nothing_back_and_stays_purged_after_reopening(
    make_replica: ReplicaFactory, tmp_path: Path
) -> None:
    alice = make_replica(name="alice")
    identity = Identity.generate()
    bob = Replica.open(tmp_path / "bob", identity)
    _write_secret(alice)
    entries = alice.missing_from({})
    bob.ingest(entries).raise_first()
    doc_id = alice.document("secret", policy=Policy.OWNER).id
    head = alice.heads()[(doc_id, alice.peer_id)]
    bob.purge(doc_id, alice.peer_id, head.seq, head.id)
    report = bob.ingest(entries)  # offered again by a peer that has not purged yet
    assert report.applied == [] and not report.rejected
    bob.compact()
    bob.close()
    assert not _files_hold(tmp_path / "bob", MARKER)
    with Replica.open(tmp_path / "bob", identity) as again:
        assert again.purged(doc_id, alice.peer_id)
        assert again.heads()[(doc_id, alice.peer_id)].seq == head.seq
        assert again.document(doc_id).map("m").to_py() in (None, {})


def test_an_author_cannot_write_to_its_purged_feed_and_local_documents_purge_too(
    make_replica: ReplicaFactory, tmp_path: Path
) -> None:
    alice = make_replica(name="alice")
    _write_secret(alice, "mine", Policy.LOCAL)
    doc = alice.document("mine", policy=Policy.LOCAL)
    head = alice.heads(include_local=True)[(doc.id, alice.peer_id)]
    alice.purge(doc.id, alice.peer_id, head.seq, head.id)
    assert doc.map("m").to_py() in (None, {})  # the open document forgot it too
    with pytest.raises(NotWritable), doc.transaction():
        doc.map("m")["again"] = "no"
    alice.compact()
    assert not _files_hold(tmp_path / "alice", MARKER)
