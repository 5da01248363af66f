"""Ingest refuses what it must (invariants 1-4, 8 of docs/architecture.md) and changes
nothing when it does."""

from __future__ import annotations

import random
from typing import Any

import cbor2
import pycrdt
import pytest

from crdt_mesh import (
    ChainError,
    ClientIdViolation,
    DocumentId,
    Entry,
    ForkDetected,
    ForkProof,
    Identity,
    InvalidEntry,
    InvalidUpdate,
    NotWritable,
    PendingOverflow,
    Policy,
    PolicyViolation,
    client_id_for,
)
from crdt_mesh.ledger import ZERO_HASH
from tests.conftest import ReplicaFactory
from tests.helpers import NOTES, feed, forked, update_as

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
MALLORY = Identity.from_seed(b"m" * 32)


def doc_json(replica_doc: object) -> object:
    return replica_doc.map("map").to_py()  # type: ignore[attr-defined]


# -- chain -----------------------------------------------------------------------------


def test_out_of_order_entries_wait_and_apply_in_order(make_replica: ReplicaFactory) -> None:
    entries = feed(ALICE, 6)
    bob = make_replica()
    report = bob.ingest([entries[5], entries[3], entries[4]])
    assert report.applied == [] and report.pending == 3
    assert bob.heads() == {}
    report = bob.ingest(entries[:3])
    assert [e.seq for e in report.applied] == [1, 2, 3, 4, 5, 6]
    assert report.pending == 0
    assert doc_json(bob.document(NOTES)) == {f"k{i}": float(i) for i in range(1, 7)}


def test_skipped_link_is_held_never_applied(make_replica: ReplicaFactory) -> None:
    first, _, third = feed(ALICE, 3)
    bob = make_replica()
    report = bob.ingest([first, third])
    assert [e.seq for e in report.applied] == [1]
    assert doc_json(bob.document(NOTES)) == {"k1": 1.0}


def test_wrong_prev_is_rejected(make_replica: ReplicaFactory) -> None:
    first, second = feed(ALICE, 2)
    bad = Entry.create(ALICE, NOTES, 2, b"\x07" * 32, second.payload, timestamp=2)
    bob = make_replica()
    report = bob.ingest([first, bad])
    assert [type(r.error) for r in report.rejected] == [ChainError]
    assert bob.document(NOTES).heads()[ALICE.peer_id].seq == 1
    assert bob.ingest([second]).applied == [second]


def test_pending_area_is_bounded(make_replica: ReplicaFactory) -> None:
    entries = feed(ALICE, 12)
    bob = make_replica(max_pending=5)
    report = bob.ingest(entries[1:])
    assert report.pending == 5
    assert len(report.rejected) == 6
    assert all(isinstance(r.error, PendingOverflow) for r in report.rejected)
    # once the gap is filled, what was dropped can be sent again and applies
    bob.ingest(entries[:1])
    bob.ingest(entries)
    assert bob.document(NOTES).heads()[ALICE.peer_id].seq == 12


# -- signatures and bytes ------------------------------------------------------------------


def test_tampered_bytes_are_rejected_at_ingest(make_replica: ReplicaFactory) -> None:
    (entry,) = feed(ALICE, 1)
    rng = random.Random(7)
    bob = make_replica()
    tampered = []
    for _ in range(50):
        data = bytearray(entry.encoded)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        tampered.append(bytes(data))
    report = bob.ingest(tampered)
    assert len(report.rejected) == 50 and all(
        isinstance(r.error, InvalidEntry) for r in report.rejected
    )
    assert bob.heads() == {}


# -- client-id binding (invariant 3) -----------------------------------------------------


def test_update_written_as_someone_elses_client_is_rejected(make_replica: ReplicaFactory) -> None:
    alice_client = client_id_for(NOTES, ALICE.peer_id)
    forged = update_as(alice_client, "owner", "mallory")
    entry = Entry.create(MALLORY, NOTES, 1, ZERO_HASH, forged, timestamp=1)
    bob = make_replica()
    report = bob.ingest([entry])
    assert [type(r.error) for r in report.rejected] == [ClientIdViolation]
    assert bob.heads() == {}


def test_update_mixing_own_and_foreign_structs_is_rejected(make_replica: ReplicaFactory) -> None:
    """A foreign client hidden behind clock > 0 (which get_state would not show) is caught."""
    alice_entries = feed(ALICE, 2)
    alice_doc: pycrdt.Doc[object] = pycrdt.Doc()
    for e in alice_entries:
        alice_doc.apply_update(e.payload)
    base = alice_doc.get_update()
    alice_later = update_as(client_id_for(NOTES, ALICE.peer_id), "late", 1, base=base)
    mine = update_as(client_id_for(NOTES, MALLORY.peer_id), "x", 1)
    mixed = pycrdt.merge_updates(mine, alice_later)
    entry = Entry.create(MALLORY, NOTES, 1, ZERO_HASH, mixed, timestamp=1)
    bob = make_replica()
    report = bob.ingest([*alice_entries, entry])
    assert [type(r.error) for r in report.rejected] == [ClientIdViolation]
    assert "late" not in doc_json(bob.document(NOTES))  # type: ignore[operator]


def test_garbage_update_is_rejected(make_replica: ReplicaFactory) -> None:
    entry = Entry.create(MALLORY, NOTES, 1, ZERO_HASH, b"\x05\xff\xff garbage", timestamp=1)
    bob = make_replica()
    report = bob.ingest([entry])
    assert [type(r.error) for r in report.rejected] == [InvalidUpdate]
    assert bob.heads() == {}


# -- policies (invariant 4) ----------------------------------------------------------------


def test_owner_document_refuses_other_writers(make_replica: ReplicaFactory) -> None:
    profile = DocumentId(Policy.OWNER, "profile", ALICE.peer_id)
    bob = make_replica(BOB)
    with pytest.raises(NotWritable):
        bob.document(profile).transaction().__enter__()
    mallory_entry = feed(MALLORY, 1, document=profile)[0]
    report = bob.ingest([mallory_entry])
    assert [type(r.error) for r in report.rejected] == [PolicyViolation]
    alice_entries = feed(ALICE, 2, document=profile)
    assert len(bob.ingest(alice_entries).applied) == 2


def test_write_outside_transaction_to_unwritable_document_is_rolled_back(
    make_replica: ReplicaFactory,
) -> None:
    profile = DocumentId(Policy.OWNER, "profile", ALICE.peer_id)
    bob = make_replica(BOB)
    bob.ingest(feed(ALICE, 1, document=profile))
    document = bob.document(profile)
    with pytest.raises(ExceptionGroup) as caught:  # pycrdt wraps observer errors
        document.map("map")["k1"] = "bob was here"
    assert caught.group_contains(NotWritable)
    assert doc_json(document) == {"k1": 1.0}
    assert ALICE.peer_id in document.heads() and BOB.peer_id not in document.heads()


def test_members_document_follows_the_owners_acl(make_replica: ReplicaFactory) -> None:
    alice, bob, mallory = make_replica(ALICE), make_replica(BOB), make_replica(MALLORY)
    team = alice.document("team", policy=Policy.MEMBERS)
    alice.set_members(team.id, add=[BOB.peer_id])
    with team.transaction():
        team.map("map")["from"] = "alice"
    for replica in (bob, mallory):
        replica.ingest(alice.missing_from(replica.heads())).raise_first()
    with pytest.raises(NotWritable):
        mallory.document(team.id).transaction().__enter__()
    bob_team = bob.document(team.id)
    with bob_team.transaction():
        bob_team.map("map")["bob"] = 1
    assert alice.members(team.id) == {ALICE.peer_id, BOB.peer_id}

    # a forged entry by a non-member citing the ACL is refused
    forged = Entry.create(
        MALLORY,
        team.id,
        1,
        ZERO_HASH,
        update_as(client_id_for(team.id, MALLORY.peer_id)),
        timestamp=1,
        acl=1,
    )
    report = alice.ingest([*bob.missing_from(alice.heads()), forged])
    assert [e.author for e in report.applied] == [BOB.peer_id]
    assert [type(r.error) for r in report.rejected] == [PolicyViolation]
    # only the owner changes the ACL
    with pytest.raises(NotWritable):
        bob.set_members(team.id, add=[MALLORY.peer_id])


def _team_where_bob_wrote(make_replica: ReplicaFactory, key: str) -> tuple[Any, ...]:
    """Alice owns a members document, makes Bob a member, and Bob writes ``key``."""
    alice, bob, carol = make_replica(ALICE), make_replica(BOB), make_replica()
    team = alice.document("team", policy=Policy.MEMBERS)
    alice.set_members(team.id, add=[BOB.peer_id])
    bob.ingest(alice.missing_from({}))
    bob_team = bob.document(team.id)
    with bob_team.transaction():
        bob_team.map("map")[key] = 1
    return alice, bob, carol, team, bob_team


def test_member_entry_waits_for_the_acl_it_cites(make_replica: ReplicaFactory) -> None:
    alice, bob, carol, team, _ = _team_where_bob_wrote(make_replica, "bob")
    bob_entries = [
        e for e in bob.missing_from({}) if isinstance(e, Entry) and e.author == BOB.peer_id
    ]
    report = carol.ingest(bob_entries)  # before the ACL: held, not refused
    assert report.applied == [] and report.pending == 1 and not report.rejected
    report = carol.ingest(alice.missing_from({}))
    assert {e.author for e in report.applied} == {ALICE.peer_id, BOB.peer_id}
    assert carol.document(team.id).map("map").to_py() == {"bob": 1.0}


def test_member_entry_citing_an_owner_update_is_admitted_when_that_update_arrives(
    make_replica: ReplicaFactory,
) -> None:
    """A member cites the owner's head, which may be an update after the ACL entry: when
    the update arrives (in another ingest), the waiting entry goes in."""
    alice, bob, carol = make_replica(ALICE), make_replica(BOB), make_replica()
    team = alice.document("team", policy=Policy.MEMBERS)
    alice.set_members(team.id, add=[BOB.peer_id])
    acl_only = alice.missing_from({})
    with team.transaction():
        team.map("map")["owner"] = 1  # the owner's head is now an update
    bob.ingest(alice.missing_from({})).raise_first()
    with bob.document(team.id).transaction():
        bob.document(team.id).map("map")["bob"] = 1
    bob_entries = [e for e in bob.missing_from({}) if e.author == BOB.peer_id]
    assert bob_entries[0].acl == 2  # it cites the owner's update, not its ACL entry
    carol.ingest(acl_only).raise_first()
    report = carol.ingest(bob_entries)
    assert report.pending == 1 and not report.rejected
    report = carol.ingest(alice.missing_from(carol.heads()))
    assert {e.author for e in report.applied} == {ALICE.peer_id, BOB.peer_id}
    assert carol.document(team.id).map("map").to_py() == {"owner": 1.0, "bob": 1.0}


def test_removed_member_is_cut_on_every_replica(make_replica: ReplicaFactory) -> None:
    alice, bob, carol, team, bob_team = _team_where_bob_wrote(make_replica, "before")
    alice.ingest(bob.missing_from(alice.heads()))
    alice.set_members(team.id, remove=[BOB.peer_id])
    # bob has not heard yet and keeps writing, citing the old ACL
    with bob_team.transaction():
        bob_team.map("map")["after"] = 2
    # carol gets bob's late entry first, then the removal: the late entry is undone
    carol.ingest(bob.missing_from({}))
    assert carol.document(team.id).map("map").to_py() == {"before": 1.0, "after": 2.0}
    carol.ingest(alice.missing_from(carol.heads()))
    # alice refuses it outright
    alice.ingest(bob.missing_from(alice.heads()))
    for replica in (alice, carol):
        assert replica.document(team.id).map("map").to_py() == {"before": 1.0}
        assert replica.document(team.id).heads()[BOB.peer_id].seq == 1
    assert alice.document(team.id).update() == carol.document(team.id).update()


def test_local_documents_never_leave_and_never_enter(make_replica: ReplicaFactory) -> None:
    alice, bob = make_replica(ALICE), make_replica(BOB)
    diary = alice.document("diary", policy=Policy.LOCAL)
    with diary.transaction():
        diary.map("map")["secret"] = 1
    assert alice.missing_from({}) == []
    assert alice.heads() == {} and len(alice.heads(include_local=True)) == 1
    with pytest.raises(NotWritable):
        alice.export(diary.id)
    smuggled = feed(MALLORY, 1, document=DocumentId(Policy.LOCAL, "diary"))
    report = bob.ingest(smuggled)
    assert [type(r.error) for r in report.rejected] == [PolicyViolation]


def test_acl_entries_in_an_open_document_are_refused(make_replica: ReplicaFactory) -> None:
    from crdt_mesh import Acl, EntryKind

    entry = Entry.create(
        MALLORY,
        NOTES,
        1,
        ZERO_HASH,
        Acl(frozenset({MALLORY.peer_id})).encode(),
        timestamp=1,
        kind=EntryKind.ACL,
    )
    report = make_replica().ingest([entry])
    assert [type(r.error) for r in report.rejected] == [PolicyViolation]


# -- forks (invariant 2) -------------------------------------------------------------------


def _forked_pair() -> tuple[list[Entry], Entry]:
    return forked(ALICE)


def test_fork_yields_a_proof_that_verifies_alone(make_replica: ReplicaFactory) -> None:
    entries, other = _forked_pair()
    bob = make_replica()
    bob.ingest(entries)
    report = bob.ingest([other])
    (proof,) = report.forks
    assert {proof.first.id, proof.second.id} == {entries[1].id, other.id}
    (rejection,) = report.rejected
    assert isinstance(rejection.error, ForkDetected) and rejection.error.proof == proof
    with pytest.raises(ForkDetected):
        report.raise_first()
    # the proof is evidence by itself: decode and verify it with no other state
    assert ForkProof.decode(proof.encode()) == proof
    carol = make_replica()
    assert carol.ingest([proof.encode()]).forks == [proof]
    assert carol.fork_proofs() == [proof]


def test_forked_feed_is_frozen_and_replicas_converge(make_replica: ReplicaFactory) -> None:
    entries, other = _forked_pair()
    bob, carol = make_replica(), make_replica()
    bob.ingest(entries)  # bob saw one branch up to seq 3
    carol.ingest([entries[0], other])  # carol saw the other branch
    bob.ingest(carol.missing_from({}))
    carol.ingest(bob.missing_from({}))
    for replica in (bob, carol):
        head = replica.document(NOTES).heads()[ALICE.peer_id]
        assert (head.seq, head.frozen) == (1, True)
        assert doc_json(replica.document(NOTES)) == {"k1": 1.0}
        assert len(replica.fork_proofs()) == 1
    # nothing more from that feed counts
    assert bob.ingest(feed(ALICE, 4)).applied == []


def test_a_replica_that_knows_a_fork_by_its_proof_takes_the_entries_before_it(
    make_replica: ReplicaFactory,
) -> None:
    """A replica that learnt of a fork from its proof alone takes the entries from
    before the fork when they come (in another ingest), as those that saw them do,
    and ignores those from the fork on: its feed ends where theirs does. (It used to
    ignore them all: its replica never converged with theirs, and anti-entropy
    offered it the same entries every round.)"""
    entries, other = _forked_pair()
    bob = make_replica()
    proof = bob.ingest([*entries, other]).forks[0]
    carol = make_replica()
    assert carol.ingest([proof.encode()]).forks == [proof]
    report = carol.ingest(entries)  # the proof is in carol's state, not this staging
    assert report.applied == [entries[0]] and report.ignored == 2
    assert carol.heads()[(NOTES, ALICE.peer_id)] == bob.heads()[(NOTES, ALICE.peer_id)]
    assert carol.heads()[(NOTES, ALICE.peer_id)].frozen
    assert doc_json(carol.document(NOTES)) == doc_json(bob.document(NOTES))


def test_proofs_survive_restart(make_replica: ReplicaFactory, tmp_path: object) -> None:
    entries, other = _forked_pair()
    bob = make_replica(BOB, name="bob")
    bob.ingest([*entries, other])
    bob.close()
    again = make_replica(BOB, name="bob")
    assert len(again.fork_proofs()) == 1
    assert again.heads()[(NOTES, ALICE.peer_id)].frozen


def test_an_entry_object_committed_lately_is_known_without_reading_the_store(
    make_replica: ReplicaFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries unpacked from a frame arrive as objects, most of them copies: a copy of
    an entry committed lately is known by its bytes' digest, as bytes are, not read
    back from the store and compared."""
    entries = feed(Identity.generate(), 4)
    replica = make_replica()
    replica.ingest(entries)
    read: list[bytes] = []
    from_store = Entry.from_store
    monkeypatch.setattr(
        Entry, "from_store", staticmethod(lambda data: read.append(data) or from_store(data))
    )
    report = replica.ingest(entries[:3])  # older than the head: the store would be read
    assert (report.duplicates, read) == (3, [])


def test_the_bytes_of_an_entry_ingested_are_hashed_once(
    make_replica: ReplicaFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest that looks an entry's bytes up in the window of entries committed
    lately is the one remembered when they commit: not computed a second time. Bytes
    of another type (a copy is made when decoded) are still remembered, hashed again."""
    import crdt_mesh.replica.replica as replica_module

    entries = feed(Identity.generate(), 6)
    hashed: list[bytes] = []
    digest = replica_module._digest
    monkeypatch.setattr(replica_module, "_digest", lambda b: hashed.append(b) or digest(b))
    replica = make_replica()
    replica.ingest([e.encoded for e in entries[:3]] + [bytearray(e.encoded) for e in entries[3:]])
    assert len(hashed) == 6 + 3
    decoded: list[bytes] = []
    decode = Entry.decode
    monkeypatch.setattr(
        Entry, "decode", staticmethod(lambda data, **kw: decoded.append(data) or decode(data, **kw))
    )
    report = replica.ingest([e.encoded for e in entries])
    assert (report.duplicates, decoded) == (6, [])  # all known by their digest


def test_forged_fork_proof_is_rejected(make_replica: ReplicaFactory) -> None:
    a1 = feed(ALICE, 1)[0]
    m1 = feed(MALLORY, 1)[0]
    bogus = cbor2.dumps(["fork", a1.encoded, m1.encoded], canonical=True)
    report = make_replica().ingest([bogus])
    assert len(report.rejected) == 1 and report.forks == []


def test_an_entry_held_already_is_not_verified_again(
    make_replica: ReplicaFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mesh hears most entries from several peers: a copy of one held (committed, or
    waiting for a gap) is a duplicate without a second signature check, and a copy of
    the very bytes committed lately is not even decoded; anything else at a held place
    (a fork) is still checked."""
    author = Identity.generate()
    entries = feed(author, 6)
    replica = make_replica()
    replica.ingest(entries[:4])
    replica.ingest([entries[5]])  # waits for entry 5
    checked: list[int] = []
    verify = Entry.verify
    monkeypatch.setattr(Entry, "verify", lambda self: checked.append(self.seq) or verify(self))
    report = replica.ingest([entries[0], entries[3], entries[5]])  # (decoded already)
    assert (report.duplicates, checked) == (3, [])
    decoded: list[bytes] = []
    decode = Entry.decode

    def counting(data: bytes, *, verify: bool = True) -> Entry:
        decoded.append(data)
        return decode(data, verify=verify)

    monkeypatch.setattr(Entry, "decode", staticmethod(counting))
    report = replica.ingest([entries[1].encoded, entries[3].encoded])  # the bytes committed
    assert (report.duplicates, decoded, checked) == (2, [], [])
    _, other = forked(author)
    report = replica.ingest([other.encoded])  # a different entry 2: verified, a fork
    assert checked == [2] and replica.fork_proofs()
