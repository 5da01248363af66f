"""`mesh.reputation` on running meshes: an outcome moves the winner's score on every
replica, fires ``p2p:reputation:updated``, and steers the next award."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from crdt_mesh import (
    FeatureDisabledError,
    Identity,
    Mesh,
    MeshConfig,
    P2PEvents,
    Replica,
    ReputationUpdate,
)
from crdt_mesh.testing.cluster import cluster, full
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

ON = MeshConfig(
    enabled=True, gossip=True, task_negotiation=True, reputation=True, gossip_interval_ms=200
)
NEEDS = {"capabilities": ["code-review"]}
BY_REPUTATION = {"bid_timeout": 30, "min_bidders": 2, "selection_criteria": ["reputation"]}


async def test_an_outcome_moves_the_score_everywhere_and_steers_the_next_award(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, 3, peers=full, config=ON) as nodes:
        alice, bob, carol = nodes.meshes
        updates: dict[int, list[ReputationUpdate]] = {i: [] for i in range(3)}
        for i, mesh in enumerate(nodes.meshes):
            mesh.events.on(P2PEvents.REPUTATION_UPDATED, updates[i].append)
            mesh.gossip.join(capabilities=["code-review"] if i else [])

        async def award(name: str) -> object:
            ann = await alice.tasks.announce(
                name, requirements=NEEDS, deadline=time.time() + 3600, negotiation=BY_REPUTATION
            )
            await wait_for(lambda: all(m.tasks.board.view(ann.ref) for m in nodes.meshes))
            await bob.tasks.bid(name, price=1.0)
            await carol.tasks.bid(name, price=1.0)
            bids = await alice.tasks.collect_bids(ann.ref)
            winner = await alice.tasks.select_bid(bids)
            assert winner is not None
            return ann.ref, winner.bidder

        first, first_winner = await award("t1")
        other = carol if first_winner == bob.replica.peer_id else bob  # (did not win)
        await wait_for(lambda: all(m.tasks.board.view(first).award for m in nodes.meshes))
        await alice.reputation.record_outcome(first, "failure", quality=0.2, timeliness=0.5)
        peer = first_winner  # it failed
        await wait_for(lambda: all(m.reputation.get(peer).tasks == 1 for m in nodes.meshes))
        now = time.time()  # a score is a function of the records and a time:
        scores = [m.reputation.board.get(peer, now=now) for m in nodes.meshes]
        assert scores[0] == scores[1] == scores[2]  # the same on every replica
        assert scores[0].overall < 0.5
        await wait_for(lambda: all(any(u.peer == peer for u in updates[i]) for i in range(3)))

        second, second_winner = await award("t2")
        assert second_winner == other.replica.peer_id  # the better reputation wins
        await wait_for(lambda: all(m.tasks.board.view(second).award for m in nodes.meshes))
        assert all(m.tasks.board.view(second).audit_ok for m in nodes.meshes)
        best = alice.reputation.recommend(capabilities=["code-review"], limit=1)
        assert [r.peer for r in best] == [other.replica.peer_id]


async def test_every_reputation_call_refuses_while_its_flag_is_off(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        mesh = Mesh(replica, config=MeshConfig(enabled=True, task_negotiation=True))
        with pytest.raises(FeatureDisabledError, match="P2P_REPUTATION"):
            mesh.reputation.get(replica.peer_id)
        with pytest.raises(FeatureDisabledError, match="P2P_REPUTATION"):
            mesh.reputation.recommend()
