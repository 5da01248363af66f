"""Reputation: records tied to real awards, scores every replica computes alike,
EigenTrust against a Sybil ring, equivocators at zero."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mesh import Identity, PeerId, Replica
from crdt_mesh.services.reputation import (
    Outcome,
    Record,
    ReputationBoard,
    ReputationError,
    ReputationScore,
    ReputationSettings,
)
from crdt_mesh.services.reputation.rules import RecordTable, local_trust, scores
from crdt_mesh.services.reputation.trust import eigentrust, rater_weights
from crdt_mesh.services.tasks import TaskBoard
from crdt_mesh.services.tasks.model import Announcement, TaskRef
from tests.helpers import Clock, forked, sync

CAN = ["code-review"]
DAY = 24 * 3600.0


class Market:
    """Five replicas with task and reputation boards; 0 announces, others bid."""

    def __init__(self, root: Path, stack: ExitStack) -> None:
        self.clock = Clock()
        self.replicas = [
            stack.enter_context(Replica.open(root / f"r{i}", Identity.generate())) for i in range(5)
        ]
        self.tasks = [TaskBoard(r, clock=self.clock) for r in self.replicas]
        self.boards = [ReputationBoard(t, clock=self.clock) for t in self.tasks]
        self.ids = [r.peer_id for r in self.replicas]

    def sync(self) -> None:
        sync(*self.replicas)

    def awarded(self, name: str, winner: int, announcer: int = 0) -> TaskRef:
        """A task ``announcer`` announced and awarded to ``winner`` (the only bidder)."""
        ann = self.tasks[announcer].announce(
            name,
            {"capabilities": CAN},
            deadline=self.clock.now + 7200,
            negotiation={"bid_timeout": 30, "selection_criteria": ["price"]},
        )
        self.sync()
        self.tasks[winner].bid(ann.ref, price=1.0, capabilities=CAN)
        self.sync()
        self.tasks[announcer].close(ann.ref)
        self.sync()
        return ann.ref

    def contested(self, name: str) -> Announcement:
        """A task 0 announced, selected by reputation, that 1 and 2 bid on (not closed)."""
        by_reputation = {"bid_timeout": 30, "min_bidders": 2, "selection_criteria": ["reputation"]}
        ann = self.tasks[0].announce(
            name, {"capabilities": CAN}, deadline=self.clock.now + 7200, negotiation=by_reputation
        )
        self.sync()
        for bidder in (1, 2):
            self.tasks[bidder].bid(ann.ref, price=1.0, capabilities=CAN)
        self.sync()
        return ann


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    with ExitStack() as stack:
        yield Market(tmp_path, stack)


def test_an_outcome_moves_the_winners_score_and_fades_with_time(market: Market) -> None:
    good = market.awarded("t1", winner=1)
    bad = market.awarded("t2", winner=2)
    market.boards[0].record_outcome(good, "success", quality=0.9, timeliness=1.0)
    market.boards[0].record_outcome(bad, Outcome.FAILURE, quality=0.1)
    market.sync()
    for board in market.boards:  # every replica computes the same
        one, two = board.get(market.ids[1]), board.get(market.ids[2])
        assert one.task_completion == pytest.approx(2 / 3) and one.tasks == 1
        assert one.success_rate == 1.0 and one.expertise == {"code-review": pytest.approx(2 / 3)}
        assert two.task_completion == pytest.approx(1 / 3) and two.success_rate == 0.0
        assert one.overall > 0.5 > two.overall
    fresh = market.boards[3].get(market.ids[1])
    later = market.boards[3].get(market.ids[1], now=market.clock.now + 30 * DAY)  # a half-life
    assert later.task_completion == pytest.approx((0.5 + 1) / (0.5 + 2))
    assert later.confidence < fresh.confidence
    assert market.boards[3].get(market.ids[4]).confidence == 0.0  # nothing recorded: neutral


def test_records_not_tied_to_a_real_award_are_refused_or_ignored_with_reasons(
    market: Market,
) -> None:
    task = market.awarded("t1", winner=1)
    with pytest.raises(ReputationError, match="only"):
        market.boards[1].record_outcome(task, "success")  # not the decider
    market.boards[0].record_outcome(task, "success")
    with pytest.raises(ReputationError, match="once per task"):
        market.boards[0].record_outcome(task, "failure")
    with pytest.raises(ReputationError, match="parties"):
        market.boards[3].rate(market.ids[1], task, collaboration=0.1)  # a stranger
    with pytest.raises(ReputationError, match="parties"):
        market.boards[0].rate(market.ids[0], task, collaboration=1.0)  # itself
    with pytest.raises(ReputationError, match="in \\[0, 1\\]"):
        market.boards[0].rate(market.ids[1], task, collaboration=1.5)
    unawarded = market.tasks[0].announce(
        "t2", {"capabilities": CAN}, deadline=market.clock.now + 7200
    )
    with pytest.raises(ReputationError, match="not awarded"):
        market.boards[0].record_outcome(unawarded.ref, "success")
    # what a hostile replica writes anyway (past the checks) counts for nothing
    market.tasks[1].annotate(task, "outcome", {"outcome": "success", "at": 0.0})
    market.tasks[3].annotate(task, "ratings", {str(market.ids[1]): {"collaboration": 0.0, "at": 1}})
    market.tasks[0].annotate(unawarded.ref, "outcome", {"outcome": "success", "at": 0.0})
    market.tasks[1].annotate(task, "ratings", {str(market.ids[1]): {"collaboration": 1, "at": 1}})
    market.sync()
    board = market.boards[4]
    reasons = board.ignored()
    assert any("only" in r and market.ids[1].short in r for r in reasons)  # not the decider
    assert any("not a party" in r and market.ids[3].short in r for r in reasons)
    assert any("never awarded" in r for r in reasons)
    assert any("not another party" in r for r in reasons)  # rating itself
    assert [(r.kind, r.rater) for r in board.records()] == [("outcome", market.ids[0])]


def _record(rater: PeerId, subject: PeerId, task: int, value: float, at: float) -> Record:
    return Record(
        "outcome",
        f"task:{rater}:{task}",
        rater,
        subject,
        at,
        outcome=Outcome.SUCCESS if value > 0.5 else Outcome.FAILURE,
        quality=value,
        timeliness=value,
        domains=("d",),
    )


PEERS = [Identity.from_seed(bytes([i + 1]) * 32).peer_id for i in range(6)]


@settings(max_examples=50)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5),
            st.integers(0, 5),
            st.integers(0, 30),
            st.floats(0, 1),
            st.floats(0, 90 * DAY),
        ),
        max_size=40,
        unique_by=lambda t: (t[0], t[2]),
    ),
    st.randoms(use_true_random=False),
)
def test_the_same_records_in_any_order_give_the_same_scores(
    raw: list[tuple[int, int, int, float, float]], rng: random.Random
) -> None:
    records = [_record(PEERS[a], PEERS[b], t, v, at) for a, b, t, v, at in raw]
    shuffled = list(records)
    rng.shuffle(shuffled)
    now = 100 * DAY
    assert scores(records, now, 30 * DAY) == scores(shuffled, now, 30 * DAY)
    roots = {PEERS[0]: 1.0}
    assert eigentrust(local_trust(records), roots, 0.15) == eigentrust(
        local_trust(shuffled), roots, 0.15
    )
    grown = RecordTable()  # records arriving one by one, scored as they come
    for record in shuffled:
        grown.add([record])
        grown.scores(now, 30 * DAY)
    assert grown.scores(now, 30 * DAY) == RecordTable(records).scores(now, 30 * DAY)


def test_a_sybil_ring_gains_nothing_without_trust_from_the_pretrusted() -> None:
    rng = random.Random(7)
    honest = [Identity.generate().peer_id for _ in range(20)]
    sybils = [Identity.generate().peer_id for _ in range(30)]
    target = sybils[0]
    records = []
    task = 0
    for _ in range(200):  # honest peers trade among themselves, mostly well
        a, b = rng.sample(honest, 2)
        task += 1
        records.append(_record(a, b, task, 0.9 if rng.random() < 0.9 else 0.1, 50 * DAY))
    for sybil in sybils:  # the ring praises itself, and its target above all
        for other in rng.sample(sybils, 5):
            if other != sybil:
                task += 1
                records.append(_record(sybil, other, task, 1.0, 50 * DAY))
        task += 1
        records.append(_record(sybil, honest[0], task, 0.0, 50 * DAY))  # and smears
    trust = eigentrust(local_trust(records), {honest[0]: 1.0, honest[1]: 1.0}, 0.15)
    weights = rater_weights(trust)
    assert max(weights.get(s, 0.0) for s in sybils) == 0.0
    plain = scores(records, 60 * DAY, 30 * DAY)
    weighed = scores(records, 60 * DAY, 30 * DAY, weights)
    assert plain[target].overall > 0.7  # unweighted, the ring's praise works ...
    assert weighed[target].overall == pytest.approx(0.5)  # ... weighed, it counts for nothing
    assert weighed[honest[0]].overall > plain[honest[0]].overall  # and the smear neither


def test_a_replica_with_pretrusted_peers_weighs_raters_by_eigentrust(market: Market) -> None:
    task = market.awarded("t1", winner=1)
    market.boards[0].record_outcome(task, "success", quality=1.0)
    market.sync()
    rooted = ReputationBoard(
        market.tasks[4], ReputationSettings(pretrusted={market.ids[3]: 1.0}), clock=market.clock
    )
    assert rooted.get(market.ids[1]).task_completion == pytest.approx(0.5)  # 0 is not trusted
    trusting = ReputationBoard(
        market.tasks[4], ReputationSettings(pretrusted={market.ids[0]: 1.0}), clock=market.clock
    )
    assert trusting.get(market.ids[1]).task_completion == pytest.approx(2 / 3)


def test_an_equivocator_is_at_zero_on_every_replica_holding_the_proof(market: Market) -> None:
    liar = Identity.generate()
    entries, other = forked(liar)
    market.replicas[2].ingest(entries)
    market.replicas[2].ingest([other])
    assert market.replicas[2].fork_proofs()
    assert market.boards[2].get(liar.peer_id).overall == 0.0
    assert market.boards[2].get(liar.peer_id).equivocated
    assert not market.boards[3].get(liar.peer_id).equivocated  # no proof there (yet)


def test_settings_refuse_what_makes_no_sense() -> None:
    with pytest.raises(ReputationError, match="half_life"):
        ReputationSettings(half_life=0)
    with pytest.raises(ReputationError, match="teleport"):
        ReputationSettings(teleport=1.5)
    with pytest.raises(ReputationError, match="pretrusted"):
        ReputationSettings(pretrusted={"root": 1.0})  # type: ignore[dict-item]


def test_a_close_pins_the_evidence_of_its_scores_and_a_misstated_score_is_flagged(
    market: Market,
) -> None:
    for tasks, board in zip(market.tasks, market.boards, strict=True):
        tasks.reputation = board  # the reputation criterion reads (and audits) it
    first = market.awarded("t1", winner=1)
    market.boards[0].record_outcome(first, "success", quality=1.0, timeliness=1.0)
    market.sync()
    ann = market.contested("t2")
    view = market.tasks[0].close(ann.ref)
    assert view.award == market.ids[1]  # the better reputation
    market.sync()
    for tasks in market.tasks:
        seen = tasks.view(ann.ref)
        assert seen is not None and seen.audit_ok, seen.problems if seen else None
    section = market.replicas[0].document(ann.ref.section(market.ids[0])).map("task").to_py()
    pinned = section["close"]["evidence"]["about"][str(market.ids[1])]
    assert pinned == [[first.document_name, "outcome", str(market.ids[0])]]

    # a decider that misstates a score (and awards by it) is flagged on every replica
    liar = market.contested("t3")
    market.tasks[0].close(liar.ref)
    document = market.replicas[0].document(liar.ref.section(market.ids[0]))
    written = document.map("task").to_py()
    forged = dict(written["close"])
    forged["scores"] = {**forged["scores"], str(market.ids[2]): 0.99}
    with document.transaction():
        document.map("task")["close"] = forged
        document.map("task")["award"] = {"winner": str(market.ids[2]), "at": market.clock.now}
    market.sync()
    for tasks in market.tasks[1:]:
        seen = tasks.view(liar.ref)
        assert seen is not None and not seen.audit_ok
        assert any("its pinned records give" in p for p in seen.problems), seen.problems


def test_awards_by_reputation_audit_clean_on_every_replica_of_a_lossy_mesh() -> None:
    """Five replicas on a simulated network that loses, duplicates and reorders frames:
    outcomes recorded, then tasks closed by reputation; every replica computes the
    same scores and audits every award clean, evidence and all."""
    from crdt_mesh.testing import Faults, SimulatedMesh

    faults = Faults(loss=0.1, duplication=0.05, reorder=0.1)
    with SimulatedMesh(5, seed=21, faults=faults) as sim:
        clock = Clock()
        tasks = [TaskBoard(sim.replica(i), clock=clock) for i in range(5)]
        boards = [ReputationBoard(t, clock=clock) for t in tasks]
        for t, b in zip(tasks, boards, strict=True):
            t.reputation = b
        ids = [t.me for t in tasks]
        by_reputation = {"bid_timeout": 30, "min_bidders": 2, "selection_criteria": ["reputation"]}
        awarded = []
        for round_ in range(6):
            decider = round_ % 2
            bidders = [2, 3] if round_ % 3 else [3, 4]
            ann = tasks[decider].announce(
                f"t{round_}",
                {"capabilities": CAN},
                deadline=clock.now + 7200,
                negotiation=by_reputation,
            )
            sim.run_until_converged()
            for i in bidders:
                tasks[i].bid(ann.ref, price=1.0, capabilities=CAN)
            sim.run_until_converged()
            view = tasks[decider].close(ann.ref)
            assert view.award is not None
            outcome = "success" if view.award != ids[4] else "failure"
            boards[decider].record_outcome(ann.ref, outcome, quality=0.8)
            sim.run_until_converged()
            awarded.append(ann.ref)
            clock.now += 60
        for ref in awarded:
            for t in tasks:
                seen = t.view(ref)
                assert seen is not None and seen.audit_ok, (ref, seen.problems if seen else None)
        at = clock.now
        everywhere = [b.scores(at) for b in boards]
        assert all(scores == everywhere[0] for scores in everywhere)
        assert boards[0].get(ids[4], at).overall < boards[0].get(ids[3], at).overall


def test_a_flood_of_ratings_in_one_section_costs_one_reason() -> None:
    """A party's ratings name at most the two other parties: a section naming more is
    ignored whole, with one reason, not one per name (what a hostile writer cannot
    make every replica keep)."""
    from crdt_mesh.services.reputation.rules import task_records

    a, d, w = PEERS[0], PEERS[1], PEERS[2]
    flood = {
        str(Identity.generate().peer_id): {"collaboration": 1.0, "at": 1.0} for _ in range(500)
    }
    flood[str(w)] = {"collaboration": 1.0, "at": 1.0}
    records, ignored = task_records(
        "task:x", announcer=a, decider=d, winner=w, capabilities=(), outcomes={}, ratings={a: flood}
    )
    assert records == [] and len(ignored) == 1 and "more ratings than" in ignored[0]


def test_updated_fires_once_per_noticeable_change_not_as_time_passes(market: Market) -> None:
    import time
    from dataclasses import replace

    from crdt_mesh import Mesh, P2PEvents
    from crdt_mesh.services.reputation.service import NOTICEABLE, _moved

    market.clock.now = time.time()  # records of now: each moment weighs them a bit less
    task = market.awarded("t1", winner=1)
    market.boards[0].record_outcome(task, "success", quality=0.9)
    market.sync()
    mesh = Mesh(market.replicas[3])
    fired: list[object] = []
    mesh.events.on(P2PEvents.REPUTATION_UPDATED, fired.append)
    mesh.reputation._refresh()
    mesh.reputation._refresh()  # nothing new: nothing fires
    assert [u.peer for u in fired] == [market.ids[1]]  # type: ignore[attr-defined]
    score = ReputationScore(overall=0.6)
    assert not _moved(score, replace(score, overall=0.6 + NOTICEABLE / 2))
    assert _moved(score, replace(score, overall=0.6 + NOTICEABLE))
    assert _moved(score, replace(score, tasks=1))


def test_evidence_that_is_malformed_or_too_long_is_a_problem_not_work(market: Market) -> None:
    from crdt_mesh.services.reputation.board import PINNED

    board, peer = market.boards[0], market.ids[1]
    name = ["task:x", "outcome", str(market.ids[0])]
    base = {"at": 0.0, "half_life": 1.0, "weights": None, "forked": []}
    too_long = {**base, "about": {str(peer): [name] * (PINNED + 1)}}
    assert "more than" in (board.check(too_long, peer, 0.5) or "")
    assert "malformed" in (board.check({**base, "about": 3}, peer, 0.5) or "")
    missing = {**base, "about": {str(peer): [name]}}
    assert board.check(missing, peer, 0.5) is None  # not here yet: nothing to say


def test_a_malicious_collective_on_a_lossy_mesh_is_held_off_by_eigentrust() -> None:
    """Ten replicas on a simulated network with loss: four (6..9) form a collective that
    does bad work, praises its members and smears the honest whose work it awards;
    0 and 1 are pre-trusted. Plain Beta scores let the praise lift the collective above
    the honest it smeared; with EigenTrust every honest peer scores above every member
    of the collective, on every replica alike."""
    from crdt_mesh.testing import Faults, SimulatedMesh

    honest, collective = range(6), range(6, 10)
    trades = [(i, (i + 2) % 6, "success") for i in honest]  # honest trade well: 0->2->4->0 ...
    trades += [(c, 6 + (c - 6 + k) % 4, "success") for c in collective for k in (1, 2)]  # praise
    trades += [(c, (c + k) % 6, "failure") for c in collective for k in (0, 3)]  # smears
    trades += [(i, 6 + i % 4, "failure") for i in (2, 3, 4, 5)]  # the collective's bad work
    with SimulatedMesh(10, seed=3, faults=Faults(loss=0.1, reorder=0.1)) as sim:
        clock = Clock()
        tasks = [TaskBoard(sim.replica(i), clock=clock) for i in range(10)]
        ids = [t.me for t in tasks]
        negotiation = {"bid_timeout": 30, "selection_criteria": ["price"]}
        deadline = clock.now + 7200
        refs = [
            tasks[a]
            .announce(f"t{n}", {"capabilities": CAN}, deadline=deadline, negotiation=negotiation)
            .ref
            for n, (a, _, _) in enumerate(trades)
        ]
        sim.run_until_converged()
        for ref, (_, winner, _) in zip(refs, trades, strict=True):
            tasks[winner].bid(ref, price=1.0, capabilities=CAN)
        sim.run_until_converged()
        for ref, (announcer, _, _) in zip(refs, trades, strict=True):
            tasks[announcer].close(ref)
        sim.run_until_converged()
        for ref, (announcer, _, outcome) in zip(refs, trades, strict=True):
            ReputationBoard(tasks[announcer], clock=clock).record_outcome(ref, outcome, 0.9)
        sim.run_until_converged()
        roots = ReputationSettings(pretrusted={ids[0]: 1.0, ids[1]: 1.0})
        weighed = [ReputationBoard(t, roots, clock=clock).scores() for t in tasks]
        plain = ReputationBoard(tasks[0], clock=clock).scores()
    assert all(s == weighed[0] for s in weighed)  # alike on every replica

    def overall(scores: dict[PeerId, ReputationScore], i: int) -> float:
        return scores[ids[i]].overall if ids[i] in scores else 0.5

    # plain scores: the praise lifts the collective above the honest it smeared ...
    assert max(overall(plain, c) for c in collective) > min(overall(plain, h) for h in honest)
    # ... weighed by trust from the pre-trusted, it counts for nothing
    assert min(overall(weighed[0], h) for h in honest) > max(
        overall(weighed[0], c) for c in collective
    )
