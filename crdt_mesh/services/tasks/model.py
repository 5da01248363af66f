"""Task negotiation's vocabulary: values, configuration, errors and event names.

A task is the set of documents named ``task:<announcer>:<name>``, one per
participant, each of policy ``owner``: the participant's *section*
(:meth:`TaskRef.section`). See :mod:`crdt_mesh.services.tasks` for the protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ...arguments import integer, number, strings
from ...errors import LocalError
from ...identity import PeerId
from ...ledger import DocumentId, Policy

PREFIX = "task:"
#: Bids live apart from the task's sections, so that they can be private (see
#: ``NegotiationConfig.private_bids``): ``offers:<announcer>:<name>``, one per bidder.
OFFERS_PREFIX = "offers:"
#: The most auditors one announcement names.
MAX_AUDITORS = 16
#: The most addresses an announcement gives (each at most 256 characters).
MAX_REACH = 4
CRITERIA = ("reputation", "price", "availability", "eta")

#: Where the ``reputation`` criterion gets a peer's score, in [0, 1].
ReputationProvider = Callable[[PeerId], float]


@runtime_checkable
class ReputationSource(Protocol):
    """A reputation the close can pin the evidence of, and every replica audit.

    The decider scores each bidder at the close's time and pins the evidence
    (:meth:`evidence`: plain values); each replica asks :meth:`check` whether the
    pinned score follows from that evidence.
    """

    def score(self, peer: PeerId, at: float) -> float:
        """``peer``'s score in [0, 1] at time ``at``."""
        ...

    def evidence(self, peers: Sequence[PeerId], at: float) -> Mapping[str, Any]:
        """What the scores of ``peers`` at ``at`` were computed from."""
        ...

    def check(self, evidence: Mapping[str, Any], peer: PeerId, score: float) -> str | None:
        """A problem if ``score`` does not follow from ``evidence`` (None: it does, or
        this replica cannot tell yet: it lacks some of the evidence)."""
        ...


class NegotiationError(LocalError, ValueError):
    """A task call that the rules of negotiation refuse (the reason says which)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TaskCoordinationMode(enum.StrEnum):
    """How a task is allocated."""

    CENTRALIZED = "centralized"  # one coordinator decides
    HYBRID = "hybrid"  # a named coordinator awards among P2P bids
    P2P_NEGOTIATED = "p2p_negotiated"  # open bids, the announcer selects
    P2P_AUCTIONED = "p2p_auctioned"  # sealed bids, opened after the close


class TaskEvents(enum.StrEnum):
    """The events task negotiation fires, on every replica, as the state arrives."""

    ANNOUNCED = "p2p:task:announced"  # payload: the TaskView
    BID_RECEIVED = "p2p:task:bid:received"  # payload: the Bid (a sealed one: the TaskView)
    ASSIGNED = "p2p:task:assigned"  # payload: the TaskView


class TaskPriority(enum.StrEnum):
    """How urgent a task is (``requirements["priority"]``)."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


class TaskState(enum.StrEnum):
    ANNOUNCED = "announced"
    BIDDING = "bidding"
    AWARDED = "awarded"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


FINAL = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.EXPIRED, TaskState.CANCELLED})


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A task: who announced it and its name (unique per announcer)."""

    announcer: PeerId
    name: str

    @property
    def document_name(self) -> str:
        return f"{PREFIX}{self.announcer}:{self.name}"

    def section(self, author: PeerId) -> DocumentId:
        """The document in which ``author`` writes its part of this task."""
        return DocumentId(Policy.OWNER, self.document_name, author)

    def offers(self, author: PeerId) -> DocumentId:
        """The document in which ``author`` bids on this task (and the decider keeps
        the details of a private close)."""
        return DocumentId(Policy.OWNER, f"{OFFERS_PREFIX}{self.announcer}:{self.name}", author)

    @classmethod
    def from_offers(cls, doc: DocumentId) -> TaskRef | None:
        """The task of an offers document (None: not one)."""
        if doc.policy is not Policy.OWNER or not doc.name.startswith(OFFERS_PREFIX):
            return None
        return cls._parse(doc.name[len(OFFERS_PREFIX) :])

    @classmethod
    def from_document(cls, doc: DocumentId) -> TaskRef | None:
        """The task of a section or an offers document (None: neither)."""
        if doc.policy is not Policy.OWNER:
            return None
        if doc.name.startswith(OFFERS_PREFIX):
            return cls._parse(doc.name[len(OFFERS_PREFIX) :])
        if not doc.name.startswith(PREFIX):
            return None
        return cls._parse(doc.name[len(PREFIX) :])

    @classmethod
    def _parse(cls, rest: str) -> TaskRef | None:
        announcer, sep, name = rest.partition(":")
        if not sep or not name:
            return None
        try:
            return cls(PeerId.parse(announcer), name)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.announcer.short}/{self.name}"


class Parties(NamedTuple):
    """Who a task involved, for services that keep records on tasks (reputation)."""

    task: str  # the task's document name: unique
    announcer: PeerId
    decider: PeerId
    winner: PeerId | None  # None: not awarded
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NegotiationConfig:
    """How bidding runs (the mission's ``negotiation_config``)."""

    bid_timeout: float = 30.0  # seconds the bidding window stays open
    min_bidders: int = 1  # fewer acceptable bids than this at the close: the task expires
    selection_criteria: tuple[str, ...] = ("reputation", "price", "availability")
    announcement_ttl: float = 3600.0  # default deadline, from the announcement
    #: bids reach only the bidder, the announcer, the coordinator and ``auditors``;
    #: everyone else gets the announcement, a close of fixed size and the award
    private_bids: bool = False
    #: peers that follow a private task whole (read every bid and the close's details)
    auditors: tuple[PeerId, ...] = ()

    def __post_init__(self) -> None:
        number("bid_timeout", self.bid_timeout, above=0, error=NegotiationError)
        number("announcement_ttl", self.announcement_ttl, above=0, error=NegotiationError)
        integer("min_bidders", self.min_bidders, low=1, error=NegotiationError)
        if not isinstance(self.selection_criteria, tuple):
            object.__setattr__(
                self, "selection_criteria", strings("selection_criteria", self.selection_criteria)
            )
        unknown = set(self.selection_criteria) - set(CRITERIA)
        if unknown or not self.selection_criteria:
            raise NegotiationError(
                f"selection criteria are some of {CRITERIA}, not {sorted(unknown)}"
            )
        if not isinstance(self.private_bids, bool):
            raise NegotiationError(f"private_bids: True or False, not {self.private_bids!r}")
        auditors = self.auditors
        if isinstance(auditors, str | bytes) or not isinstance(auditors, Iterable):
            raise NegotiationError(f"auditors: a list of peer ids, not {auditors!r}")
        try:
            parsed = tuple(a if isinstance(a, PeerId) else PeerId.parse(a) for a in auditors)
        except (ValueError, TypeError):
            raise NegotiationError(f"auditors: a list of peer ids, not {auditors!r}") from None
        if len(parsed) > MAX_AUDITORS:
            raise NegotiationError(f"auditors: at most {MAX_AUDITORS}")
        if parsed and not self.private_bids:
            raise NegotiationError("auditors: only a task with private_bids names them")
        object.__setattr__(self, "auditors", parsed)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> NegotiationConfig:
        values = dict(values or {})
        known = {
            "bid_timeout",
            "min_bidders",
            "selection_criteria",
            "announcement_ttl",
            "private_bids",
            "auditors",
        }
        if set(values) - known:
            raise NegotiationError(
                f"negotiation: unknown settings {sorted(map(str, set(values) - known))}"
                f" (known: {sorted(known)})"
            )
        if "selection_criteria" in values:
            values["selection_criteria"] = strings(
                "selection_criteria", values["selection_criteria"]
            )
        return cls(**values)


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """The mission's ``TaskConfig``: how this agent's tasks are coordinated."""

    coordination_mode: TaskCoordinationMode = TaskCoordinationMode.P2P_NEGOTIATED
    negotiation_config: NegotiationConfig = field(default_factory=NegotiationConfig)
    coordinator: PeerId | None = None  # who awards in the centralized and hybrid modes

    def __post_init__(self) -> None:
        coordinated = self.coordination_mode in (
            TaskCoordinationMode.CENTRALIZED,
            TaskCoordinationMode.HYBRID,
        )
        if coordinated and self.coordinator is None:
            raise NegotiationError(f"{self.coordination_mode.value} needs a coordinator peer")


@dataclass(frozen=True, slots=True)
class Announcement:
    ref: TaskRef
    capabilities: tuple[str, ...]
    requirements: Mapping[str, Any]
    deadline: float
    negotiation: NegotiationConfig
    mode: TaskCoordinationMode
    coordinator: PeerId | None
    parent: TaskRef | None
    announced_at: float
    #: where the announcer listened when it announced: a private bid is carried there
    reach: tuple[str, ...] = ()

    @property
    def decider(self) -> PeerId:
        """Whose close and award count: the coordinator's, else the announcer's."""
        return self.coordinator if self.coordinator is not None else self.ref.announcer

    @property
    def bids_close_at(self) -> float:
        return self.announced_at + self.negotiation.bid_timeout


@dataclass(frozen=True, slots=True)
class Bid:
    task: TaskRef
    bidder: PeerId
    price: float
    availability: float
    eta: float
    capabilities: tuple[str, ...]
    at: float
    digest: str  # hex BLAKE2b of the bid as written (what the close pins)


@dataclass(frozen=True, slots=True)
class RejectedBid:
    bidder: PeerId
    reason: str


@dataclass(frozen=True, slots=True)
class TaskView:
    """Everything a replica can say of a task, from replicated state and a clock."""

    announcement: Announcement
    state: TaskState
    bids: tuple[Bid, ...]  # acceptable bids (those the close lists, once closed)
    rejected: tuple[RejectedBid, ...]
    sealed: int  # sealed bids not opened yet
    closed: bool
    award: PeerId | None
    expected_winner: PeerId | None  # what the rules pick from the closed bids
    problems: tuple[str, ...]  # the audit: anything that does not follow from the rules
    ignored: tuple[str, ...]  # what participants wrote that their role does not allow
    progress: Any
    result: Any
    subtasks: tuple[TaskRef, ...]
    #: whether this replica could check the award (a private task's bids and close
    #: details reach only its parties and auditors: elsewhere this is False; so it is
    #: while a bid the close pins has not arrived)
    audited: bool = True
    #: bidders whose bids the close pins and this replica does not hold yet (entries
    #: travel apart: a close can arrive first); the audit waits for them
    awaiting: tuple[PeerId, ...] = ()

    @property
    def ref(self) -> TaskRef:
        return self.announcement.ref

    @property
    def audit_ok(self) -> bool:
        return not self.problems


#: What each event's handlers receive (one of these types).
EVENT_PAYLOADS: Mapping[TaskEvents, tuple[type, ...]] = {
    TaskEvents.ANNOUNCED: (TaskView,),
    TaskEvents.BID_RECEIVED: (Bid, TaskView),  # a sealed bid: the TaskView (its content is hidden)
    TaskEvents.ASSIGNED: (TaskView,),
}
