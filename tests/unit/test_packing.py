"""Entries packed for the wire: unpacking gives back the very entries packed, a
whole group costs its signature once, and a bad pack is refused before work."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mesh import DocumentId, Entry, Identity, InvalidEntry, InvalidSignature, Policy
from crdt_mesh.ledger import ZERO_HASH, seal
from crdt_mesh.ledger.packing import pack, unpack

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
DOCS = (DocumentId(Policy.OPEN, "notes"), DocumentId(Policy.OPEN, "plans"))
LIMIT = 1 << 22


def _history(identity: Identity, batches: tuple[int, ...], seed: int) -> list[Entry]:
    """Batches of entries of ``identity`` over two documents (alternating), each batch
    sealed as one group; timestamps go back and forth."""
    rng = random.Random(seed)
    heads = {doc: (0, ZERO_HASH) for doc in DOCS}
    out: list[Entry] = []
    for size in batches:
        drafts = []
        for i in range(size):
            doc = DOCS[i % 2 if size > 3 else 0]
            seq, prev = heads[doc]
            draft = Entry.unsigned(
                identity.peer_id,
                doc,
                seq + 1,
                prev,
                rng.randbytes(rng.randint(0, 40)),
                timestamp=rng.randint(0, 2**41),
                acl=rng.choice((0, 0, 7)),
            )
            heads[doc] = (seq + 1, draft.id)
            drafts.append(draft)
        out.extend(seal(identity, drafts))
    return out


POOL = _history(ALICE, (1, 3, 50, 64, 70, 1), 1) + _history(BOB, (2, 33, 1), 2)


def _round_trip(entries: list[Entry]) -> list[Entry]:
    """Packed, through CBOR (as on the wire), and unpacked."""
    wire = cbor2.loads(cbor2.dumps(pack(entries)))
    return [e for packed in wire for e in unpack(packed, max_bytes=LIMIT, max_entries=4096)]


def _same(a: Entry, b: Entry) -> bool:
    return (a, a.encoded, a.id, a.proof) == (b, b.encoded, b.id, b.proof)


@settings(deadline=None)
@given(st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=120), st.randoms())
def test_unpacking_gives_back_the_very_entries_packed(picked: list[int], rng: Any) -> None:
    chosen = [POOL[i] for i in picked]
    rng.shuffle(chosen)
    unpacked = _round_trip(chosen)
    unique = list({e.id: e for e in chosen}.values())
    assert sorted(e.id for e in unpacked) == sorted(e.id for e in unique)
    by_id = {e.id: e for e in unpacked}
    for entry in unique:
        again = by_id[entry.id]
        assert _same(again, entry)
        again.verify()  # each proves itself alone, as the stored entry does


def test_a_whole_group_costs_its_signature_once() -> None:
    drafts, prev = [], ZERO_HASH
    for seq in range(1, 51):  # a burst of small writes to one document, a ms apart
        drafts.append(
            Entry.unsigned(ALICE.peer_id, DOCS[0], seq, prev, b"u" * 25, timestamp=10**12 + seq)
        )
        prev = drafts[-1].id
    group = seal(ALICE, drafts)
    random.Random(3).shuffle(group)  # in any order
    packed = len(cbor2.dumps(pack(group)))
    encoded = sum(len(e.encoded) for e in group)
    payload = sum(len(e.payload) for e in group)
    assert packed < encoded / 4
    # per entry: its own fields (timestamp, kind, acl, payload) and a few bytes more
    assert (packed - payload) / len(group) < 20


def test_entries_of_a_group_sent_apart_still_prove_themselves() -> None:
    group = [e for e in POOL if e.signature == POOL[4].signature]
    for some in ([group[7]], group[::3], group[10:12]):
        by_id = {e.id: e for e in _round_trip(some)}
        assert len(by_id) == len(some)
        assert all(_same(by_id[entry.id], entry) for entry in some)


def test_from_store_reads_what_decode_reads() -> None:
    for entry in POOL[:10] + POOL[-5:]:
        assert _same(Entry.from_store(entry.encoded), Entry.decode(entry.encoded))


def test_a_changed_payload_unpacks_but_does_not_verify() -> None:
    (packed,) = cbor2.loads(cbor2.dumps(pack(POOL[4:10])))
    packed[2][0][3][1][3] = b"forged"  # second entry of the first run
    unpacked = unpack(packed, max_bytes=LIMIT, max_entries=4096)
    with pytest.raises(InvalidSignature):
        unpacked[1].verify()


def _packed(entries: list[Entry]) -> list[Any]:
    (packed,) = cbor2.loads(cbor2.dumps(pack(entries)))
    return list(packed)


GROUP = [e for e in POOL if e.signature == POOL[4].signature]


def _drop_hash(p: list[Any]) -> None:
    p[1][0][2].pop()


def _extra_hash(p: list[Any]) -> None:
    p[1][0][2].append(bytes(32))


def _unused_group(p: list[Any]) -> None:
    p[1].append([bytes(64), 2, []])


def _same_leaf(p: list[Any]) -> None:
    p[2][0][3][1][5] = p[2][0][3][0][5]


def _index_out(p: list[Any]) -> None:
    p[2][0][3][0][5] = 64


def _no_such_group(p: list[Any]) -> None:
    p[2][0][3][0][4] = 3


def _deep(p: list[Any]) -> None:
    p[1][0][1] = 7


def _negative_time(p: list[Any]) -> None:
    p[2][0][3][0][0] = -1


def _bad_kind(p: list[Any]) -> None:
    p[2][0][3][0][1] = 9


def _bad_author(p: list[Any]) -> None:
    p[0] = b"x"


def _empty_run(p: list[Any]) -> None:
    p[2][0][3] = []


def _bad_document(p: list[Any]) -> None:
    p[2][0][0] = "nope"


@pytest.mark.parametrize(
    "spoil",
    [
        _drop_hash,
        _extra_hash,
        _unused_group,
        _same_leaf,
        _index_out,
        _no_such_group,
        _deep,
        _negative_time,
        _bad_kind,
        _bad_author,
        _empty_run,
        _bad_document,
    ],
)
def test_a_malformed_pack_is_refused_with_a_typed_error(spoil: Any) -> None:
    packed = _packed(GROUP[:40])
    unpack(packed, max_bytes=LIMIT, max_entries=4096)  # well formed before
    spoil(packed)
    with pytest.raises(InvalidEntry):
        unpack(packed, max_bytes=LIMIT, max_entries=4096)


def test_a_pack_past_its_bounds_is_refused() -> None:
    packed = _packed(GROUP)
    encoded = sum(len(e.encoded) for e in GROUP)
    assert len(unpack(packed, max_bytes=encoded, max_entries=50)) == 50
    with pytest.raises(InvalidEntry, match="more than 49 entries"):
        unpack(packed, max_bytes=encoded, max_entries=49)
    with pytest.raises(InvalidEntry, match="exceed"):
        unpack(packed, max_bytes=encoded - 1, max_entries=50)


def test_only_signed_entries_are_packed() -> None:
    draft = Entry.unsigned(ALICE.peer_id, DOCS[0], 1, ZERO_HASH, b"", timestamp=1)
    with pytest.raises(InvalidEntry):
        pack([draft])


def test_consecutive_entries_of_two_forked_chains_keep_their_own_prev() -> None:
    def chain(tag: bytes) -> list[Entry]:
        out, prev = [], ZERO_HASH
        for seq in (1, 2, 3):
            payload = b"same" if seq == 1 else tag + bytes([seq])
            out.append(Entry.create(ALICE, DOCS[0], seq, prev, payload, timestamp=seq))
            prev = out[-1].id
        return out

    ours, theirs = chain(b"x"), chain(b"y")  # an author who equivocated at seq 2
    assert ours[0] == theirs[0] and ours[1].id != theirs[1].id
    for some in ([ours[1], theirs[2]], [theirs[1], ours[2], ours[1], theirs[2]]):
        by_id = {e.id: e for e in _round_trip(some)}
        assert all(_same(by_id[entry.id], entry) for entry in some)


def test_a_frame_with_a_bad_pack_is_a_protocol_error_and_packs_count_in_its_bounds() -> None:
    from crdt_mesh.sync.messages import MAX_ENTRIES, Entries, ProtocolError, decode, encode

    frame = encode(Entries(tuple(GROUP), pushed=True))
    message = decode(frame)
    assert isinstance(message, Entries) and message.pushed
    assert sorted(e.id for e in message.items if isinstance(e, Entry)) == sorted(
        e.id for e in GROUP
    )
    with pytest.raises(ProtocolError, match="exceed"):
        decode(frame, max_unpacked=sum(len(e.encoded) for e in GROUP) - 1)
    kind, items, pushed = cbor2.loads(frame)
    spoiled = _packed(GROUP)
    _drop_hash(spoiled)
    with pytest.raises(ProtocolError, match="pack"):
        decode(cbor2.dumps([kind, [spoiled], pushed]))
    many = MAX_ENTRIES // len(GROUP) + 1  # the same pack again and again: over the frame's bound
    with pytest.raises(ProtocolError, match="holds"):
        decode(cbor2.dumps([kind, items * many, pushed]))


def test_entries_signed_alone_travel_as_their_bytes_and_grouped_ones_packed() -> None:
    from crdt_mesh.runtime.peer import _grouped
    from crdt_mesh.sync.messages import Entries, encode

    alone = [e for e in POOL if e.proof is None]
    assert alone and all(_grouped(e.encoded) == e.encoded for e in alone)
    assert all(_grouped(e.encoded) == e for e in GROUP)  # read, to be packed
    _, items, _ = cbor2.loads(encode(Entries((*alone, *GROUP))))
    assert [i for i in items if isinstance(i, bytes)] == [e.encoded for e in alone]
    (packed,) = [i for i in items if isinstance(i, list)]
    assert len(unpack(packed, max_bytes=LIMIT, max_entries=4096)) == len(GROUP)


_ANY = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.binary(max_size=70) | st.text(),
    lambda children: st.lists(children, max_size=7),
    max_leaves=40,
)


@settings(deadline=None)
@given(_ANY)
def test_anything_unpacked_is_an_entry_or_a_typed_refusal(value: Any) -> None:
    try:
        unpacked = unpack(value, max_bytes=LIMIT, max_entries=64)
    except InvalidEntry:
        return
    assert all(isinstance(e, Entry) for e in unpacked)


@settings(deadline=None)
@given(st.data())
def test_a_pack_with_one_field_replaced_is_unpacked_or_refused_with_a_typed_error(
    data: st.DataObject,
) -> None:
    alone = [e for e in POOL if e.author == ALICE.peer_id and e.proof is None]
    packed = _packed(GROUP[:9] + alone)  # one pack: a group's entries and lone ones
    # walk to a random place in the pack and put anything there
    node: Any = packed
    while True:
        index = data.draw(st.integers(0, len(node) - 1))
        if not isinstance(node[index], list) or data.draw(st.booleans()):
            node[index] = data.draw(_ANY)
            break
        node = node[index]
    with contextlib.suppress(InvalidEntry):  # refused: typed; anything else fails
        unpack(packed, max_bytes=LIMIT, max_entries=64)
