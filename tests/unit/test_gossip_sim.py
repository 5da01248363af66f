"""Membership, broadcast and failure detection at 200 peers, in seeded simulations.

Discovery runs on real replicas (:class:`SimulatedMesh`): peer records spread
by anti-entropy, each peer talking only to peers it has learned of. Broadcast
and failure detection run the real cores on a simulated network
(:class:`SimulatedGossip`), with virtual time.
"""

from __future__ import annotations

import random

import pytest

from crdt_mesh.services.gossip import RECORD_DOCUMENT, peer_records, write_record
from crdt_mesh.services.gossip.swim import Status
from crdt_mesh.testing import Faults, SimulatedMesh
from crdt_mesh.testing.gossip import SimulatedGossip

PEERS = 200
MAX_PEERS = 50  # P2P_MAX_PEERS


@pytest.mark.parametrize("loss", [0.0, 0.1])
def test_200_peers_joining_through_one_bootstrap_all_discover_each_other(loss: float) -> None:
    """Each peer starts knowing only peer 0 and talks only to peers in its view: a
    bounded active view, refilled from the records it has learned (passive view)."""
    rng = random.Random(7)
    views: dict[int, list[int]] = {i: [0] for i in range(PEERS)}
    index_of: dict[bytes, int] = {}

    def contacts(i: int, live: list[int]) -> list[int]:
        return views[i]

    with SimulatedMesh(PEERS, seed=3, faults=Faults(loss=loss), contacts=contacts) as sim:
        for i in range(PEERS):
            replica = sim.replica(i)
            index_of[replica.peer_id.key] = i
            write_record(replica, ["agent"], [f"sim://{i}"])

        def known(i: int) -> list[int]:  # whose records replica i holds (ids only: cheap)
            return [
                index_of[d.owner.key]
                for d in sim.replica(i).documents()
                if d.name == RECORD_DOCUMENT and d.owner is not None
            ]

        rounds = 0
        while not all(len(known(i)) == PEERS for i in range(PEERS)):
            rounds += 1
            assert rounds <= 40, "the peer set did not converge"
            sim.step()
            for i in range(PEERS):
                passive = [k for k in known(i) if k != i and k not in views[i]]
                rng.shuffle(passive)
                views[i] = (views[i] + passive)[:MAX_PEERS]  # fill the active view
        assert all(len(view) <= MAX_PEERS for view in views.values())
        sim.run_until_converged(max_rounds=10)
        expected = sorted(str(sim.replica(i).peer_id) for i in range(PEERS))
        for i in range(PEERS):
            assert [str(r.peer) for r in peer_records(sim.replica(i))] == expected


@pytest.mark.parametrize("seed", [1, 2])
def test_every_broadcast_reaches_every_live_peer_exactly_once(seed: int) -> None:
    sim = SimulatedGossip(PEERS, seed=seed)
    sim.crash(17)  # a dead peer does not hold the rest back
    sim.run_for(1)
    ids = [(sim.broadcast(origin, payload=origin), origin) for origin in (0, 55, 199)]
    sim.run_for(15)
    for message_id, origin in ids:
        reach = sim.reach(message_id, origin)
        assert reach.fraction == 1.0 and reach.duplicates == 0
        assert reach.rounds_to_all is not None and reach.rounds_to_all <= 10
        # the curve a plot draws: members reached by each round, all by rounds_to_all
        curve = reach.by_round
        assert list(curve) == sorted(curve) and len(curve) == reach.rounds_to_all + 1
        assert curve[-1] == reach.reached
    assert not sim.members[17].delivered


def test_under_10_percent_loss_a_broadcast_still_reaches_99_percent() -> None:
    sim = SimulatedGossip(PEERS, seed=5, loss=0.1)
    ids = [(sim.broadcast(origin), origin) for origin in (3, 90, 150)]
    sim.run_for(15)
    for message_id, origin in ids:
        reach = sim.reach(message_id, origin)
        assert reach.fraction >= 0.99 and reach.duplicates == 0


def test_a_crashed_peer_is_declared_lost_by_all_and_a_restarted_one_rediscovered() -> None:
    sim = SimulatedGossip(PEERS, seed=11)
    sim.run_for(2)
    sim.crash(42)
    sim.run_until(lambda: sim.declared_lost_by_all(42), timeout=120)
    sim.restart(42)
    sim.run_until(lambda: sim.seen_alive_by_all(42), timeout=60)
    assert sim.false_lost == []
    rediscovered = [
        c for _, _, c in sim.changes if c.peer == sim.peer(42) and c.status is Status.ALIVE
    ]
    assert len(rediscovered) >= PEERS - 2  # every other peer saw it come back


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_peer_behind_a_lossy_link_is_not_declared_lost(seed: int) -> None:
    """20% of its frames lost, both ways, for 100 periods: slow, not dead."""
    sim = SimulatedGossip(PEERS, seed=seed)
    sim.set_link_loss(9, 0.2)
    sim.run_for(100)
    assert sim.false_lost == []  # suspicions (refuted in time) are allowed; deaths are not
    assert all(sim.status(i, 9) is not Status.DEAD for i in sim.up() if i != 9)


def test_the_peer_set_converges_after_churn() -> None:
    sim = SimulatedGossip(PEERS, seed=21, loss=0.05)
    rng = random.Random(21)
    crashed: set[int] = set()
    left: set[int] = set()
    for _ in range(6):  # every few periods someone crashes, leaves or comes back
        sim.run_for(5)
        roll = rng.random()
        if crashed and roll < 0.3:
            back = crashed.pop()
            sim.restart(back)
        elif roll < 0.7:
            victim = rng.choice([i for i in sim.up() if i not in crashed | left])
            sim.crash(victim)
            crashed.add(victim)
        else:
            leaver = rng.choice([i for i in sim.up() if i not in crashed | left])
            sim.leave(leaver)
            left.add(leaver)

    def settled() -> bool:
        for observer in sim.up():
            for subject in range(PEERS):
                if subject == observer:
                    continue
                # Under loss a live peer is now and then suspected (and refutes it):
                # suspect is still in the mesh, as in SWIM.
                want = (
                    {Status.DEAD}
                    if subject in crashed
                    else {Status.LEFT}
                    if subject in left
                    else {Status.ALIVE, Status.SUSPECT}
                )
                if sim.status(observer, subject) not in want:
                    return False
        return True

    sim.run_until(settled, timeout=200)
    assert crashed and left
    assert sim.false_lost == []


def test_over_an_overlay_frames_go_to_linked_members_only_and_still_reach_all() -> None:
    """200 members, each linked to a few others (a mesh's active view): while all
    answer, every SWIM and broadcast frame goes to a linked member and a broadcast
    still reaches everyone; a crashed member is declared lost by all (its neighbours
    probe it, helpers relay indirect probes to it alone; the news spreads)."""
    sim = SimulatedGossip(PEERS, seed=4, overlay=5)
    assert sim.links is not None
    linked = {sim.peer(i): set(sim.links[i]) for i in range(PEERS)}
    strays: list[tuple[int, int]] = []
    deliver = sim._deliver

    def watched(sender: int, packed: int, frame: bytes) -> None:
        if sim.peer(packed // 2) not in linked[sim.peer(sender)]:
            strays.append((sender, packed // 2))
        deliver(sender, packed, frame)

    sim._deliver = watched  # type: ignore[method-assign]
    message = sim.broadcast(0, fanout=3)
    sim.run_for(20)
    assert sim.reach(message, 0).fraction == 1.0
    assert strays == []  # while all answer, every frame goes to a linked member
    sim.crash(9)
    assert sim.run_until(lambda: sim.declared_lost_by_all(9), timeout=120) < 120
    assert {target for _, target in strays} <= {9}  # the indirect probes of it alone
    assert min(len(v) for v in sim.links) >= 5 and max(len(v) for v in sim.links) < 20
