"""Entries committed together are signed together: one signature over a Merkle
root, each entry with its own path. Each must still prove itself alone."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import cbor2
import pytest

from crdt_mesh import (
    Durability,
    Entry,
    ForkProof,
    Identity,
    InvalidEntry,
    InvalidSignature,
    Replica,
)
from crdt_mesh.identity import Domain
from crdt_mesh.ledger import ZERO_HASH, seal
from tests.helpers import NOTES, claimed_by

ALICE = Identity.from_seed(b"a" * 32)
MALLORY = Identity.from_seed(b"m" * 32)


def _group(identity: Identity, count: int, start_seq: int = 1) -> list[Entry]:
    entries: list[Entry] = []
    prev = ZERO_HASH
    for seq in range(start_seq, start_seq + count):
        entry = Entry.unsigned(identity.peer_id, NOTES, seq, prev, b"u%d" % seq, timestamp=seq)
        entries.append(entry)
        prev = entry.id
    return seal(identity, entries)


@pytest.mark.parametrize("count", [2, 3, 5, 8, 50])
def test_each_entry_of_a_group_verifies_on_its_own(count: int) -> None:
    group = _group(ALICE, count)
    assert len({e.signature for e in group}) == 1  # one signature for all
    for entry in group:
        again = Entry.decode(entry.encoded)
        assert again == entry and again.id == entry.id and again.proof == entry.proof
    for before, after in itertools.pairwise(group):
        after.follows(before)  # the chain does not depend on how entries are signed


def test_a_lone_entry_is_signed_on_its_own() -> None:
    (entry,) = _group(ALICE, 1)
    assert entry.proof is None
    Entry.decode(entry.encoded)


def test_every_single_byte_flip_of_a_grouped_entry_is_rejected() -> None:
    for entry in _group(ALICE, 5)[1:3]:
        data = entry.encoded
        for position in range(len(data)):
            tampered = bytearray(data)
            tampered[position] ^= 0x01
            with pytest.raises(InvalidEntry):
                Entry.decode(bytes(tampered))


def test_a_proof_moved_to_another_entry_or_group_is_rejected() -> None:
    group, other = _group(ALICE, 4), _group(ALICE, 4, start_seq=10)
    for donor in (group[2], other[1]):
        items = cbor2.loads(group[1].encoded)
        items[9] = cbor2.loads(donor.encoded)[9]
        with pytest.raises(InvalidSignature):
            Entry.decode(cbor2.dumps(items, canonical=True))
    items = cbor2.loads(group[1].encoded)
    items[9][1] = 99  # index past the tree (depth 2: 4 leaves)
    with pytest.raises(InvalidEntry):
        Entry.decode(cbor2.dumps(items, canonical=True))


def test_a_proof_index_with_bits_above_its_depth_is_malformed_not_a_new_encoding() -> None:
    """Index 5 in a 4-leaf tree walks the same path as index 1 (only the low two bits
    are read), so its signature verifies: without the bound, one entry would have two
    encodings under one id. The parser refuses it as malformed, before any signature."""
    group = _group(ALICE, 4)
    items = cbor2.loads(group[1].encoded)
    assert items[9][1] == 1
    items[9][1] = 1 | 0b100  # the same low bits: the same root, the same signature
    with pytest.raises(InvalidEntry, match="index is out of range") as caught:
        Entry.decode(cbor2.dumps(items, canonical=True))
    assert not isinstance(caught.value, InvalidSignature)


def test_a_checked_root_vouches_for_its_own_paths_only() -> None:
    """Roots already checked are remembered by signature *and* root: an entry that
    carries a checked group's signature with another path is checked, and refused."""
    group = _group(ALICE, 4)
    group[0].verify()  # the group's root is now remembered
    items = cbor2.loads(group[2].encoded)
    items[9][2][0] = bytes(32)  # another sibling: another root, the same signature
    with pytest.raises(InvalidSignature):
        Entry.decode(cbor2.dumps(items, canonical=True))


def test_a_group_signed_by_someone_else_is_rejected() -> None:
    forged = _group(MALLORY, 3)
    with pytest.raises(InvalidSignature):
        Entry.decode(claimed_by(forged[0].encoded, ALICE.peer_id))


def test_an_unsigned_entry_never_verifies_and_sealing_is_for_its_author() -> None:
    entry = Entry.unsigned(ALICE.peer_id, NOTES, 1, ZERO_HASH, b"u", timestamp=1)
    with pytest.raises(InvalidSignature):
        entry.verify()
    with pytest.raises(InvalidEntry):
        seal(MALLORY, [entry])


def test_a_fork_between_grouped_entries_is_a_self_contained_proof() -> None:
    one, other = _group(ALICE, 3)[1], _group(ALICE, 3, start_seq=1)[1]
    assert one.id == other.id  # the same fields: the same entry, however signed
    rival = seal(
        ALICE,
        [
            Entry.unsigned(ALICE.peer_id, NOTES, 1, ZERO_HASH, b"x", timestamp=1),
            Entry.unsigned(ALICE.peer_id, NOTES, 2, one.prev, b"different", timestamp=2),
        ],
    )[1]
    proof = ForkProof.of(one, rival)
    assert ForkProof.decode(proof.encode()) == proof


def test_a_batch_replicates_entry_by_entry_in_any_order(tmp_path: Path) -> None:
    with (
        Replica.open(tmp_path / "a", ALICE, durability=Durability.PROCESS) as a,
        Replica.open(tmp_path / "b", MALLORY, durability=Durability.PROCESS) as b,
    ):
        notes = a.document("notes")
        with a.batch():
            for i in range(20):
                with notes.transaction():
                    notes.map("m")[str(i)] = i
        entries = a.missing_from({})
        assert len(entries) == 20 and all(e.proof is not None for e in entries)
        random.Random(7).shuffle(entries)
        for entry in entries:
            report = b.ingest([Entry.decode(entry.encoded, verify=False).encoded])
            report.raise_first()
        assert b.heads() == a.heads()
        assert b.document("notes").map("m").to_py() == {str(i): float(i) for i in range(20)}


def test_helper_processes_check_a_group_once_and_still_catch_a_forgery(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "a", ALICE, durability=Durability.PROCESS) as a:
        notes = a.document("notes")
        with a.batch():
            for i in range(600):
                with notes.transaction():
                    notes.map("m")[str(i)] = i
        encoded = [e.encoded for e in a.missing_from({})]
    items = cbor2.loads(encoded[300])
    items[9][0] = MALLORY.sign(
        Domain.ENTRY_GROUP, b"anything"
    )  # a group signature that is not Alice's
    encoded[300] = cbor2.dumps(items, canonical=True)
    with Replica.open(
        tmp_path / "b", MALLORY, durability=Durability.PROCESS, verify_processes=1
    ) as b:
        report = b.ingest(encoded)
        assert [r.item.seq for r in report.rejected] == [301]  # type: ignore[union-attr]
        assert isinstance(report.rejected[0].error, InvalidSignature)
        assert len(report.applied) == 300  # the chain waits at the forgery
        assert report.pending == 299


def test_the_hand_written_proof_encoding_is_canonical_cbor() -> None:
    from crdt_mesh.ledger.entry import _auth_field

    signature = bytes(range(64))
    for index, depth in ((0, 1), (5, 3), (23, 5), (24, 5), (63, 6), (255, 8), (300, 9)):
        siblings = tuple(bytes([i]) * 32 for i in range(depth))
        expected = cbor2.dumps([signature, index, list(siblings)], canonical=True)
        assert _auth_field(signature, (index, siblings)) == expected
