"""Two sessions joined by a loop of frames: no sockets (the h11 way)."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_mesh import Identity, Policy, Replica
from crdt_mesh.runtime.index import readable_index
from crdt_mesh.runtime.peer import PeerSync
from crdt_mesh.sync import PROTOCOL_VERSION, FeedIndex, FeedItem, ProtocolError, SyncSession
from crdt_mesh.sync.messages import Hello, encode
from tests.conftest import ReplicaFactory
from tests.helpers import entries_in


def pump(a: PeerSync, b: PeerSync, limit: int = 1000) -> int:
    """Move frames both ways until neither side has any; return bytes moved."""
    moved = 0
    for _ in range(limit):
        frames_a, frames_b = a.frames(), b.frames()
        if not frames_a and not frames_b:
            return moved
        for frame in frames_a:
            moved += len(frame)
            b.receive(frame)
        for frame in frames_b:
            moved += len(frame)
            a.receive(frame)
    raise AssertionError("frames never stopped")


def link(a: Replica, b: Replica) -> tuple[PeerSync, PeerSync]:
    left, right = PeerSync(a, b.peer_id, initiator=True), PeerSync(b, a.peer_id, initiator=False)
    pump(left, right)
    assert left.ready and right.ready
    return left, right


def write(replica: Replica, name: str, count: int, **kwargs: object) -> None:
    document = replica.document(name, **kwargs)  # type: ignore[arg-type]
    for i in range(count):
        with document.transaction():
            document.map("m")[f"{replica.peer_id.short}-{i}"] = i


def test_replicas_in_step_agree_in_one_round_trip_of_two_frames(
    make_replica: ReplicaFactory,
) -> None:
    alice, bob = make_replica(), make_replica()
    for replica in (alice, bob):
        for d in range(30):
            write(replica, f"doc-{d}", 1)
    left, right = link(alice, bob)
    assert left.start_round()
    pump(left, right)
    assert alice.heads() == bob.heads()
    assert left.stats.round_frames > 2  # the first round found differences: more frames
    frames_before, right_frames_before = left.stats.round_frames, right.stats.round_frames
    sent_before = {left: left.session.bytes_sent, right: right.session.bytes_sent}
    left.session.bytes_sent = right.session.bytes_sent = 0
    assert left.start_round()
    opener = left.frames()
    right.receive(opener[0])
    answer = right.frames()
    left.receive(answer[0])
    assert (len(opener), len(answer), left.frames(), right.frames()) == (1, 1, [], [])
    assert len(opener[0]) + len(answer[0]) < 64
    assert left.stats.rounds_in_step == 1 and right.stats.rounds_in_step == 1
    # what the metrics count: two frames for the round at each end, bytes by kind
    assert left.stats.round_frames - frames_before == 2
    assert right.stats.round_frames - right_frames_before == 2
    for end in (left, right):
        totals = end.totals()
        assert sum(totals.sent_by_kind.values()) == end.session.bytes_sent + sent_before[end]
        assert sum(totals.received_by_kind.values()) == totals.bytes_received
        assert set(totals.sent_by_kind) <= {"hello", "reconcile", "entries", "broadcast"}
    # the empty answer ends the round at both ends: nothing more, nothing stale
    assert left.session.stale_frames == right.session.stale_frames == 0
    assert not left.session.round_active and not right.session.round_active


def test_a_round_fixes_every_difference_both_ways(make_replica: ReplicaFactory) -> None:
    alice, bob = make_replica(), make_replica()
    write(alice, "shared", 5)
    write(bob, "shared", 3)
    for d in range(40):
        write(alice if d % 2 else bob, f"doc-{d}", 2)
    left, right = link(alice, bob)
    left.start_round()
    pump(left, right)
    assert alice.heads() == bob.heads()
    assert alice.document("shared").map("m").to_py() == bob.document("shared").map("m").to_py()
    assert left.stats.rounds == 1


def test_local_and_foreign_members_documents_are_never_offered(
    make_replica: ReplicaFactory,
) -> None:
    alice, bob, carol = make_replica(), make_replica(), make_replica()
    write(alice, "diary", 2, policy=Policy.LOCAL)
    team = alice.document("team", policy=Policy.MEMBERS)
    alice.set_members(team.id, add=[carol.peer_id])
    write(alice, team.id.text, 2)
    write(alice, "public", 1)
    left, right = link(alice, bob)
    left.start_round()
    pump(left, right)
    assert {d.text for d in bob.documents()} == {"open:public"}
    left, right = link(alice, carol)
    left.start_round()
    pump(left, right)
    assert {d.text for d in carol.documents()} == {"open:public", team.id.text}


def test_eager_push(make_replica: ReplicaFactory) -> None:
    alice, bob = make_replica(), make_replica()
    left, right = link(alice, bob)
    alice.on_commit(left.push)
    write(alice, "notes", 3)
    pump(left, right)
    assert bob.heads() == alice.heads()


def test_a_burst_of_pushes_travels_in_one_frame_and_only_news_is_passed_on(
    make_replica: ReplicaFactory,
) -> None:
    """Entries pushed one commit at a time go in one frame, and the receiver hands
    them back to be passed on; entries a round asked for are not passed on (each
    replica's own rounds fetch them: relaying them sent most entries to most
    replicas several times over)."""
    alice, bob = make_replica(), make_replica()
    left, right = link(alice, bob)
    unsubscribe = alice.on_commit(left.push)
    write(alice, "news", 20)
    unsubscribe()
    frames = left.frames()
    assert len(frames) == 1
    news = right.receive(frames[0])
    assert [e.seq for e in news] == list(range(1, 21))
    write(alice, "old", 5)  # not pushed: only a round brings it
    assert left.start_round()
    passed_on = []
    for _ in range(20):
        frames_left, frames_right = left.frames(), right.frames()
        if not frames_left and not frames_right:
            break
        for frame in frames_left:
            passed_on.extend(right.receive(frame))
        for frame in frames_right:
            left.receive(frame)
    assert bob.heads() == alice.heads()
    assert passed_on == []


def test_forks_travel_with_their_proof(make_replica: ReplicaFactory) -> None:
    from tests.unit.test_ingest_rules import _forked_pair

    entries, other = _forked_pair()
    alice, bob = make_replica(), make_replica()
    alice.ingest([*entries, other])  # alice holds the proof, feed frozen at seq 1
    bob.ingest(entries)  # bob has the other branch up to seq 3
    left, right = link(alice, bob)
    left.start_round()
    pump(left, right)
    assert len(bob.fork_proofs()) == 1
    assert alice.heads() == bob.heads()


def test_frames_before_hello_are_dropped_unanswered() -> None:
    """A lost hello on a lossy network: what follows it (pushes, broadcasts, many of
    them) is dropped, never answered, and no breach; the shell closes a link whose
    hello never comes."""
    a, b = Identity.generate().peer_id, Identity.generate().peer_id
    session = SyncSession(a, b, initiator=False)
    for _ in range(100):
        session.receive(cbor2.dumps([2, [], True]))
    assert not session.ready and not session.closed and session.stale_frames == 100
    assert session.next_event() is None and session.data_to_send() == []


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xff\xff",
        cbor2.dumps([9]),
        cbor2.dumps([1, 1, 0, [[0, b"", b"", b"short", 1]]]),
        cbor2.dumps([1, 1, 0, [[1, b"\x01" * 48, b"\x00" * 48, [], True]]]),
        cbor2.dumps([1, 1, 0, [[1, b"", b"", [[b"k", 1, b"i", False]], True]]]),
        cbor2.dumps([1, [[0, b"", b"", b"\x00" * 16, 1]]]),  # version 1's reconcile
        cbor2.dumps([2, [1, 2], False]),
        cbor2.dumps([2, [b"entry"]]),  # version 2's entries frame: pushed or not unsaid
        cbor2.dumps([2, [b"entry"], 1]),
        cbor2.dumps([0, PROTOCOL_VERSION + 1, 1000]),  # hello twice, another version
    ],
)
def test_malformed_frames_are_protocol_errors(frame: bytes) -> None:
    a, b = Identity.generate().peer_id, Identity.generate().peer_id
    session = SyncSession(a, b, initiator=False)
    session.receive(encode(Hello(PROTOCOL_VERSION, 1 << 20)))
    with pytest.raises(ProtocolError):
        session.receive(frame)


def test_oversized_frame_is_refused() -> None:
    a, b = Identity.generate().peer_id, Identity.generate().peer_id
    session = SyncSession(a, b, initiator=False, max_frame=100)
    with pytest.raises(ProtocolError, match="exceeds"):
        session.receive(b"\x00" * 101)


def test_index_fingerprints_and_splits() -> None:
    items = [FeedItem(bytes([i]) * 48, i, bytes([i]) * 32) for i in range(1, 101)]
    index = FeedIndex(items)
    full, count = index.fingerprint(b"", b"\xff" * 49)
    assert count == 100
    parts = index.split(b"", b"\xff" * 49, 16)
    assert sum(index.fingerprint(lo, hi)[1] for lo, hi in parts) == 100
    total = sum(int.from_bytes(index.fingerprint(lo, hi)[0]) for lo, hi in parts) % (1 << 128)
    assert total.to_bytes(16, "big") == full
    changed = FeedIndex([*items[:50], FeedItem(items[50].key, 99, items[50].id), *items[51:]])
    assert changed.fingerprint(b"", b"\xff" * 49)[0] != full


@given(st.binary(max_size=300))
def test_decode_of_any_bytes_is_a_message_or_a_protocol_error(data: bytes) -> None:
    from crdt_mesh.sync.messages import decode

    with contextlib.suppress(ProtocolError):
        decode(data)


@given(st.lists(st.binary(max_size=120), max_size=20))
def test_a_session_fed_any_frames_raises_only_protocol_errors(frames: list[bytes]) -> None:
    a, b = Identity.generate().peer_id, Identity.generate().peer_id
    session = SyncSession(a, b, initiator=False)
    session.receive(encode(Hello(PROTOCOL_VERSION, 1 << 20)))
    for frame in frames:
        try:
            session.receive(frame)
        except ProtocolError:
            assert session.closed
            return


def test_the_sender_never_offers_a_local_entry(make_replica: ReplicaFactory) -> None:
    """Checked where it leaves, not where it arrives: the index a peer is shown names no
    local feed, and a peer that claims to hold nothing is sent no local entry."""
    from crdt_mesh.sync.messages import Entries, decode

    alice, bob = make_replica(), make_replica()
    write(alice, "diary", 3, policy=Policy.LOCAL)
    write(alice, "public", 2)
    diary = next(d for d in alice.documents() if d.policy is Policy.LOCAL)
    assert all(item.key[:16] != diary.key for item in readable_index(alice).for_peer(bob.peer_id))
    left, right = link(alice, bob)
    alice.on_commit(left.push)  # fresh entries are pushed eagerly too: never local ones
    write(alice, "diary", 2, policy=Policy.LOCAL)
    write(alice, "public", 1)
    sent: list[bytes] = left.frames()
    left.start_round()
    for _ in range(50):
        frames_a, frames_b = left.frames(), right.frames()
        if not frames_a and not frames_b:
            break
        sent.extend(frames_a)
        for frame in frames_a:
            right.receive(frame)
        for frame in frames_b:
            left.receive(frame)
    entries = [
        entry
        for frame in sent
        if isinstance(message := decode(frame), Entries)
        for entry in entries_in(message.items)
    ]
    assert entries and all(e.document.policy is not Policy.LOCAL for e in entries)
