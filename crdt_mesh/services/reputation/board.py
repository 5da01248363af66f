"""The reputation board: reputation's commands and views over one replica's tasks.

Synchronous, clock injected. Records, challenges and jurors' votes are written on
the tasks they are about (:meth:`TaskBoard.annotate`), and read back from every
task this replica holds: views are pure functions of the replicated entries and a
time.

Why one module (~600 lines): records, challenges and scores read the same
per-version tables (records by subject, columns, juries by cut) and each view
adjusts the next (open and decided challenges change what the scores count); the
pure rules are in :mod:`.rules`, :mod:`.disputes` and :mod:`.trust`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cbor2

from ...commitment import Purpose, commitment, pad, unpad
from ...identity import PeerId
from ...ledger import DocumentId
from ...replica.replica import Replica
from .disputes import (
    MAX_REASON,
    challenge_id,
    cut_of,
    draw,
    eligible,
    evidence_size,
    filed_challenges,
    penalties,
    slot,
    tally,
    vote_value,
)
from .model import (
    Challenge,
    ChallengeStatus,
    Outcome,
    Parties,
    Record,
    ReputationError,
    ReputationScore,
    ReputationSettings,
    Vote,
)
from .rules import FUTURE_SKEW, RecordTable, task_records
from .trust import eigentrust_edges, rater_weights


class TaskLedger(Protocol):
    """What reputation needs of task negotiation (the root hands it the task board):
    the tasks, who each involved, and a place in one's own section for records."""

    @property
    def replica(self) -> Replica: ...

    def tasks(self) -> Sequence[Any]:
        """Every task this replica holds."""
        ...

    def parties(self, ref: Any) -> Parties | None:
        """Who ``ref`` involved (None: not a task this replica holds)."""
        ...

    def annotate(self, ref: Any, key: str, value: Any) -> None:
        """Write ``value`` under ``key`` in this peer's section of ``ref``."""
        ...

    def annotations(self, ref: Any, key: str) -> dict[PeerId, Any]:
        """What each participant of ``ref`` wrote under ``key``."""
        ...

    def concerns(self, document: DocumentId) -> bool:
        """Whether ``document`` is a section of a task."""
        ...


#: The most records about one peer a task's close pins (the most recent: forgetting
#: makes older ones weigh little).
PINNED = 100


#: What challenges change at a time: records set aside, penalties, penalties by subject.
_Adjustment = tuple[
    frozenset[tuple[str, str, bytes, bytes]], tuple[Record, ...], dict[PeerId, list[Record]]
]
_NO_ADJUSTMENT: _Adjustment = (frozenset(), (), {})


@dataclass(slots=True)
class _Read:
    """What one version of the replica holds: records, challenges, votes (by task)."""

    records: list[Record] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    challenges: list[Challenge] = field(default_factory=list)
    votes: dict[str, dict[PeerId, Any]] = field(default_factory=dict)
    parties: dict[str, frozenset[PeerId]] = field(default_factory=dict)
    refs: dict[str, Any] = field(default_factory=dict)  # tasks with records, by name


class ReputationBoard:
    """Commands and views of reputation over ``tasks`` (a replica's task board)."""

    def __init__(
        self,
        tasks: TaskLedger,
        settings: ReputationSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tasks = tasks
        self.replica = tasks.replica
        self.settings = settings or ReputationSettings()
        self.clock = clock
        self._read_at: tuple[int, _Read] | None = None
        self._about: tuple[int, dict[PeerId, list[Record]]] | None = None
        self._raw: tuple[int, RecordTable] | None = None
        self._adjusted: tuple[Any, RecordTable, dict[PeerId, float] | None] | None = None
        # cut -> (version, records' key, eligible peers)
        self._pools: dict[float, tuple[int, Any, list[PeerId]]] = {}
        self._adjusting: tuple[int, float, _Adjustment] | None = None

    @property
    def me(self) -> PeerId:
        return self.replica.peer_id

    # -- commands ----------------------------------------------------------------------------

    def record_outcome(
        self,
        task: Any,
        outcome: Outcome | str,
        quality: float | None = None,
        timeliness: float | None = None,
    ) -> Record:
        """Record how an awarded task went (its decider's call, once per task), about
        its winner.

        Raises:
            ReputationError: unknown or unawarded task, not its decider, recorded
                already, or a value outside [0, 1].
        """
        name, _, decider, winner, capabilities = self._parties(task)
        if decider != self.me:
            raise ReputationError(f"only {decider.short} records the outcome of {task}")
        if winner is None:
            raise ReputationError(f"{task} was not awarded: there is no outcome to record")
        if self.me in self.tasks.annotations(task, "outcome"):
            raise ReputationError(f"the outcome of {task} is recorded already (once per task)")
        try:
            kind = Outcome(outcome)
        except ValueError:
            known = [o.value for o in Outcome]
            raise ReputationError(f"outcome: one of {known}, not {outcome!r}") from None
        value: dict[str, Any] = {"outcome": kind.value, "at": self.clock()}
        for field_name, given in (("quality", quality), ("timeliness", timeliness)):
            if given is not None:
                value[field_name] = _unit(field_name, given)
        self.tasks.annotate(task, "outcome", value)
        return Record(
            "outcome",
            name,
            self.me,
            winner,
            value["at"],
            outcome=kind,
            quality=value.get("quality"),
            timeliness=value.get("timeliness"),
            domains=tuple(sorted(set(capabilities))),
        )

    def rate(self, peer: PeerId, task: Any, collaboration: float) -> Record:
        """Rate another party of an awarded task (its announcer, decider or winner); a
        second rating of the same peer on the same task replaces the first.

        Raises:
            ReputationError: unknown or unawarded task, not both parties, or a value
                outside [0, 1].
        """
        if not isinstance(peer, PeerId):
            raise ReputationError(f"peer: a PeerId, not {peer!r}")
        name, announcer, decider, winner, _ = self._parties(task)
        parties = {announcer, decider, winner}
        if winner is None or self.me not in parties or peer not in parties or peer == self.me:
            raise ReputationError(
                f"ratings are between two parties of an awarded task: {task} has no"
                f" {'award' if winner is None else 'such pair'}"
            )
        value = {"collaboration": _unit("collaboration", collaboration), "at": self.clock()}
        given = self.tasks.annotations(task, "ratings").get(self.me)
        ratings = dict(given) if isinstance(given, dict) else {}
        ratings[str(peer)] = value
        self.tasks.annotate(task, "ratings", ratings)
        at, given_value = value["at"], value["collaboration"]
        return Record("rating", name, self.me, peer, at, collaboration=given_value)

    def _parties(self, task: Any) -> Parties:
        parties = self.tasks.parties(task)
        if parties is None:
            raise ReputationError(f"unknown task {task!r} (a TaskRef this replica holds)")
        return parties

    # -- views -------------------------------------------------------------------------------

    def records(self) -> list[Record]:
        """Every record that counts, from every task this replica holds (challenges
        aside: see :meth:`counted`)."""
        return self._read().records

    def ignored(self) -> list[str]:
        """What was written as a record, a challenge or a vote and does not count, with
        the reason."""
        return self._read().ignored

    def _read(self) -> _Read:
        version = self.replica.version
        if self._read_at is not None and self._read_at[0] == version:
            return self._read_at[1]
        read = _Read()
        for ref in self.tasks.tasks():
            outcomes = self.tasks.annotations(ref, "outcome")
            ratings = self.tasks.annotations(ref, "ratings")
            if not outcomes and not ratings:
                continue
            parties = self.tasks.parties(ref)
            if parties is None:
                continue
            name, announcer, decider, winner, capabilities = parties
            read.refs[name] = ref
            found, reasons = task_records(
                name,
                announcer=announcer,
                decider=decider,
                winner=winner,
                capabilities=capabilities,
                outcomes=outcomes,
                ratings=ratings,
            )
            read.records += found
            read.ignored += reasons
            given = self.tasks.annotations(ref, "challenges")
            if not given or winner is None:
                continue
            involved = frozenset({announcer, decider, winner})
            challenges, reasons = filed_challenges(name, involved, found, given, self.settings)
            read.ignored += reasons
            if not challenges:
                continue
            read.challenges += challenges
            read.parties[name] = involved
            votes = {}
            for juror, value in self.tasks.annotations(ref, "votes").items():
                if isinstance(value, dict) and len(value) <= len(challenges):
                    votes[juror] = value
                else:
                    read.ignored.append(
                        f"votes by {juror.short} on {name}: malformed, or more than challenges"
                    )
            read.votes[name] = votes
        self._read_at = (version, read)
        return read

    # -- challenges --------------------------------------------------------------------------

    def challenges(self, now: float | None = None) -> list[Challenge]:
        """Every challenge that counts, at ``now``: its jury, counted votes and status."""
        when = self.clock() if now is None else now
        read = self._read()
        out = []
        for filed in read.challenges:
            if filed.filed > when + FUTURE_SKEW:
                continue  # filed in the future: not yet
            task = filed.record.task
            pool = [
                p
                for p in self._pool(cut_of(filed.filed, self.settings.jury_cut))
                if p not in read.parties[task]
            ]
            jury = draw(filed.id, pool, self.settings.jury_size)
            out.append(tally(filed, jury, read.votes.get(task, {}), when))
        return out

    def challenge(self, record: Record, reason: str, evidence: Any = None) -> Challenge:
        """Challenge ``record`` (one that counts here, on a task this peer is party to,
        written by another, within the challenge window); the record does not count
        until the jury decides.

        Raises:
            ReputationError: not such a record, not a party, challenged already, too
                late, or a reason or evidence that is empty, too long or not plain.
        """
        if not isinstance(record, Record) or record not in self.records():
            raise ReputationError(f"not a record that counts here: {record!r}")
        ref = self._ref_of(record.task)
        if self.me not in self._parties(ref)[1:4]:
            raise ReputationError(f"only a party of {record.task} may challenge its records")
        if record.rater == self.me:
            raise ReputationError("a peer cannot challenge its own record")
        now = self.clock()
        if not record.at <= now <= record.at + self.settings.challenge_window:
            raise ReputationError("the record is outside its challenge window")
        if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON:
            raise ReputationError(f"reason: a text of 1 to {MAX_REASON} characters")
        if evidence_size(evidence) is None:
            raise ReputationError("evidence: plain values (str, numbers, lists, maps), <= 4 KiB")
        given = self.tasks.annotations(ref, "challenges").get(self.me)
        filed = dict(given) if isinstance(given, dict) else {}
        if slot(record) in filed:
            raise ReputationError("this peer challenged that record already")
        filed[slot(record)] = {"reason": reason, "evidence": evidence, "at": now}
        self.tasks.annotate(ref, "challenges", filed)
        wanted = challenge_id(record, self.me)
        return next(c for c in self.challenges(now) if c.id == wanted)

    def vote(self, challenge: Challenge | str, uphold: bool) -> None:
        """Commit this juror's vote on an open challenge (revealed by :meth:`reveal`).

        Raises:
            ReputationError: unknown challenge, not a juror, past the commit period,
                or committed already.
        """
        found = self._challenge(challenge)
        now = self.clock()
        if self.me not in found.jury:
            raise ReputationError(f"{self.me.short} is not on the jury of {found.id}")
        if not found.filed <= now <= found.reveal_from:
            raise ReputationError("the commit period of this challenge is over")
        if not isinstance(uphold, bool):
            raise ReputationError(f"uphold: True or False, not {uphold!r}")
        ref = self._ref_of(found.record.task)
        given = self.tasks.annotations(ref, "votes").get(self.me)
        votes = dict(given) if isinstance(given, dict) else {}
        if found.id in votes:
            raise ReputationError("this juror committed its vote already")
        value, nonce = vote_value(Vote.UPHOLD if uphold else Vote.REJECT), os.urandom(16)
        box = self.me.seal(pad(cbor2.dumps([found.id, value, nonce], canonical=True)))
        votes[found.id] = {
            "commitment": commitment(Purpose.JURY_VOTE, found.id, self.me, value, nonce),
            "sealed": box.hex(),
            "at": now,
        }
        self.tasks.annotate(ref, "votes", votes)

    def reveals_due(self, now: float | None = None) -> list[Challenge]:
        """The challenges whose vote this juror committed and should reveal now."""
        when = self.clock() if now is None else now
        read = self._read()
        due = []
        for found in self.challenges(when):
            if found.decided or self.me not in found.jury:
                continue
            mine = read.votes.get(found.record.task, {}).get(self.me) or {}
            entry = mine.get(found.id)
            committed = isinstance(entry, dict) and "revealed" not in entry
            if committed and found.reveal_from <= when <= found.deadline:
                due.append(found)
        return due

    def reveal(self, challenge: Challenge | str) -> None:
        """Reveal the vote this juror committed on ``challenge``.

        Raises:
            ReputationError: not in the reveal period, or nothing committed here.
        """
        found = self._challenge(challenge)
        now = self.clock()
        if not found.reveal_from <= now <= found.deadline:
            raise ReputationError("outside the reveal period of this challenge")
        ref = self._ref_of(found.record.task)
        given = self.tasks.annotations(ref, "votes").get(self.me)
        votes = dict(given) if isinstance(given, dict) else {}
        entry = votes.get(found.id)
        if not isinstance(entry, dict) or "sealed" not in entry:
            raise ReputationError("this juror committed no vote on this challenge")
        try:
            box = self.replica.identity.unseal(bytes.fromhex(entry["sealed"]))
            _, value, nonce = cbor2.loads(unpad(box) or b"")
        except (ValueError, TypeError, cbor2.CBORDecodeError):
            raise ReputationError("this juror's sealed vote does not open") from None
        votes[found.id] = {**entry, "opening": [value.hex(), nonce.hex()], "revealed": now}
        self.tasks.annotate(ref, "votes", votes)

    def _challenge(self, challenge: Challenge | str) -> Challenge:
        wanted = challenge.id if isinstance(challenge, Challenge) else challenge
        for found in self.challenges():
            if found.id == wanted:
                return found
        raise ReputationError(f"unknown challenge {wanted!r}")

    def _ref_of(self, task: str) -> Any:
        """The task a record is on (every task with records is indexed as it is read:
        no view of every task per command)."""
        ref = self._read().refs.get(task)
        if ref is None:
            raise ReputationError(f"unknown task {task!r}")
        return ref

    def _pool(self, cut: float) -> list[PeerId]:
        """The peers eligible for juries at ``cut`` (kept while the records stamped
        before it, and the fork proofs, stay the same: one computation per cut)."""
        version = self.replica.version
        known = self._pools.get(cut)
        if known is not None and known[0] == version:
            return known[2]
        table = self._raw_table()
        equivocators = self._equivocators()
        key = (table.digest(cut), frozenset(equivocators))
        if known is not None and known[1] == key:
            self._pools[cut] = (version, key, known[2])
            return known[2]
        weights = None
        if self.settings.pretrusted:
            edges = table.trust_edges(until=cut)
            weights = rater_weights(
                eigentrust_edges(*edges, self.settings.pretrusted, self.settings.teleport)
            )
        found = table.scores(cut, self.settings.half_life, weights, equivocators, until=cut)
        pool = eligible(found, self.settings)
        self._pools[cut] = (version, key, pool)
        return pool

    def _adjustment(self, now: float) -> _Adjustment:
        """What challenges change at ``now``: the records that do not count (open or
        upheld challenges), the penalties verdicts recorded, and those by subject."""
        if not self._read().challenges:
            return _NO_ADJUSTMENT
        version = self.replica.version
        if self._adjusting is not None and self._adjusting[:2] == (version, now):
            return self._adjusting[2]
        void: set[tuple[str, str, bytes, bytes]] = set()
        added: list[Record] = []
        for found in self.challenges(now):
            if found.status in (ChallengeStatus.OPEN, ChallengeStatus.UPHELD):
                void.add(found.record.key)
            added += penalties(found, self.settings.penalty)
        added.sort(key=lambda r: r.key)
        by_subject: dict[PeerId, list[Record]] = {}
        for record in added:
            by_subject.setdefault(record.subject, []).append(record)
        adjustment = (frozenset(void), tuple(added), by_subject)
        self._adjusting = (version, now, adjustment)
        return adjustment

    def counted(self, now: float | None = None) -> list[Record]:
        """The records scores count at ``now``: challenges' records set aside while open
        or once upheld, verdicts' penalties added."""
        when = self.clock() if now is None else now
        void, added, _ = self._adjustment(when)
        return [r for r in self.records() if r.key not in void] + list(added)

    def _raw_table(self) -> RecordTable:
        version = self.replica.version
        if self._raw is None or self._raw[0] != version:
            self._raw = (version, RecordTable(self.records()))
        return self._raw[1]

    def _table(self, now: float) -> tuple[RecordTable, dict[PeerId, float] | None]:
        """The records scores count at ``now`` as columns, and the raters' weights
        (kept while the version and the challenges' effects stay the same)."""
        void, added, _ = self._adjustment(now)
        key = (self.replica.version, void, added)
        if self._adjusted is None or self._adjusted[0] != key:
            table = self._raw_table() if not void and not added else RecordTable(self.counted(now))
            weights = None
            if self.settings.pretrusted:
                trust = eigentrust_edges(
                    *table.trust_edges(), self.settings.pretrusted, self.settings.teleport
                )
                weights = rater_weights(trust)
            self._adjusted = (key, table, weights)
        return self._adjusted[1], self._adjusted[2]

    def weights(self, now: float | None = None) -> dict[PeerId, float] | None:
        """Each rater's weight (EigenTrust from the pre-trusted peers); None: every rater
        weighs the same (no pre-trusted peers set)."""
        return self._table(self.clock() if now is None else now)[1]

    def scores(self, now: float | None = None) -> dict[PeerId, ReputationScore]:
        """Every rated peer's score at ``now`` (default: the clock)."""
        when = self.clock() if now is None else now
        table, weights = self._table(when)
        equivocators = self._equivocators()
        return table.scores(when, self.settings.half_life, weights, equivocators)

    # -- the evidence a task's close pins (task selection's reputation criterion) -------

    def score(self, peer: PeerId, at: float) -> float:
        """``peer``'s overall score at ``at`` as the reputation criterion uses it: from
        the :data:`PINNED` most recent records about it (what a close can pin)."""
        return self._score_from(self._evidence_of(peer, at), peer, at, self.weights(at))

    def evidence(self, peers: Sequence[PeerId], at: float) -> dict[str, Any]:
        """What :meth:`score` computed each of ``peers`` from at ``at``: the records'
        names, the raters' weights, the half-life, and who was proven to equivocate."""
        weights = self.weights(at)
        about = {}
        raters: set[PeerId] = set()
        for peer in peers:
            records = self._evidence_of(peer, at)
            about[str(peer)] = [[r.task, r.kind, str(r.rater)] for r in records]
            raters.update(r.rater for r in records)
        forked = self._equivocators() & set(peers)
        return {
            "at": at,
            "half_life": self.settings.half_life,
            "about": about,
            "weights": None
            if weights is None
            else {str(p): weights.get(p, 0.0) for p in sorted(raters, key=lambda p: p.key)},
            "forked": sorted(str(p) for p in forked),
        }

    def check(self, evidence: Any, peer: PeerId, score: float) -> str | None:
        """A problem if the pinned ``score`` of ``peer`` does not follow from the pinned
        evidence; None if it does, or if this replica lacks some of the evidence yet."""
        try:
            at, half_life = float(evidence["at"]), float(evidence["half_life"])
            names = [
                (str(t), str(k), PeerId.parse(str(r))) for t, k, r in evidence["about"][str(peer)]
            ]
            given = evidence.get("weights")
            weights = (
                None
                if given is None
                else {PeerId.parse(str(p)): float(w) for p, w in dict(given).items()}
            )
            forked = {PeerId.parse(str(p)) for p in evidence.get("forked") or ()}
        except (KeyError, TypeError, ValueError):
            return f"the close pins malformed reputation evidence for {peer.short}"
        if len(names) > PINNED:
            return f"the close pins more than {PINNED} records about {peer.short}"
        about = self._records_about(peer) + self._adjustment(at)[2].get(peer, [])
        held = {(r.task, r.kind, r.rater): r for r in about}
        if any(name not in held for name in names):
            return None  # some of it has not reached this replica yet
        if peer in forked and peer not in self._equivocators():
            return None  # the proof has not reached this replica yet
        table = RecordTable(held[name] for name in names)
        found = table.scores(at, half_life, weights, forked & {peer}).get(peer)
        expected = found.overall if found is not None else (0.0 if peer in forked else 0.5)
        if expected != score:
            return (
                f"the close pins reputation {score:.6f} for {peer.short}, but its pinned"
                f" records give {expected:.6f}"
            )
        return None

    def _evidence_of(self, peer: PeerId, at: float) -> list[Record]:
        void, _, penalised = self._adjustment(at)
        counted = [r for r in self._records_about(peer) if r.key not in void]
        about = [r for r in counted + penalised.get(peer, []) if r.at <= at + FUTURE_SKEW]
        about.sort(key=lambda r: (-r.at, r.key))
        return about[:PINNED]

    def _records_about(self, peer: PeerId) -> list[Record]:
        """The records about ``peer`` (an index kept per version: every task view with
        pinned evidence asks, once per bidder)."""
        version = self.replica.version
        if self._about is None or self._about[0] != version:
            index: dict[PeerId, list[Record]] = {}
            for record in self.records():
                index.setdefault(record.subject, []).append(record)
            self._about = (version, index)
        return self._about[1].get(peer, [])

    def _score_from(
        self,
        records: list[Record],
        peer: PeerId,
        at: float,
        weights: dict[PeerId, float] | None,
    ) -> float:
        forked = self._equivocators() & {peer}
        found = RecordTable(records).scores(at, self.settings.half_life, weights, forked).get(peer)
        return found.overall if found is not None else (0.0 if forked else 0.5)

    def _equivocators(self) -> set[PeerId]:
        return {proof.first.author for proof in self.replica.fork_proofs()}

    def get(self, peer: PeerId, now: float | None = None) -> ReputationScore:
        """``peer``'s score (neutral, with confidence 0, when nothing is recorded)."""
        return self.scores(now).get(peer, ReputationScore())


def _unit(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReputationError(f"{name}: a number in [0, 1], not {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ReputationError(f"{name}: a number in [0, 1], not {value!r}")
    return float(value)
