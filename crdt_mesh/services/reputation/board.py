"""The reputation board: reputation's commands and views over one replica's tasks.

Synchronous, clock injected. Records are written on the tasks they are about
(:meth:`TaskBoard.annotate`), and read back from every task this replica holds:
views are pure functions of the replicated records and a time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ...identity import PeerId
from ...ledger import DocumentId
from ...replica.replica import Replica
from .model import (
    Outcome,
    Parties,
    Record,
    ReputationError,
    ReputationScore,
    ReputationSettings,
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
        self._records: tuple[int, list[Record], list[str]] | None = None
        self._about: tuple[int, dict[PeerId, list[Record]]] | None = None
        self._derived: tuple[int, RecordTable, dict[PeerId, float] | None] | None = None

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
        """Every record that counts, from every task this replica holds."""
        return self._read()[0]

    def ignored(self) -> list[str]:
        """What was written as a record and does not count, with the reason."""
        return self._read()[1]

    def _read(self) -> tuple[list[Record], list[str]]:
        version = self.replica.version
        if self._records is not None and self._records[0] == version:
            return self._records[1], self._records[2]
        records: list[Record] = []
        ignored: list[str] = []
        for ref in self.tasks.tasks():
            outcomes = self.tasks.annotations(ref, "outcome")
            ratings = self.tasks.annotations(ref, "ratings")
            if not outcomes and not ratings:
                continue
            parties = self.tasks.parties(ref)
            if parties is None:
                continue
            name, announcer, decider, winner, capabilities = parties
            found, reasons = task_records(
                name,
                announcer=announcer,
                decider=decider,
                winner=winner,
                capabilities=capabilities,
                outcomes=outcomes,
                ratings=ratings,
            )
            records += found
            ignored += reasons
        self._records = (version, records, ignored)
        return records, ignored

    def _table(self) -> tuple[RecordTable, dict[PeerId, float] | None]:
        """The records as columns, and the raters' weights (both kept per version)."""
        version = self.replica.version
        if self._derived is None or self._derived[0] != version:
            table = RecordTable(self.records())
            weights = None
            if self.settings.pretrusted:
                trust = eigentrust_edges(
                    *table.trust_edges(), self.settings.pretrusted, self.settings.teleport
                )
                weights = rater_weights(trust)
            self._derived = (version, table, weights)
        return self._derived[1], self._derived[2]

    def weights(self) -> dict[PeerId, float] | None:
        """Each rater's weight (EigenTrust from the pre-trusted peers); None: every rater
        weighs the same (no pre-trusted peers set)."""
        return self._table()[1]

    def scores(self, now: float | None = None) -> dict[PeerId, ReputationScore]:
        """Every rated peer's score at ``now`` (default: the clock)."""
        table, weights = self._table()
        equivocators = self._equivocators()
        when = self.clock() if now is None else now
        return table.scores(when, self.settings.half_life, weights, equivocators)

    # -- the evidence a task's close pins (task selection's reputation criterion) -------

    def score(self, peer: PeerId, at: float) -> float:
        """``peer``'s overall score at ``at`` as the reputation criterion uses it: from
        the :data:`PINNED` most recent records about it (what a close can pin)."""
        return self._score_from(self._evidence_of(peer, at), peer, at, self.weights())

    def evidence(self, peers: Sequence[PeerId], at: float) -> dict[str, Any]:
        """What :meth:`score` computed each of ``peers`` from at ``at``: the records'
        names, the raters' weights, the half-life, and who was proven to equivocate."""
        weights = self.weights()
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
        held = {(r.task, r.kind, r.rater): r for r in self._records_about(peer)}
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
        about = [r for r in self._records_about(peer) if r.at <= at + FUTURE_SKEW]
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
