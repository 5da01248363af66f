from __future__ import annotations

import contextlib
import dataclasses

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_mesh import (
    ChainError,
    DocumentId,
    Entry,
    Identity,
    InvalidDocumentId,
    InvalidEntry,
    InvalidSignature,
    PeerId,
    Policy,
    client_id_for,
)
from crdt_mesh.ledger import ZERO_HASH
from tests.helpers import NOTES, feed, forged_by

ALICE = Identity.from_seed(b"a" * 32)
MALLORY = Identity.from_seed(b"m" * 32)


def test_round_trip_and_id_is_stable() -> None:
    entry = feed(ALICE, 1)[0]
    again = Entry.decode(entry.encoded)
    assert again == entry
    assert again.id == entry.id and len(entry.id) == 32
    assert again.author == ALICE.peer_id and again.document == NOTES


def test_an_entry_holds_each_field_it_is_built_with_and_stays_frozen() -> None:
    """Entry's constructor is written by hand (for speed): each argument lands in its
    own field, by position or by name, and fields cannot be set afterwards."""
    values = {f.name: object() for f in dataclasses.fields(Entry)}  # each its own
    for built in (Entry(*values.values()), Entry(**values)):  # type: ignore[arg-type]
        assert {name: getattr(built, name) for name in values} == values
    entry = feed(ALICE, 2)[1]
    assert dataclasses.replace(entry, seq=3).seq == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.seq = 3  # type: ignore[misc]


def test_every_single_byte_flip_is_rejected() -> None:
    for entry in feed(ALICE, 3):
        data = entry.encoded
        for position in range(len(data)):
            for flip in (0x01, 0x80, 0xFF):
                tampered = bytearray(data)
                tampered[position] ^= flip
                with pytest.raises(InvalidEntry):
                    Entry.decode(bytes(tampered))


def test_valid_signature_by_the_wrong_key_is_rejected() -> None:
    entry = feed(ALICE, 1)[0]
    with pytest.raises(InvalidSignature):  # claims Alice wrote it; the signature is Mallory's
        Entry.decode(forged_by(MALLORY, entry))


def test_non_canonical_encoding_is_rejected() -> None:
    entry = feed(ALICE, 1)[0]
    items = cbor2.loads(entry.encoded)
    indefinite = b"\x9f" + b"".join(cbor2.dumps(i, canonical=True) for i in items) + b"\xff"
    with pytest.raises(InvalidEntry):
        Entry.decode(indefinite)
    parts = [cbor2.dumps(i, canonical=True) for i in items]
    parts[3] = b"\x19\x00\x01"  # seq 1 as a 16-bit integer: same value, longer bytes
    long_int = b"\x8a" + b"".join(parts)
    assert cbor2.loads(long_int) == items
    with pytest.raises(InvalidEntry, match="canonical"):
        Entry.decode(long_int)


@given(st.binary(max_size=400))
def test_decode_of_any_bytes_is_an_entry_or_a_typed_error(data: bytes) -> None:
    with contextlib.suppress(InvalidEntry):
        Entry.decode(data)


@given(
    st.lists(
        st.one_of(st.integers(), st.binary(max_size=40), st.text(max_size=20), st.none()),
        min_size=10,
        max_size=10,
    )
)
def test_decode_of_any_ten_item_array_is_typed(items: list[object]) -> None:
    with contextlib.suppress(InvalidEntry):
        Entry.decode(cbor2.dumps(items))


def test_chain_checks_seq_and_prev() -> None:
    first, second, third = feed(ALICE, 3)
    first.follows(None)
    second.follows(first)
    with pytest.raises(ChainError):
        third.follows(first)
    with pytest.raises(ChainError):
        second.follows(None)


def test_create_rejects_bad_fields() -> None:
    with pytest.raises(InvalidEntry):
        Entry.create(ALICE, NOTES, 0, ZERO_HASH, b"", timestamp=0)
    with pytest.raises(InvalidEntry):
        Entry.create(ALICE, NOTES, 1, b"\x01" * 32, b"", timestamp=0)
    with pytest.raises(InvalidEntry):
        Entry.create(ALICE, NOTES, 2, b"short", b"", timestamp=0)


def test_document_ids_commit_to_policy_and_owner() -> None:
    owner = ALICE.peer_id
    doc = DocumentId(Policy.OWNER, "profile", owner)
    assert DocumentId.parse(str(doc)) == doc
    assert str(doc) == f"owner:{owner}:profile"
    assert DocumentId.parse("open:a:b") == DocumentId(Policy.OPEN, "a:b")
    assert doc.key != DocumentId(Policy.OWNER, "profile", MALLORY.peer_id).key
    for bad in (
        "",
        "nope:x",
        "open:",
        f"owner:{str(ALICE.peer_id)[:-1]}7:p",
        "owner:short:p",
        "local:\x00",
    ):
        with pytest.raises(InvalidDocumentId):
            DocumentId.parse(bad)
    with pytest.raises(InvalidDocumentId):
        DocumentId(Policy.OPEN, "x", owner)
    with pytest.raises(InvalidDocumentId):
        DocumentId(Policy.MEMBERS, "x")
    assert isinstance(owner, PeerId)


@given(st.data())
def test_decode_of_any_mutation_of_a_valid_entry_is_typed(data: st.DataObject) -> None:
    entry = feed(ALICE, 2)[1]
    raw = bytearray(entry.encoded)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            del raw[at : at + data.draw(st.integers(1, 8))]
        elif op == "replace" and raw:
            raw[at] = data.draw(st.integers(0, 255))
        else:
            del raw[at:]
    try:
        decoded = Entry.decode(bytes(raw))
    except InvalidEntry:
        return
    assert decoded == entry  # only an identity mutation may decode


def test_a_client_id_is_per_author_and_document_and_derived_once() -> None:
    """Every update ingested is checked against its author's client id: a feed's id is
    derived from the keys once, then remembered; it still differs by document and
    author, and fits in a JavaScript-safe integer (Yjs peers read it)."""
    from crdt_mesh.ledger import ids

    other_doc = DocumentId(Policy.OPEN, "other")
    ids._client_id.cache_clear()
    first = client_id_for(NOTES, ALICE.peer_id)
    assert client_id_for(DocumentId.parse(NOTES.text), PeerId(ALICE.peer_id.key)) == first
    assert ids._client_id.cache_info().hits == 1
    others = {client_id_for(other_doc, ALICE.peer_id), client_id_for(NOTES, MALLORY.peer_id)}
    assert first not in others and len(others) == 2
    assert all(0 <= cid < 2**53 for cid in {first, *others})


def test_an_encoding_of_the_same_length_and_values_is_refused_unless_canonical() -> None:
    """cbor2 reads shared values (tags 28 and 29): a field that repeats another is
    shorter so written, and padded integers can make up the bytes saved. The same
    values at the same length, signature valid: refused, or the one entry would have
    two encodings (two digests, two ways to be counted)."""
    entry = Entry.create(ALICE, NOTES, 1, ZERO_HASH, b"\x00" * 32, timestamp=1)
    items = cbor2.loads(entry.encoded)
    assert items[4] == items[8]  # prev (zero on a feed's first entry) and payload alike

    def padded(value: int, head: int, width: int) -> bytes:
        return bytes((head,)) + value.to_bytes(width, "big")

    def canonical(value: object) -> bytes:
        return cbor2.dumps(value, canonical=True)

    version, doc, author, seq, prev, timestamp, kind, acl, _, signature = items
    shared = b"\x8a" + b"".join(
        [
            padded(version, 0x1B, 8),
            canonical(doc),
            canonical(author),
            padded(seq, 0x1B, 8),
            b"\xd8\x1c" + canonical(prev),  # marked shareable
            padded(timestamp, 0x1B, 8),
            padded(kind, 0x1A, 4),
            padded(acl, 0x18, 1),
            b"\xd8\x1d\x00",  # the payload: the value shared first
            canonical(signature),
        ]
    )
    assert len(shared) == len(entry.encoded) and cbor2.loads(shared) == items
    with pytest.raises(InvalidEntry, match="canonical"):
        Entry.decode(shared)
    followed = entry.encoded + canonical(signature)  # cbor2 ignores bytes after the entry
    assert cbor2.loads(followed) == items
    with pytest.raises(InvalidEntry, match="canonical"):
        Entry.decode(followed)


def test_authors_decoded_are_remembered_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding looks an entry's author up by key (building a PeerId per entry cost a
    sixth of decoding it); a peer sending entries of ever new authors cannot make
    the cache grow past its bound. Bytes in a bytearray or memoryview decode alike."""
    from crdt_mesh.ledger import entry as entry_module

    monkeypatch.setattr(entry_module, "_AUTHORS", {})
    monkeypatch.setattr(entry_module, "_AUTHORS_MAX", 8)
    writers = [Identity.from_seed(bytes([i]) * 32) for i in range(20)]
    sizes = []
    for writer in writers:
        entry = feed(writer, 1)[0]
        first, again = Entry.decode(entry.encoded), Entry.decode(memoryview(entry.encoded))
        assert first == entry and again == entry and first.author == writer.peer_id
        assert again.author is first.author  # remembered, not built again
        sizes.append(len(entry_module._AUTHORS))
    assert max(sizes) <= 8 and sizes[-1] >= 1
    assert Entry.decode(bytearray(feed(ALICE, 1)[0].encoded)).author == ALICE.peer_id
