"""Challenges and disputes: filing, the jury drawn from the ledger, commit-then-reveal
votes, verdicts and their penalties, the same on every replica."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from crdt_mesh import Identity, PeerId, Replica
from crdt_mesh.commitment import Purpose, commitment
from crdt_mesh.services.reputation import (
    Challenge,
    ChallengeStatus,
    ReputationBoard,
    ReputationError,
    ReputationSettings,
)
from crdt_mesh.services.reputation.disputes import cut_of, draw
from crdt_mesh.services.tasks import TaskBoard
from crdt_mesh.services.tasks.model import TaskRef
from tests.helpers import Clock, sync

CAN = ["code-review"]
HOUR = 3600.0
SETTINGS = ReputationSettings(
    jury_size=3, juror_min=0.55, commit_period=HOUR, reveal_period=HOUR, challenge_window=24 * HOUR
)
DECIDER, WINNER = 0, 1
CANDIDATES = range(2, 8)  # peers with a record each: the jury's pool


class Court:
    """Eight replicas: 0 announces and decides; 2..7 each won a task and did well (so
    they may sit on juries); 1 won the task whose outcome is disputed."""

    def __init__(self, replicas: list[Replica], settle: Callable[[], None]) -> None:
        self.clock = Clock()
        self.replicas, self.settle = replicas, settle
        self.tasks = [TaskBoard(r, clock=self.clock) for r in replicas]
        self.boards = [ReputationBoard(t, SETTINGS, clock=self.clock) for t in self.tasks]
        self.ids = [r.peer_id for r in replicas]
        for i in CANDIDATES:
            self.boards[DECIDER].record_outcome(self.awarded(f"past{i}", i), "success", quality=0.9)
        # the decider did well too: it may sit on juries, except on its own task's
        self.boards[2].record_outcome(self.awarded("decider", DECIDER, 2), "success", quality=0.9)
        self.settle()
        self.clock.now += 2 * HOUR  # their records now lie before any new challenge's cut
        self.disputed = self.awarded("disputed", WINNER)
        self.outcome = self.boards[DECIDER].record_outcome(self.disputed, "failure", quality=0.1)
        self.settle()

    def awarded(self, name: str, winner: int, announcer: int = DECIDER) -> TaskRef:
        ann = self.tasks[announcer].announce(
            name,
            {"capabilities": CAN},
            deadline=self.clock.now + 7200,
            negotiation={"bid_timeout": 30, "selection_criteria": ["price"]},
        )
        self.settle()
        self.tasks[winner].bid(ann.ref, price=1.0, capabilities=CAN)
        self.settle()
        self.tasks[announcer].close(ann.ref)
        self.settle()
        return ann.ref

    def file(self) -> Challenge:
        challenge = self.boards[WINNER].challenge(self.outcome, "it passed every review")
        self.settle()
        return challenge

    def jurors(self, challenge: Challenge) -> list[int]:
        return [self.ids.index(p) for p in challenge.jury]

    def hearing(self, *votes: bool, reveal: bool = True) -> Challenge:
        """File, let the jurors commit ``votes`` (uphold or not, in jury order) and
        reveal them, pass the deadline; the challenge as replica 0 sees it then."""
        challenge = self.file()
        ballots = dict(zip(self.jurors(challenge), votes, strict=False))
        for juror, uphold in ballots.items():
            self.boards[juror].vote(challenge, uphold)
        self.settle()
        self.clock.now = challenge.reveal_from + 60
        if reveal:
            for juror in ballots:
                for due in self.boards[juror].reveals_due():
                    self.boards[juror].reveal(due)
        self.settle()
        self.clock.now = challenge.deadline + 1
        return self.seen(challenge)

    def seen(self, challenge: Challenge, at: int = 0) -> Challenge:
        return next(c for c in self.boards[at].challenges() if c.id == challenge.id)


@pytest.fixture
def court(tmp_path: Path) -> Iterator[Court]:
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(Replica.open(tmp_path / f"r{i}", Identity.generate()))
            for i in range(8)
        ]
        yield Court(replicas, lambda: sync(*replicas))


def test_a_challenge_draws_a_jury_from_eligible_peers_not_party_to_the_task(court: Court) -> None:
    challenge = court.file()
    assert challenge.status is ChallengeStatus.OPEN
    assert len(challenge.jury) == SETTINGS.jury_size
    assert set(court.jurors(challenge)) <= set(CANDIDATES)  # never 0 or 1: parties
    pool = [court.ids[i] for i in CANDIDATES]
    assert challenge.jury == draw(challenge.id, pool, SETTINGS.jury_size)
    for board in court.boards:  # every replica draws the same jury
        assert [c.jury for c in board.challenges()] == [challenge.jury]
    everyone = ReputationBoard(court.tasks[5], replace(SETTINGS, jury_size=99), clock=court.clock)
    (seated,) = everyone.challenges()  # the decider was eligible, and it is a party:
    assert set(seated.jury) == set(pool)  # every eligible peer but the parties sits


def test_an_open_challenge_suspends_the_record(court: Court) -> None:
    before = court.boards[3].get(court.ids[WINNER]).task_completion
    assert before < 0.5  # the failure counts
    court.file()
    for board in court.boards:
        assert board.get(court.ids[WINNER]).task_completion == 0.5  # suspended everywhere


def test_an_upheld_challenge_voids_the_record_and_penalises_its_author(court: Court) -> None:
    author_before = court.boards[0].get(court.ids[DECIDER]).overall
    challenger_before = court.boards[0].get(court.ids[WINNER]).overall
    court.hearing(True, True, False)
    for board in court.boards:
        decided = board.challenges()[0]
        assert (decided.status, decided.uphold, decided.reject) == (ChallengeStatus.UPHELD, 2, 1)
        assert board.get(court.ids[WINNER]).task_completion == 0.5  # the failure is void
        assert board.get(court.ids[WINNER]).overall > challenger_before
        assert board.get(court.ids[DECIDER]).overall < author_before  # the author pays


def test_a_rejected_challenge_keeps_the_record_and_penalises_the_challenger(court: Court) -> None:
    before = court.boards[0].get(court.ids[WINNER])
    court.hearing(False, False, True)
    for board in court.boards:
        decided = board.challenges()[0]
        assert (decided.status, decided.uphold, decided.reject) == (ChallengeStatus.REJECTED, 1, 2)
        after = board.get(court.ids[WINNER])
        assert after.task_completion < before.task_completion  # the record, and a penalty
        assert after.overall < before.overall


def test_jurors_that_never_reveal_let_the_challenge_lapse_cleanly(court: Court) -> None:
    before = {i: court.boards[0].get(court.ids[i]) for i in (DECIDER, WINNER)}
    decided = court.hearing(True, True, True, reveal=False)
    assert (decided.status, decided.uphold, decided.reject) == (ChallengeStatus.LAPSED, 0, 0)
    for board in court.boards:
        assert board.challenges()[0].status is ChallengeStatus.LAPSED
        for i, score in before.items():  # the record counts again; no one is penalised
            assert board.get(court.ids[i], court.clock.now).task_completion == pytest.approx(
                score.task_completion, abs=1e-3
            )


def test_challenges_the_rules_refuse_write_nothing(court: Court) -> None:
    winner, decider, stranger = court.boards[WINNER], court.boards[DECIDER], court.boards[4]
    past = next(r for r in court.boards[0].records() if r.subject == court.ids[4])
    refused = [
        (stranger, court.outcome, "not a party"),  # 4 had no part in the disputed task
        (decider, court.outcome, "its own record"),
        (winner, past, "a record of a task it had no part in"),
        (winner, court.outcome, ""),
        (winner, court.outcome, "x" * 1001),
    ]
    for board, record, reason in refused:
        version = board.replica.version
        with pytest.raises(ReputationError):
            board.challenge(record, reason or "", None)
        assert board.replica.version == version
    with pytest.raises(ReputationError):
        winner.challenge(court.outcome, "evidence too big", {"log": "x" * 5000})
    with pytest.raises(ReputationError):
        winner.challenge(court.outcome, "evidence not plain", {"blob": object()})
    court.clock.now += 2 * 24 * HOUR  # past the window
    with pytest.raises(ReputationError):
        winner.challenge(court.outcome, "too late")
    court.clock.now -= 2 * 24 * HOUR
    winner.challenge(court.outcome, "once", {"log": ["ok"]})
    version = winner.replica.version
    with pytest.raises(ReputationError):
        winner.challenge(court.outcome, "twice")
    assert winner.replica.version == version


def test_challenges_written_around_the_rules_are_ignored_with_reasons(court: Court) -> None:
    """A hostile replica writes what the commands refuse: a stranger's challenge, one of
    the author's own record, one naming no record, a flood: each ignored, with a reason."""
    slot = f"outcome:{court.ids[DECIDER]}:{court.ids[WINNER]}"
    body = {"reason": "r", "evidence": None, "at": court.clock.now}
    court.tasks[4].annotate(court.disputed, "challenges", {slot: body})
    court.tasks[DECIDER].annotate(court.disputed, "challenges", {slot: body})
    flood = {f"rating:{i}": body for i in range(50)}
    court.tasks[WINNER].annotate(court.disputed, "challenges", flood)
    court.settle()
    for board in court.boards:
        assert board.challenges() == []
        reasons = [r for r in board.ignored() if "challenges by" in r]
        assert len(reasons) == 3, reasons
        assert any("not a party" in r for r in reasons)
        assert any("its own record" in r for r in reasons)
        assert any("more challenges than records" in r for r in reasons)
        assert board.get(court.ids[WINNER]).task_completion < 0.5  # nothing suspended


def test_votes_count_only_from_jurors_committed_and_revealed_in_time(court: Court) -> None:
    """A stranger's vote, a copied commitment, a reveal before the commit period ended
    and an opening that does not match: none counts."""
    challenge = court.file()
    jurors = court.jurors(challenge)
    outsider = next(i for i in CANDIDATES if i not in jurors)
    court.boards[jurors[0]].vote(challenge, True)
    court.settle()
    votes = court.tasks[0].annotations(court.disputed, "votes")
    honest = votes[court.ids[jurors[0]]][challenge.id]
    court.clock.now = challenge.reveal_from + 60
    court.boards[jurors[0]].reveal(challenge)
    court.settle()
    votes = court.tasks[0].annotations(court.disputed, "votes")
    revealed = votes[court.ids[jurors[0]]][challenge.id]
    opening = revealed["opening"]
    forged = {
        # a stranger's own, well-formed vote
        outsider: _ballot(challenge, court.ids[outsider], "uphold", challenge.filed + 1, 60),
        # a copy of juror 0's commitment and opening: it opens for juror 0 only
        jurors[1]: {**revealed},
        # a vote revealed before the commit period ended
        jurors[2]: _ballot(challenge, court.ids[jurors[2]], "uphold", challenge.filed + 1, -120),
    }
    assert honest["commitment"] == revealed["commitment"] and opening
    for who, ballot in forged.items():
        court.tasks[who].annotate(court.disputed, "votes", {challenge.id: ballot})
    court.settle()
    court.clock.now = challenge.deadline + 1
    for board in court.boards:
        decided = board.challenges()[0]
        assert (decided.uphold, decided.reject) == (1, 0)  # juror 0's alone
        assert decided.status is ChallengeStatus.LAPSED  # 1 of 3: below a majority
    flood = {f"{i:032x}": {} for i in range(3)}
    court.tasks[jurors[1]].annotate(court.disputed, "votes", flood)
    court.settle()
    assert any("more than challenges" in r for r in court.boards[0].ignored())


def _ballot(challenge: Challenge, juror: PeerId, vote: str, at: float, reveal: float) -> dict:
    """A juror's committed and revealed vote, written by hand (``reveal``: seconds after
    the commit period ends)."""
    nonce = b"n" * 16
    return {
        "commitment": commitment(Purpose.JURY_VOTE, challenge.id, juror, vote.encode(), nonce),
        "at": at,
        "opening": [vote.encode().hex(), nonce.hex()],
        "revealed": challenge.reveal_from + reveal,
    }


def test_a_challenge_from_filing_to_verdict_on_a_lossy_mesh_is_decided_alike_everywhere() -> None:
    """Eight replicas on a simulated network that loses, duplicates and reorders frames:
    the history, the challenge, the votes and the reveals all travel by anti-entropy;
    every replica draws the same jury, counts the same votes, reaches the same verdict
    and the same scores."""
    from crdt_mesh.testing import Faults, SimulatedMesh

    faults = Faults(loss=0.15, duplication=0.05, reorder=0.1)
    with SimulatedMesh(8, seed=5, faults=faults) as sim:
        court = Court([sim.replica(i) for i in range(8)], sim.run_until_converged)
        decided = court.hearing(True, False, True)
        assert (decided.status, decided.uphold, decided.reject) == (ChallengeStatus.UPHELD, 2, 1)
        seen = [board.challenges() for board in court.boards]
        assert all(s == seen[0] for s in seen)
        at = court.clock.now
        scores = [board.scores(at) for board in court.boards]
        assert all(s == scores[0] for s in scores)
        assert court.boards[0].get(court.ids[WINNER], at).task_completion == 0.5


def test_a_record_backdated_before_the_cut_moves_the_jury_alike_everywhere(court: Court) -> None:
    """The documented limit, and the cache it must not fool: a record stamped before a
    challenge's cut but written after the draw changes who is eligible; every replica
    that holds it draws the new jury."""
    challenge = court.file()
    juror = court.jurors(challenge)[0]
    now = court.clock.now
    court.clock.now = cut_of(challenge.filed, SETTINGS.jury_cut) - 600  # backdated
    late = court.awarded("backdated", juror)
    court.boards[DECIDER].record_outcome(late, "failure", quality=0.0, timeliness=0.0)
    court.clock.now = now
    court.settle()
    for board in court.boards:
        (moved,) = board.challenges()
        assert court.ids[juror] not in moved.jury  # no longer eligible at the cut
        assert moved.jury == court.seen(challenge).jury
