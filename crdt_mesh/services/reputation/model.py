"""Reputation's vocabulary: records, scores, settings, events.

Records live on the tasks they are about, in their author's section of the task
(``task:<announcer>:<name>``, policy ``owner``): the decider's ``outcome`` (about
the winner it awarded) and each party's ``ratings`` (about the other parties).
So a record is signed by its author, one per task by construction, and tied to
a real interaction that every replica can check.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ...errors import LocalError
from ...identity import PeerId

#: Who a task involved: (task's document name, announcer, decider, winner or None,
#: the capabilities it asked for).
Parties = tuple[str, PeerId, PeerId, PeerId | None, tuple[str, ...]]


class ReputationEvents(enum.StrEnum):
    """The events reputation fires."""

    UPDATED = "p2p:reputation:updated"  # payload: ReputationUpdate
    CHALLENGED = "p2p:reputation:challenged"  # payload: Challenge (first seen here)
    DECIDED = "p2p:reputation:decided"  # payload: Challenge (its verdict, or a lapse)


class Outcome(enum.StrEnum):
    """How an awarded task went, as its decider records it."""

    SUCCESS = "success"
    PARTIAL = "partial"
    FAILURE = "failure"

    @property
    def value_in_unit(self) -> float:
        return {"success": 1.0, "partial": 0.5, "failure": 0.0}[self.value]


class ReputationError(LocalError, ValueError):
    """A reputation call the rules refuse (not the decider, not a party ...); nothing
    was written."""


_COMPONENTS = (
    "overall",
    "task_completion",
    "response_quality",
    "timeliness",
    "collaboration",
    "uptime",
)


@dataclass(frozen=True, slots=True)
class ReputationScore:
    """A peer's reputation: each component, and each domain's expertise, in [0, 1].

    Every component but ``uptime`` is a pure function of the records and a time
    (the same on every replica that holds the same records); ``uptime`` is what
    this replica's failure detector saw (0.5: it has not watched the peer).
    ``confidence`` grows with the weight of the evidence (0: none). A peer proven
    to have equivocated (a fork proof) has ``overall`` 0 and ``equivocated`` set.
    """

    overall: float = 0.5
    task_completion: float = 0.5
    response_quality: float = 0.5
    timeliness: float = 0.5
    collaboration: float = 0.5
    uptime: float = 0.5
    expertise: Mapping[str, float] = field(default_factory=dict)
    tasks: int = 0
    success_rate: float = 0.0
    confidence: float = 0.0
    equivocated: bool = False

    def __post_init__(self) -> None:
        for name in (*_COMPONENTS, "success_rate", "confidence"):
            _check_unit(name, getattr(self, name))
        for domain, value in self.expertise.items():
            if not isinstance(domain, str) or not domain:
                raise ValueError("expertise domains are non-empty strings")
            _check_unit(f"expertise[{domain!r}]", value)
        object.__setattr__(self, "expertise", MappingProxyType(dict(self.expertise)))


def _check_unit(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in [0, 1], not {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], not {value!r}")


@dataclass(frozen=True, slots=True)
class Record:
    """One record about ``subject``, by ``rater``, on ``task`` (a task's document name),
    as the rules read it. ``kind`` is ``outcome`` or ``rating``; the values that do
    not apply are None.

    A ``penalty`` is the failure a challenge's verdict records (``task``: the
    challenge's id; ``rater``: its challenger): it weighs ``strength`` whoever's
    trust, and is never a rater's word in EigenTrust.
    """

    kind: str
    task: str
    rater: PeerId
    subject: PeerId
    at: float
    outcome: Outcome | None = None
    quality: float | None = None
    timeliness: float | None = None
    collaboration: float | None = None
    domains: tuple[str, ...] = ()
    strength: float = 1.0

    @property
    def key(self) -> tuple[str, str, bytes, bytes]:
        """Orders records alike on every replica (sums in one order: equal floats)."""
        return (self.task, self.kind, self.rater.key, self.subject.key)


@dataclass(frozen=True, slots=True)
class ReputationSettings:
    """How scores are computed (the same on every replica that should agree).

    Args:
        half_life: seconds after which a record weighs half.
        pretrusted: the peers trust flows from (an organization's roots), each with a
            weight (e.g. a stake it signed); empty: every rater weighs the same
            (no Sybil resistance: see docs/reputation.md).
        teleport: EigenTrust's ``a``: the share of trust that returns to the
            pre-trusted peers at each step.
        jury_size: how many jurors a challenge draws (fewer when fewer are eligible).
        juror_min: the ``overall`` score a juror needs (and some evidence: see
            docs/reputation.md), at the cut its challenge was filed in.
        challenge_window: seconds after a record during which it may be challenged.
        commit_period: seconds after filing during which jurors commit to a vote.
        reveal_period: seconds after that during which jurors reveal it.
        penalty: the weight of the failure a verdict records against whoever it
            finds wrong (the record's author, or the challenger).
        jury_cut: juries are drawn from the records stamped before the start of the
            period of this many seconds a challenge was filed in (challenges filed
            in one period share one computation).
    """

    half_life: float = 30 * 24 * 3600.0
    pretrusted: Mapping[PeerId, float] = field(default_factory=dict)
    teleport: float = 0.15
    jury_size: int = 5
    juror_min: float = 0.6
    challenge_window: float = 14 * 24 * 3600.0
    commit_period: float = 24 * 3600.0
    reveal_period: float = 24 * 3600.0
    penalty: float = 1.0
    jury_cut: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("half_life", "challenge_window", "commit_period", "reveal_period", "jury_cut"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ReputationError(f"{name}: seconds > 0, not {value!r}")
            if not math.isfinite(value):
                raise ReputationError(f"{name}: seconds > 0, not {value!r}")
        size = self.jury_size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 99:
            raise ReputationError(f"jury_size: a whole number in [1, 99], not {size!r}")
        try:
            _check_unit("juror_min", self.juror_min)
        except ValueError as exc:
            raise ReputationError(str(exc)) from None
        given = self.penalty
        if isinstance(given, bool) or not isinstance(given, int | float) or not 0 <= given <= 100:
            raise ReputationError(f"penalty: a weight in [0, 100], not {given!r}")
        if not (isinstance(self.teleport, int | float) and 0.0 < self.teleport <= 1.0):
            raise ReputationError(f"teleport: in (0, 1], not {self.teleport!r}")
        for peer, weight in self.pretrusted.items():
            if not isinstance(peer, PeerId):
                raise ReputationError(f"pretrusted: PeerIds, not {peer!r}")
            if not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
                raise ReputationError(f"pretrusted: weights > 0, not {weight!r}")
        object.__setattr__(self, "pretrusted", MappingProxyType(dict(self.pretrusted)))


@dataclass(frozen=True, slots=True)
class ReputationUpdate:
    """A peer's score changed on this replica (the payload of ``p2p:reputation:updated``)."""

    peer: PeerId
    score: ReputationScore


class ChallengeStatus(enum.StrEnum):
    """Where a challenge stands."""

    OPEN = "open"  # jurors commit, then reveal; the record does not count meanwhile
    UPHELD = "upheld"  # the record is void; its author is penalised
    REJECTED = "rejected"  # the record stands; the challenger is penalised
    LAPSED = "lapsed"  # no jury, or too few votes by the deadline: the record stands


class Vote(enum.StrEnum):
    """A juror's vote on a challenge."""

    UPHOLD = "uphold"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Challenge:
    """A challenge of ``record`` by ``challenger`` (a party of its task), as every
    replica holding the same entries reads it at a time.

    ``filed`` starts it; jurors commit to a vote until ``reveal_from`` and reveal it
    until ``deadline``, when the majority of the revealed votes decides (with at
    least half the jury plus one revealed; otherwise it lapses).
    """

    id: str
    record: Record
    challenger: PeerId
    reason: str
    evidence: Any
    filed: float
    reveal_from: float
    deadline: float
    jury: tuple[PeerId, ...] = ()
    status: ChallengeStatus = ChallengeStatus.OPEN
    uphold: int = 0
    reject: int = 0

    @property
    def decided(self) -> bool:
        return self.status is not ChallengeStatus.OPEN


#: What each event's handlers receive.
EVENT_PAYLOADS: Mapping[ReputationEvents, tuple[type, ...]] = {
    ReputationEvents.UPDATED: (ReputationUpdate,),
    ReputationEvents.CHALLENGED: (Challenge,),
    ReputationEvents.DECIDED: (Challenge,),
}
