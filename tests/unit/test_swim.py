"""The SWIM/Lifeguard core, driven by hand: frames in, frames and changes out."""

from __future__ import annotations

import random

import cbor2
import pytest

from crdt_mesh.identity import Domain, Identity, PeerId
from crdt_mesh.services.gossip.swim import (
    FailureDetector,
    MemberChange,
    Status,
    SwimSettings,
    seed_members,
)

SETTINGS = SwimSettings(period=1.0, probe_timeout=0.5)


def _group(count: int) -> list[FailureDetector]:
    group = [
        FailureDetector(
            Identity.from_seed(bytes([i]) * 32), settings=SETTINGS, rng=random.Random(i)
        )
        for i in range(count)
    ]
    seed_members(group)
    return group


def _route(group: list[FailureDetector], now: float, down: set[PeerId] = frozenset()) -> int:
    """Deliver every frame in flight (and the answers they cause) at ``now``."""
    by_id = {d.me: d for d in group}
    moved = 0
    while True:
        batch = [(d.me, to, frame) for d in group for to, frame in d.outbox()]
        if not batch:
            return moved
        for sender, to, frame in batch:
            if to in down or sender in down:
                continue
            by_id[to].receive(sender, frame, now)
            moved += 1


def _run(group: list[FailureDetector], until: float, down: set[PeerId] = frozenset()) -> None:
    now = 0.0
    while now <= until:
        for detector in group:
            if detector.me not in down:
                detector.tick(now)
        _route(group, now, down)
        now += 0.1


def test_members_that_answer_stay_alive_and_healthy() -> None:
    group = _group(4)
    _run(group, until=20)
    for detector in group:
        assert detector.live() == sorted((d.me for d in group if d is not detector), key=str)
        assert detector.health == 0
        assert all(c.status is Status.ALIVE for c in detector.changes())


def test_a_silent_member_is_suspected_then_declared_dead() -> None:
    group = _group(5)
    silent = group[2].me
    _run(group, until=60, down={silent})
    for detector in group:
        if detector.me != silent:
            assert detector.status(silent) is Status.DEAD
            statuses = [c.status for c in detector.changes() if c.peer == silent]
            assert statuses[-1] is Status.DEAD


def test_a_suspected_member_refutes_with_a_higher_incarnation() -> None:
    a, b, c = _group(3)
    before = b.incarnation
    # a tells b that c suspects it: b must refute, and a must believe the refutation
    a._suspect(b.me, a._member(b.me), b.incarnation, c.me, now=0.0)
    assert a.status(b.me) is Status.SUSPECT
    _run([a, b, c], until=5)
    assert b.incarnation == before + 1
    assert a.status(b.me) is Status.ALIVE and c.status(b.me) is Status.ALIVE


def test_nobody_can_refute_for_another_member() -> None:
    a, b, mallory = _group(3)
    a._suspect(b.me, a._member(b.me), 0, mallory.me, now=0.0)
    forged = mallory.identity.sign(Domain.SWIM_ALIVE, cbor2.dumps([b.me.key, 5, False]))
    # mallory relays an alive update for b, signed by mallory rather than by b
    frame = _frame(
        mallory, {"k": "ping", "seq": 1, "to": a.me.key, "u": [[0, b.me.key, 5, forged]]}
    )
    a.receive(mallory.me, frame, 0.0)
    assert a.status(b.me) is Status.SUSPECT and a.dropped == 1


def test_an_ack_relayed_for_a_silent_member_must_be_signed_by_it() -> None:
    """An intermediary cannot vouch for a member that does not answer."""
    a, b, c = _group(3)
    a.tick(0.0)
    ping_to, _ = a.outbox()[0]
    target = next(d for d in (b, c) if d.me == ping_to)
    liar = c if target is b else b
    a.tick(0.6)  # no direct ack: a asks the other to probe indirectly
    requests = a.outbox()
    assert [to for to, _ in requests] == [liar.me]
    probe_seq = cbor2.loads(cbor2.loads(requests[0][1])[0])["seq"]
    fake = _frame(liar, {"k": "ack", "seq": 99, "to": a.me.key, "for": [a.me.key, probe_seq]})
    fake_body = cbor2.loads(cbor2.loads(fake)[0])
    fake_body["from"] = target.me.key  # claims to be the target, signed by the liar
    encoded = cbor2.dumps(fake_body, canonical=True)
    a.receive(liar.me, cbor2.dumps([encoded, liar.identity.sign(Domain.BROADCAST, encoded)]), 0.7)
    a.tick(1.1)
    assert a.status(target.me) is Status.SUSPECT and a.dropped == 1


def test_lifeguard_suspicion_timeout_shrinks_with_confirmations() -> None:
    (detector,) = _group(1)
    for i in range(20):
        detector.add(Identity.from_seed(bytes([100 + i]) * 32).peer_id)
    timeouts = [detector._suspicion_timeout(accusers) for accusers in (1, 2, 3, 4, 5)]
    assert timeouts == sorted(timeouts, reverse=True)
    assert timeouts[0] == pytest.approx(6 * timeouts[3])  # from max down to min at K=3
    assert timeouts[3] == pytest.approx(timeouts[4])
    plain = FailureDetector(detector.identity, settings=SwimSettings(lifeguard=False))
    assert plain._suspicion_timeout(1) == plain._suspicion_timeout(4)


def test_a_member_that_leaves_is_not_probed() -> None:
    group = _group(4)
    leaver = group[3]
    leaver.leave()
    _route(group, 0.0)
    _run(group, until=5)
    for detector in group[:3]:
        assert detector.status(leaver.me) is Status.LEFT
        assert leaver.me not in detector.live()
        assert all(to != leaver.me for to, _ in detector.outbox())
        assert MemberChange(leaver.me, Status.LEFT, 0, Status.ALIVE) in detector.changes()


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", cbor2.dumps([1, 2]), cbor2.dumps([b"x", b"y"]), b"\x00" * 20_000],
)
def test_malformed_frames_are_dropped_and_change_nothing(data: bytes) -> None:
    a, b = _group(2)
    a.receive(b.me, data, 0.0)
    assert a.dropped == 1 and a.outbox() == [] and a.changes() == []
    assert a.status(b.me) is Status.ALIVE


def _frame(author: FailureDetector, body: dict[str, object]) -> bytes:
    """A frame as ``author`` would sign it, with the body given."""
    full = {
        "v": 1,
        "from": author.me.key,
        "inc": author.incarnation,
        "proof": author._proof,
        "u": [],
    }
    full.update(body)
    encoded = cbor2.dumps(full, canonical=True)
    return cbor2.dumps([encoded, author.identity.sign(Domain.SWIM_FRAME, encoded)])


def test_a_stale_suspicion_never_wins_over_a_newer_incarnation() -> None:
    """Incarnations order what is said of a member: a suspicion of an older incarnation
    changes nothing; one of the current incarnation makes it suspect; the member's own
    alive update at a higher incarnation clears it; and then the old suspicion again
    changes nothing."""
    a, b, c = _group(3)

    def alive_from_b() -> None:  # b's own signed word, as it travels in updates
        a._apply([Status.ALIVE.value, b.me.key, b.incarnation, b._proof], now=0.0)

    b._refute()
    b._refute()  # b is at incarnation 2 now, and a hears of it
    alive_from_b()
    assert a._member(b.me).incarnation == 2 and a.status(b.me) is Status.ALIVE
    a._apply([Status.SUSPECT.value, b.me.key, 1, c.me.key], now=0.0)
    assert a.status(b.me) is Status.ALIVE  # stale: about incarnation 1
    a._apply([Status.DEAD.value, b.me.key, 1, c.me.key], now=0.0)
    assert a.status(b.me) is Status.ALIVE  # stale too
    a._apply([Status.SUSPECT.value, b.me.key, 2, c.me.key], now=0.0)
    assert a.status(b.me) is Status.SUSPECT
    b._refute()  # incarnation 3, signed by b
    alive_from_b()
    assert a.status(b.me) is Status.ALIVE and a._member(b.me).incarnation == 3
    a._apply([Status.SUSPECT.value, b.me.key, 2, c.me.key], now=0.2)
    assert a.status(b.me) is Status.ALIVE


def test_over_an_overlay_a_member_probes_only_its_neighbours_and_news_still_spreads() -> None:
    """Ten members on a ring (each linked to the next and the one before): every
    frame goes to a neighbour, whether all answer or one falls silent (no probe ever
    needs a link of its own: a helper not linked to the target nacks at once), and
    every other member declares the silent one dead, the news riding on the ring."""
    identities = [Identity.from_seed(bytes([40 + i]) * 32) for i in range(10)]
    ids = [i.peer_id for i in identities]
    ring = {ids[i]: {ids[(i - 1) % 10], ids[(i + 1) % 10]} for i in range(10)}
    group = [
        FailureDetector(
            identity,
            settings=SETTINGS,
            rng=random.Random(i),
            neighbours=lambda me=identity.peer_id: ring[me],
        )
        for i, identity in enumerate(identities)
    ]
    seed_members(group)
    by_id = {d.me: d for d in group}
    silent = ids[4]

    def run(start: float, until: float, down: set[PeerId]) -> list[tuple[PeerId, bytes]]:
        """Frames sent to a member that is not a neighbour: (to, frame)."""
        far, now = [], start
        while now <= until:
            for detector in group:
                if detector.me not in down:
                    detector.tick(now)
            while batch := [(d.me, to, f) for d in group for to, f in d.outbox()]:
                for sender, to, frame in batch:
                    if to not in ring[sender]:
                        far.append((to, frame))
                    if not down & {sender, to}:
                        by_id[to].receive(sender, frame, now)
            now += 0.1
        return far

    assert run(0.0, 30.0, set()) == []
    assert run(30.1, 150.0, {silent}) == []
    for detector in group:
        if detector.me != silent:
            assert detector.status(silent) is Status.DEAD, detector.me


def test_a_neighbour_lost_without_a_word_is_suspected_and_refutes_if_it_lives() -> None:
    """The shell reports a link that ended without a parting word: the member is
    suspect at once (no probe of it over a new link); alive, it refutes on hearing."""
    a, b, c = _group(3)
    a.lost(b.me, 0.0)
    assert a.status(b.me) is Status.SUSPECT
    _route([a, b, c], 0.0)  # nothing was sent: a is linked to nobody new
    a.tick(0.1)  # a's next probe (of b or c) carries the suspicion ...
    _route([a, b, c], 0.1)
    for now in (0.2, 1.2, 2.2, 3.2):  # ... and b refutes it, however it heard
        for d in (a, b, c):
            d.tick(now)
        _route([a, b, c], now)
    assert a.status(b.me) is Status.ALIVE and b.incarnation > 0


def test_losing_a_member_that_is_dead_left_or_unknown_changes_nothing() -> None:
    a, b, c, d = _group(4)
    stranger = Identity.from_seed(b"\x77" * 32).peer_id
    a._apply([Status.DEAD.value, c.me.key, 0, b.me.key], now=0.0)
    d.leave()
    _route([a, b, c, d], 0.0)
    before = {p: a.status(p) for p in (c.me, d.me)}
    a.changes()
    for peer in (c.me, d.me, stranger):
        a.lost(peer, 1.0)
    assert {p: a.status(p) for p in (c.me, d.me)} == before and a.status(stranger) is None
    assert a.changes() == [] and a.outbox() == []


def _overlay(links: dict[int, set[int]], seed: int) -> tuple[list[FailureDetector], list[PeerId]]:
    """Detectors that probe only their neighbours (``links``, by index, both ways)."""
    identities = [Identity.from_seed(bytes([seed + i]) * 32) for i in range(len(links))]
    ids = [i.peer_id for i in identities]
    group = [
        FailureDetector(
            identity,
            settings=SETTINGS,
            rng=random.Random(seed + i),
            neighbours=lambda i=i: {ids[j] for j in links[i]},
        )
        for i, identity in enumerate(identities)
    ]
    seed_members(group)
    return group, ids


def _run_overlay(
    group: list[FailureDetector],
    links: dict[int, set[int]],
    start: float,
    until: float,
    down: set[int] = frozenset(),
) -> None:
    """Frames go over links only (the shell drops those to a peer it is not linked to)."""
    index = {d.me: i for i, d in enumerate(group)}
    now = start
    while now <= until:
        for i, detector in enumerate(group):
            if i not in down:
                detector.tick(now)
        while batch := [(d.me, to, f) for d in group for to, f in d.outbox()]:
            for sender, to, frame in batch:
                s, t = index[sender], index[to]
                if t in links[s] and not down & {s, t}:
                    group[t].receive(sender, frame, now)
        now += 0.1


def _ring_and(extra: set[int]) -> dict[int, set[int]]:
    """Ten members on a ring (0-9) and member 10, linked to ``extra``."""
    links = {i: {(i - 1) % 10, (i + 1) % 10} for i in range(10)}
    links[10] = set(extra)
    for i in extra:
        links[i].add(10)
    return links


def test_a_crashed_member_nobody_was_linked_to_is_found_once_a_dial_of_it_fails() -> None:
    """Over an overlay only neighbours are probed: a member that crashed while linked
    to nobody (its record known to all) was never probed, and alive for ever. A dial
    of it that fails at every address makes the dialler probe it, through its
    neighbours, and every member then declares it dead."""
    links = _ring_and(set())
    group, ids = _overlay(links, seed=60)
    _run_overlay(group, links, 0.0, 30.0, down={10})
    assert all(d.status(ids[10]) is Status.ALIVE for d in group[:10])  # nobody probed it
    group[0].unreachable(ids[10])
    _run_overlay(group, links, 30.1, 150.0, down={10})
    assert [d.status(ids[10]) for d in group[:10]] == [Status.DEAD] * 10


def test_a_member_one_peer_cannot_dial_but_another_is_linked_to_stays_alive() -> None:
    """The probe of a member a dial failed to reach goes through the dialler's
    neighbours; suspected, a member that lives hears it over its own links and
    refutes: no member declares it dead."""
    links = _ring_and({5})
    group, ids = _overlay(links, seed=80)
    group[0].unreachable(ids[10])
    _run_overlay(group, links, 0.0, 120.0)
    assert [d.status(ids[10]) for d in group[:10]] == [Status.ALIVE] * 10
    assert group[0].counts.probes_failed == 1  # it was probed: no neighbour of 0 reaches it
    assert group[10].incarnation > 0  # suspected, and refuted
