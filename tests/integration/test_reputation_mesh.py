"""`mesh.reputation` on running meshes: an outcome moves the winner's score on every
replica, fires ``p2p:reputation:updated``, and steers the next award."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest

from crdt_mesh import (
    Challenge,
    ChallengeStatus,
    FeatureDisabledError,
    Identity,
    Mesh,
    MeshConfig,
    P2PEvents,
    Replica,
    ReputationError,
    ReputationSettings,
    ReputationUpdate,
)
from crdt_mesh.testing.cluster import cluster, full
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

ON = MeshConfig(
    enabled=True, gossip=True, task_negotiation=True, reputation=True, gossip_interval_ms=200
)
NEEDS = {"capabilities": ["code-review"]}
BY_PRICE = {"bid_timeout": 30, "selection_criteria": ["price"]}
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
        # (a close can arrive before a bid it lists, by another path: the audit
        # says so until the bid is here too)
        await wait_for(lambda: all(m.tasks.board.view(second).audit_ok for m in nodes.meshes))
        best = alice.reputation.recommend(capabilities=["code-review"], limit=1)
        assert [r.peer for r in best] == [other.replica.peer_id]


async def test_every_reputation_call_refuses_while_its_flag_is_off(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        mesh = Mesh(replica, config=MeshConfig(enabled=True, task_negotiation=True))
        with pytest.raises(FeatureDisabledError, match="P2P_REPUTATION"):
            mesh.reputation.get(replica.peer_id)
        with pytest.raises(FeatureDisabledError, match="P2P_REPUTATION"):
            mesh.reputation.recommend()


async def test_a_challenge_is_heard_and_decided_on_every_running_replica(tmp_path: Path) -> None:
    """Carol did well and may sit on juries; Bob challenges the failure Alice recorded
    about him; every replica hears of it, Carol commits a vote, her service reveals it
    when the reveal period opens, and every replica decides alike."""
    quick = ReputationSettings(
        jury_size=1, juror_min=0.55, commit_period=1.0, reveal_period=1.0, jury_cut=0.5
    )
    async with cluster(tmp_path, 4, peers=full, config=ON, reputation=quick) as nodes:
        alice, bob, carol, _ = nodes.meshes
        heard: dict[int, list[Challenge]] = {i: [] for i in range(4)}
        decided: dict[int, list[Challenge]] = {i: [] for i in range(4)}
        for i, mesh in enumerate(nodes.meshes):
            mesh.events.on(P2PEvents.REPUTATION_CHALLENGED, heard[i].append)
            mesh.events.on(P2PEvents.REPUTATION_DECIDED, decided[i].append)

        async def award(name: str, winner: Mesh) -> object:
            ann = await alice.tasks.announce(
                name, requirements=NEEDS, deadline=time.time() + 3600, negotiation=BY_PRICE
            )
            await wait_for(lambda: winner.tasks.board.view(ann.ref) is not None)
            await winner.tasks.bid(name, price=1.0, capabilities=NEEDS["capabilities"])
            bids = await alice.tasks.collect_bids(ann.ref)
            assert await alice.tasks.select_bid(bids) is not None
            await wait_for(lambda: all(m.tasks.board.view(ann.ref).award for m in nodes.meshes))
            return ann.ref

        await alice.reputation.record_outcome(await award("done", carol), "success", quality=0.9)
        failed = await award("disputed", bob)
        await alice.reputation.record_outcome(failed, "failure", quality=0.1)
        await wait_for(lambda: all(len(m.reputation.records()) == 2 for m in nodes.meshes))
        await anyio.sleep(1.0)  # Carol's record now lies before the cut of a new challenge
        record = next(r for r in bob.reputation.records() if r.subject == bob.replica.peer_id)
        challenge = await bob.reputation.challenge(record, "the review passed")
        assert challenge.jury == (carol.replica.peer_id,)
        await wait_for(lambda: all(heard[i] for i in range(4)))
        assert all([c.id for c in heard[i]] == [challenge.id] for i in range(4))
        await wait_for(lambda: bool(carol.reputation.challenges()))
        await carol.reputation.vote(challenge, uphold=True)
        await wait_for(lambda: all(decided[i] for i in range(4)), timeout=20)
        verdicts = {(c.status, c.uphold, c.reject) for i in range(4) for c in decided[i]}
        assert verdicts == {(ChallengeStatus.UPHELD, 1, 0)}


async def test_a_reveal_that_fails_does_not_stop_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reveal period can end between finding a vote due and revealing it: the
    service logs it and goes on (its loop runs in the mesh's task group)."""
    async with cluster(tmp_path, 2, peers=full, config=ON) as nodes:
        service = nodes.meshes[0].reputation
        due = [SimpleNamespace(id="0" * 32)]  # (a challenge, as far as the loop looks)
        refreshed: list[int] = []

        def too_late(challenge: object) -> None:
            raise ReputationError("outside the reveal period of this challenge")

        monkeypatch.setattr(service.board, "reveals_due", lambda: list(due))
        monkeypatch.setattr(service.board, "reveal", too_late)
        monkeypatch.setattr(service, "_refresh", lambda: refreshed.append(1))
        await wait_for(lambda: len(refreshed) >= 2, timeout=10)  # the loop goes on
