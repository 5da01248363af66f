"""A hostile peer against one sync session: what it can make us queue, and for how long.

The attack these tests stand for (issue 10, hole 1): one reconcile frame of 1,024
parts, each "the whole range, I have nothing, send it", made a node queue its
whole store 1,024 times over. Now a node queues for a peer at most the entries
that peer lacks, each once, and reads them from the store only as the link drains.
"""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_mesh import Identity, Replica
from crdt_mesh.runtime.peer import PeerSync
from crdt_mesh.sync import KEY_MAX, PROTOCOL_VERSION, ProtocolError, SyncSession
from crdt_mesh.sync.messages import Entries, Fingerprint, Hello, Items, Reconcile, decode, encode
from crdt_mesh.sync.session import MAX_UNEXPECTED
from crdt_mesh.testing.strategies import sync_frames
from tests.conftest import ReplicaFactory
from tests.helpers import entries_in
from tests.unit.test_sync_session import link, pump, write

WHOLE = (b"", KEY_MAX)
EMPTY_FP = b"\x00" * 16


def store_bytes(replica: Replica) -> int:
    """Bytes of every entry a peer may read: what a peer holding nothing lacks."""
    return sum(len(e.encoded) for e in replica.missing_from({}) if hasattr(e, "encoded"))


def victim(make_replica: ReplicaFactory, documents: int = 20, writes: int = 5) -> Replica:
    replica = make_replica()
    for d in range(documents):
        write(replica, f"doc-{d}", writes)
    return replica


def answering(replica: Replica) -> PeerSync:
    """The victim's side of a link an attacker dialled, past the hellos."""
    peer = PeerSync(replica, Identity.generate().peer_id, initiator=False)
    peer.receive(encode(Hello(PROTOCOL_VERSION, 1 << 20)))
    peer.frames()  # our hello
    return peer


def drain(peer: PeerSync) -> int:
    """Take every frame the victim would send; return the bytes of entries among them."""
    sent = 0
    while peer.has_output:
        for frame in peer.frames():
            message = decode(frame)
            if isinstance(message, Entries):  # as stored (packed, they take less)
                sent += sum(len(e.encoded) for e in entries_in(message.items))
    return sent


def opener(round_: int = 1) -> bytes:
    return encode(Reconcile(round_, 0, (Fingerprint(*WHOLE, EMPTY_FP, 0),)))


def last_reconcile(frames: list[bytes]) -> Reconcile:
    messages = [decode(f) for f in frames]
    return [m for m in messages if isinstance(m, Reconcile)][-1]


def claim_nothing(questions: Reconcile) -> tuple[Items, ...]:
    """An answer to every question that says "I hold nothing there" (a fresh peer's)."""
    return tuple(Items(q.lower, q.upper, (), isinstance(q, Fingerprint)) for q in questions.parts)


def test_a_frame_repeating_the_whole_range_is_a_breach_and_queues_nothing(
    make_replica: ReplicaFactory,
) -> None:
    peer = answering(victim(make_replica))
    peer.receive(opener())
    peer.frames()
    flood = cbor2.dumps([1, 1, 2, [[1, b"", b"", [], False]] * 1024])
    with pytest.raises(ProtocolError, match="overlap"):
        peer.receive(flood)
    assert peer.session.wants == 0


def test_what_a_peer_that_lacks_everything_gets_is_the_store_once(
    make_replica: ReplicaFactory,
) -> None:
    replica = victim(make_replica)
    peer = answering(replica)
    peer.receive(opener())
    questions = last_reconcile(peer.frames())
    # Items that answer nothing (no reply wanted) where we asked for fingerprints.
    answer = [Items(q.lower, q.upper, (), False) for q in questions.parts]
    with pytest.raises(ProtocolError, match="kind"):
        peer.receive(encode(Reconcile(1, 2, tuple(answer))))

    peer = answering(replica)
    peer.receive(opener())
    questions = last_reconcile(peer.frames())
    answer = claim_nothing(questions)
    peer.receive(encode(Reconcile(1, 2, answer)))
    for _ in range(3 * MAX_UNEXPECTED):  # the same answer again: a duplicate, dropped
        try:
            peer.receive(encode(Reconcile(1, 2, answer)))
        except ProtocolError:
            break
    else:
        raise AssertionError("an endless stream of duplicates was never refused")
    assert drain(peer) == store_bytes(replica)  # amplification 1.0: each entry once


def test_rounds_reopened_before_the_link_drains_merge_into_one_want_per_feed(
    make_replica: ReplicaFactory,
) -> None:
    replica = victim(make_replica, documents=30)
    peer = answering(replica)
    for round_ in range(1, 41):  # forty rounds, each claiming to lack everything
        peer.receive(opener(round_))
        questions = last_reconcile(peer.frames(budget=0))
        peer.receive(encode(Reconcile(round_, 2, claim_nothing(questions))))
        assert peer.session.wants <= 30  # one want per feed, whatever was asked
    assert peer.stats.rounds_opened == 40
    assert drain(peer) == store_bytes(replica)


def test_entries_are_read_from_the_store_a_slice_at_a_time(make_replica: ReplicaFactory) -> None:
    replica = make_replica()
    document = replica.document("big")
    for i in range(40):
        with document.transaction():
            document.map("m")[str(i)] = "x" * 10_000
    peer = answering(replica)
    peer.receive(opener())
    questions = last_reconcile(peer.frames())
    peer.receive(encode(Reconcile(1, 2, claim_nothing(questions))))
    sizes = []
    while peer.has_output:
        frames = peer.frames(budget=64 * 1024)
        sizes.append(sum(len(f) for f in frames))
    assert max(sizes) < 64 * 1024 + 20_000  # one slice (and the entry that crossed it)
    assert len(sizes) > 5


def test_an_answer_outside_the_questions_is_a_breach(make_replica: ReplicaFactory) -> None:
    alice, bob = victim(make_replica, documents=40), victim(make_replica, documents=40)
    left, right = link(alice, bob)  # alice dialled
    left.start_round()
    right.receive(left.frames()[-1])
    left.receive(right.frames()[-1])
    asked = last_reconcile(left.frames())
    questions = [p for p in asked.parts if isinstance(p, Fingerprint) or p.reply]
    assert len(questions) > 1  # they differ: alice asked about several ranges
    # A part that starts in the first question and runs across all the others.
    outside = Fingerprint(questions[0].lower, KEY_MAX, EMPTY_FP, 5)
    with pytest.raises(ProtocolError, match="answers nothing"):
        left.receive(encode(Reconcile(1, 3, (outside,))))


def test_a_round_opened_with_anything_but_the_whole_range_is_a_breach(
    make_replica: ReplicaFactory,
) -> None:
    peer = answering(victim(make_replica))
    part = Items(b"", KEY_MAX, (), True)
    with pytest.raises(ProtocolError, match="opens with one fingerprint"):
        peer.receive(encode(Reconcile(1, 0, (part,))))


def test_frames_of_an_abandoned_round_are_dropped_not_answered(
    make_replica: ReplicaFactory,
) -> None:
    alice, bob = victim(make_replica, documents=10), make_replica()
    write(bob, "b", 2)
    left, right = link(alice, bob)
    left.start_round()
    right.receive(left.frames()[-1])
    late = right.frames()  # bob's answer to round 1, delayed
    left.session.abandon_round()
    left.start_round()  # round 2
    for frame in late:
        left.receive(frame)
    assert left.session.stale_frames == 1
    pump(left, right)
    assert alice.heads() == bob.heads()


def test_a_two_megabyte_entry_fits_in_a_frame(make_replica: ReplicaFactory) -> None:
    alice, bob = make_replica(), make_replica()
    document = alice.document("blob")
    with document.transaction():
        document.map("m")["big"] = "x" * (2 << 20)
    left, right = link(alice, bob)
    left.start_round()
    pump(left, right)
    assert bob.heads() == alice.heads()


@given(st.data())
def test_a_hostile_peer_gets_only_protocol_errors_and_bounded_output(data: st.DataObject) -> None:
    """Any well-formed frames, with or without a hello first: only ProtocolError comes
    out, what the session queues stays within one want per feed, and what it sends
    in all is at most the store once per round the peer opened; honest sync then
    still converges on the same replica."""
    import tempfile
    from pathlib import Path

    from crdt_mesh import Durability

    with tempfile.TemporaryDirectory() as root:
        replica = Replica.open(Path(root) / "v", Identity.generate(), durability=Durability.PROCESS)
        honest = Replica.open(Path(root) / "h", Identity.generate(), durability=Durability.PROCESS)
        try:
            for d in range(6):
                write(replica, f"doc-{d}", 3)
            write(honest, "theirs", 2)
            entries = [e.encoded for e in honest.missing_from({}) if hasattr(e, "encoded")]
            peer = PeerSync(replica, Identity.generate().peer_id, initiator=False)
            if data.draw(st.booleans(), label="hello first"):
                peer.receive(encode(Hello(PROTOCOL_VERSION, 1 << 20)))
            sent = 0
            for frame in data.draw(st.lists(sync_frames(entries), max_size=25), label="frames"):
                try:
                    peer.receive(frame)
                except ProtocolError:
                    assert peer.closed
                    break
                assert peer.session.wants <= len(replica.heads())
                sent += drain(peer)
            assert sent <= (peer.stats.rounds_opened + 1) * store_bytes(replica)
            left, right = link(honest, replica)
            left.start_round()
            pump(left, right)
            assert honest.heads() == replica.heads()
        finally:
            replica.close()
            honest.close()


def test_sessions_answer_no_round_before_hello() -> None:
    session = SyncSession(Identity.generate().peer_id, Identity.generate().peer_id, initiator=False)
    session.receive(opener())
    assert session.data_to_send() == [] and not session.round_active


def test_a_peer_that_keeps_claiming_to_lack_everything_gets_the_store_once(
    make_replica: ReplicaFactory,
) -> None:
    """Rounds that each claim nothing, drained each time: the store, then only the
    allowance for what was sent already (a lossy network's resends), then nothing."""
    from crdt_mesh.runtime.peer import SendHistory

    replica = victim(make_replica, documents=10)
    history = SendHistory(allowance=10_000)
    peer = PeerSync(replica, Identity.generate().peer_id, initiator=False, history=history)
    peer.receive(encode(Hello(PROTOCOL_VERSION, 1 << 20)))
    peer.frames()
    sent = []
    for round_ in range(1, 11):
        peer.receive(opener(round_))
        questions = last_reconcile(peer.frames(budget=0))
        peer.receive(encode(Reconcile(round_, 2, claim_nothing(questions))))
        sent.append(drain(peer))
    store = store_bytes(replica)
    assert sent[0] == store
    largest = max(len(e.encoded) for e in replica.missing_from({}) if hasattr(e, "encoded"))
    assert sum(sent[1:]) <= 10_000 + largest  # the allowance, overshot by one entry at most
    assert sent[-1] == 0 and history.refused > 0
    history.grant(store, cap=store)  # the shell grants more with time
    peer.receive(opener(11))
    questions = last_reconcile(peer.frames(budget=0))
    peer.receive(encode(Reconcile(11, 2, claim_nothing(questions))))
    assert drain(peer) >= store // 2


def test_history_sends_only_the_holes_of_what_was_pushed(make_replica: ReplicaFactory) -> None:
    """Entries 2..5 were pushed (1 was not: the link was not ready); the peer asks for
    1..5 before the pushes arrive. With no allowance for resends, only 1 goes: 2..5
    are on their way. (Found by the TCP benchmark: a history that kept only the
    highest seq sent skipped 1 for ever, and one that resent made a third of the
    entries on the wire duplicates.)"""
    from crdt_mesh.runtime.peer import SendHistory

    replica = make_replica()
    write(replica, "notes", 5)
    ((document, author), head) = next(iter(replica.heads().items()))
    key = document.key + author.key
    history = SendHistory(allowance=0)
    history.record(key, 2, 5)
    peer = PeerSync(replica, Identity.generate().peer_id, initiator=False, history=history)
    peer.receive(encode(Hello(PROTOCOL_VERSION, 1 << 20)))
    peer.frames()
    peer.receive(opener())
    questions = last_reconcile(peer.frames(budget=0))
    peer.receive(encode(Reconcile(1, 2, claim_nothing(questions))))
    sent = [item for f in peer.frames() if isinstance(m := decode(f), Entries) for item in m.items]
    assert [e.seq for e in entries_in(sent)] == [1] and head.seq == 5
    assert history.first_unsent(key, 1, 5) is None


def test_entries_before_a_round_opener_count_in_its_heads(make_replica: ReplicaFactory) -> None:
    """Pushed entries and an opener that arrive in one batch: the entries are ingested
    before the round compares heads, so the peer is not asked to send them again."""
    alice, bob = make_replica(), make_replica()
    left, right = link(alice, bob)
    alice.on_commit(left.push)
    write(alice, "notes", 3)
    left.start_round()
    frames = left.frames()
    assert len(frames) >= 2  # the pushed entries, then the opener
    right.receive_many(frames)
    reply = last_reconcile(right.frames())
    assert reply.parts == ()  # in step: nothing to ask for
