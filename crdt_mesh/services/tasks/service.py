"""Decentralised task negotiation in the manner of the FIPA Contract Net protocol.

Call for proposals with a window (announce) → proposals (bid) → close, accept
one (award) → acceptance, progress, done or failure. A thin view over
replicated state: a task is the set of documents named ``task:<announcer>:<name>``,
one per participant and each of policy ``owner`` — the participant's *section*.
The announcer's section holds the announcement, the close, the award and the
final verdict; each bidder's holds its own bid, withdrawal, acceptance,
progress and result; in the coordinated modes the coordinator's holds the
close and the award. Because each section has one writer, enforced at ingest
by signature, **nobody can forge, alter or erase another's bid, and only the
decider's award is read at all**: it is so by construction, not by convention.

Selection is a pure function (:func:`select`) of the bids the close lists,
the announced criteria and a reputation provider, so every replica recomputes
the award and the view flags an award that does not follow (the audit).
Sealed bids (``p2p_auctioned``) are encrypted to the announcer with a sealed
box and published with a hash commitment; the close publishes each opened bid
and its nonce, and every replica checks them against the commitments.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import cbor2

from ...config import Feature
from ...errors import NegotiationError
from ...events import P2PEvents
from ...identity import PeerId
from ...ledger import DocumentId, Entry, Policy
from ...runtime.host import Host
from ...runtime.penalty import Offence
from ...types import TaskCoordinationMode

if TYPE_CHECKING:
    from ...replica.replica import Replica

PREFIX = "task:"
_ROOT = "task"
_BIDS = "bids"
CRITERIA = ("reputation", "price", "availability", "eta")
#: How long collect_bids polls between looks at the replica (it also wakes on commits).
_POLL = 0.05

ReputationProvider = Callable[[PeerId], float]


def neutral_reputation(peer: PeerId) -> float:
    """The reputation every peer has until a reputation service says otherwise."""
    return 0.5


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

    @classmethod
    def from_document(cls, doc: DocumentId) -> TaskRef | None:
        if doc.policy is not Policy.OWNER or not doc.name.startswith(PREFIX):
            return None
        rest = doc.name[len(PREFIX) :]
        announcer, sep, name = rest.partition(":")
        if not sep or not name:
            return None
        try:
            return cls(PeerId.parse(announcer), name)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.announcer.short}/{self.name}"


@dataclass(frozen=True, slots=True)
class NegotiationConfig:
    """How bidding runs (the mission's ``negotiation_config``)."""

    bid_timeout: float = 30.0  # seconds the bidding window stays open
    min_bidders: int = 1  # fewer acceptable bids than this at the close: the task expires
    selection_criteria: tuple[str, ...] = ("reputation", "price", "availability")
    announcement_ttl: float = 3600.0  # default deadline, from the announcement

    def __post_init__(self) -> None:
        if not (self.bid_timeout > 0 and self.announcement_ttl > 0):
            raise NegotiationError("bid_timeout and announcement_ttl are positive")
        if self.min_bidders < 1:
            raise NegotiationError("min_bidders is at least 1")
        unknown = set(self.selection_criteria) - set(CRITERIA)
        if unknown or not self.selection_criteria:
            raise NegotiationError(
                f"selection criteria are some of {CRITERIA}, not {sorted(unknown)}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> NegotiationConfig:
        values = dict(values or {})
        known = {"bid_timeout", "min_bidders", "selection_criteria", "announcement_ttl"}
        if set(values) - known:
            raise NegotiationError(f"unknown negotiation settings: {sorted(set(values) - known)}")
        if "selection_criteria" in values:
            values["selection_criteria"] = tuple(values["selection_criteria"])
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

    @property
    def ref(self) -> TaskRef:
        return self.announcement.ref

    @property
    def audit_ok(self) -> bool:
        return not self.problems


# -- selection: a pure function ---------------------------------------------------------------


def select(
    bids: Sequence[Bid], criteria: Sequence[str], reputation: ReputationProvider | None = None
) -> Bid | None:
    """The winning bid under ``criteria`` (earlier criteria weigh more); None if no bids.

    Each criterion maps a bid to [0, 1] (reputation as given; price and eta as the
    best offered over this one; availability as offered), weighted 1, 1/2, 1/4 ...
    in the order given. Ties go to the smaller bidder key. Deterministic: every
    replica with the same bids and provider picks the same winner.
    """
    if not bids:
        return None
    score_of = reputation or neutral_reputation
    best_price = min(b.price for b in bids)
    best_eta = min(b.eta for b in bids)

    def value(bid: Bid, criterion: str) -> float:
        if criterion == "price":
            return best_price / bid.price if bid.price > 0 else 1.0
        if criterion == "eta":
            return best_eta / bid.eta if bid.eta > 0 else 1.0
        if criterion == "availability":
            return bid.availability
        if criterion == "reputation":
            return min(1.0, max(0.0, float(score_of(bid.bidder))))
        raise NegotiationError(f"unknown selection criterion {criterion!r}")

    def score(bid: Bid) -> float:
        return sum(0.5**i * value(bid, c) for i, c in enumerate(criteria))

    return min(bids, key=lambda b: (-score(b), b.bidder.key))


# -- the board: commands and views over one replica -----------------------------------------------


class TaskBoard:
    """Task negotiation over one replica, synchronously (no I/O, the clock passed in).

    :class:`TaskService` (``mesh.tasks``) wraps it for a running mesh.
    """

    def __init__(
        self,
        replica: Replica,
        *,
        reputation: ReputationProvider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.replica = replica
        self.reputation = reputation or neutral_reputation
        self.clock = clock
        self._indexed_at = -1  # how many documents the index below was built from
        self._sections: dict[TaskRef, list[PeerId]] = {}
        self._parents_at = -1
        self._memo: dict[tuple[TaskRef, PeerId], dict[str, Any]] | None = None
        self._children: dict[TaskRef, list[TaskRef]] = {}

    def _index(self) -> dict[TaskRef, list[PeerId]]:
        """Task -> the authors of its sections (rebuilt only when documents appear)."""
        documents = self.replica.documents()
        if len(documents) != self._indexed_at:
            sections: dict[TaskRef, list[PeerId]] = {}
            for doc in documents:
                ref = TaskRef.from_document(doc)
                if ref is not None and doc.owner is not None:
                    sections.setdefault(ref, []).append(doc.owner)
            for authors in sections.values():
                authors.sort(key=lambda p: p.key)
            self._sections, self._indexed_at = sections, len(documents)
        return self._sections

    @property
    def me(self) -> PeerId:
        return self.replica.peer_id

    # -- announcer ---------------------------------------------------------------------------

    def announce(
        self,
        name: str,
        requirements: Mapping[str, Any] | None = None,
        *,
        deadline: float | None = None,
        negotiation: NegotiationConfig | Mapping[str, Any] | None = None,
        mode: TaskCoordinationMode = TaskCoordinationMode.P2P_NEGOTIATED,
        coordinator: PeerId | None = None,
        parent: TaskRef | None = None,
    ) -> Announcement:
        """Announce a task (a call for proposals); returns the announcement.

        Raises:
            NegotiationError (a ValueError): the name is taken or malformed, the
                deadline has passed, a coordinated mode has no coordinator, the parent
                is not one this peer may split, or the requirements or negotiation
                settings are malformed.
        """
        if not isinstance(name, str) or not name or ":" in name:
            raise NegotiationError("a task name is a non-empty string without ':'")
        config = (
            negotiation
            if isinstance(negotiation, NegotiationConfig)
            else NegotiationConfig.from_mapping(negotiation)
        )
        mode = TaskCoordinationMode(mode)
        coordinated = mode in (TaskCoordinationMode.CENTRALIZED, TaskCoordinationMode.HYBRID)
        if coordinated and coordinator is None:
            raise NegotiationError(f"{mode.value} needs a coordinator peer")
        ref = TaskRef(self.me, name)
        if self._announcement(ref) is not None:
            raise NegotiationError(f"task {name!r} was announced already")
        requirements = dict(requirements or {})
        capabilities = requirements.get("capabilities", [])
        if not isinstance(capabilities, list | tuple) or not all(
            isinstance(c, str) and c for c in capabilities
        ):
            raise NegotiationError("requirements['capabilities'] is a list of non-empty strings")
        now = self.clock()
        deadline = now + config.announcement_ttl if deadline is None else float(deadline)
        if not math.isfinite(deadline) or deadline <= now:
            raise NegotiationError("the deadline has passed already")
        if parent is not None:
            view = self.view(parent)
            if view is None:
                raise NegotiationError(f"unknown parent task {parent}")
            if self.me not in (parent.announcer, view.award):
                raise NegotiationError("only a task's announcer or its winner may split it")
        record = {
            "name": name,
            "requirements": _plain(requirements),
            "deadline": deadline,
            "negotiation": {
                "bid_timeout": config.bid_timeout,
                "min_bidders": config.min_bidders,
                "selection_criteria": list(config.selection_criteria),
                "announcement_ttl": config.announcement_ttl,
            },
            "mode": mode.value,
            "coordinator": str(coordinator) if coordinator is not None else None,
            "parent": [str(parent.announcer), parent.name] if parent is not None else None,
            "announced_at": now,
        }
        document = self.replica.document(ref.section(self.me))
        with document.transaction():
            document.map(_ROOT)["announcement"] = record
        announcement = self._announcement(ref)
        assert announcement is not None
        return announcement

    def close(self, ref: TaskRef) -> TaskView:
        """Close bidding and award by the rules (one entry): the decider's call.

        With fewer acceptable bids than ``min_bidders`` the task expires instead.

        Raises:
            NegotiationError: not the decider, unknown task, or closed already.
        """
        view = self._require_view(ref)
        ann = view.announcement
        if self.me != ann.decider:
            raise NegotiationError(f"only {ann.decider.short} closes and awards {ref}")
        if view.closed or view.state in FINAL:
            raise NegotiationError(f"task {ref} is closed already")
        bids = list(view.bids)
        opened: dict[str, list[str]] = {}
        refused: dict[str, str] = {}
        if ann.mode is TaskCoordinationMode.P2P_AUCTIONED:
            bids, opened, refused = self._open_sealed(ref)
        close = {
            "bidders": {str(b.bidder): b.digest for b in bids},
            "opened": opened,
            "refused": refused,
            "at": self.clock(),
        }
        winner = select(bids, ann.negotiation.selection_criteria, self.reputation)
        document = self.replica.document(ref.section(self.me))
        with document.transaction():
            root = document.map(_ROOT)
            root["close"] = close
            if winner is not None and len(bids) >= ann.negotiation.min_bidders:
                root["award"] = {"winner": str(winner.bidder), "at": self.clock()}
            elif self.me == ref.announcer:
                root["verdict"] = {"state": TaskState.EXPIRED.value, "at": self.clock()}
        return self._require_view(ref)

    def conclude(self, ref: TaskRef, state: TaskState, note: str = "") -> TaskView:
        """The announcer's final verdict: completed, failed, expired or cancelled.

        Raises:
            NegotiationError: not the announcer, not a final state, or concluded already.
        """
        view = self._require_view(ref)
        state = TaskState(state)
        if self.me != ref.announcer:
            raise NegotiationError("only the announcer gives the final verdict")
        if state not in FINAL:
            raise NegotiationError(f"{state.value} is not a final state")
        if self._section(ref, self.me).get("verdict") is not None:
            raise NegotiationError(f"task {ref} has its verdict already")
        if state is TaskState.COMPLETED and view.result is None and not view.subtasks:
            raise NegotiationError("nothing was delivered: a task completes on a result")
        document = self.replica.document(ref.section(self.me))
        with document.transaction():
            document.map(_ROOT)["verdict"] = {
                "state": state.value,
                "at": self.clock(),
                "note": note,
            }
        return self._require_view(ref)

    def cancel(self, ref: TaskRef) -> TaskView:
        return self.conclude(ref, TaskState.CANCELLED)

    # -- bidder ------------------------------------------------------------------------------

    def bid(
        self,
        ref: TaskRef | str,
        *,
        price: float,
        availability: float = 1.0,
        eta: float = 0.0,
        capabilities: Iterable[str] = (),
    ) -> Bid | None:
        """Bid on a task; returns the bid (None while a sealed bid is unopened).

        Raises:
            NegotiationError (a ValueError): unknown task, bidding closed or past its
                window or deadline, missing capabilities, a second bid, the announcer
                bidding, a price or eta negative or not finite, or an availability
                outside [0, 1].
        """
        ref = self.resolve(ref)
        view = self._require_view(ref)
        ann = view.announcement
        now = self.clock()
        price, availability, eta = float(price), float(availability), float(eta)
        if not (math.isfinite(price) and price >= 0 and math.isfinite(eta) and eta >= 0):
            raise NegotiationError("price and eta are finite and not negative")
        if not 0.0 <= availability <= 1.0:
            raise NegotiationError("availability is in [0, 1]")
        if self.me == ref.announcer:
            raise NegotiationError("the announcer does not bid on its own task")
        if now > ann.bids_close_at or now > ann.deadline:
            raise NegotiationError(f"the bidding window of {ref} has passed")
        if view.closed or view.state in FINAL:
            raise NegotiationError(f"bidding on {ref} is closed")
        caps = tuple(capabilities)
        missing = sorted(set(ann.capabilities) - set(caps))
        if missing:
            raise NegotiationError(f"missing capabilities: {', '.join(missing)}")
        section = self.replica.document(ref.section(self.me))
        existing = section.array(_BIDS).to_py() or []
        if existing and not self._section(ref, self.me).get("withdrawn"):
            raise NegotiationError(f"a bid on {ref} was made already")
        if existing:
            raise NegotiationError(f"a withdrawn bid on {ref} is final")
        offer = {
            "price": price,
            "availability": availability,
            "eta": eta,
            "capabilities": list(caps),
            "at": now,
        }
        entry: dict[str, Any] = offer
        if ann.mode is TaskCoordinationMode.P2P_AUCTIONED:
            nonce = os.urandom(16)
            plain = _encode(offer)
            entry = {
                "sealed": ann.decider.seal(_seal_content(ref, self.me, plain, nonce)).hex(),
                "commitment": _commitment(ref, self.me, plain, nonce),
                "capabilities": list(caps),
                "at": now,
            }
        with section.transaction():
            section.array(_BIDS).append(entry)
        if "sealed" in entry:
            return None
        return next(b for b in self._require_view(ref).bids if b.bidder == self.me)

    def withdraw(self, ref: TaskRef) -> None:
        """Withdraw this peer's bid (before the close; final)."""
        view = self._require_view(ref)
        if view.closed:
            raise NegotiationError(f"bidding on {ref} is closed")
        document = self.replica.document(ref.section(self.me))
        if not document.array(_BIDS).to_py():
            raise NegotiationError(f"no bid on {ref} to withdraw")
        with document.transaction():
            document.map(_ROOT)["withdrawn"] = self.clock()

    def accept(self, ref: TaskRef) -> TaskView:
        """The winner accepts the award."""
        return self._winner_writes(ref, "accepted", self.clock(), after=TaskState.AWARDED)

    def report_progress(self, ref: TaskRef, progress: Any) -> TaskView:
        """The winner reports progress (any plain value) once it has accepted."""
        return self._winner_writes(ref, "progress", _plain(progress), after=TaskState.ACCEPTED)

    def complete(self, ref: TaskRef, output: Any = None) -> TaskView:
        result = {"status": TaskState.COMPLETED.value, "output": _plain(output), "at": self.clock()}
        return self._winner_writes(ref, "result", result, after=TaskState.ACCEPTED)

    def fail(self, ref: TaskRef, reason: str = "") -> TaskView:
        result = {"status": TaskState.FAILED.value, "output": reason, "at": self.clock()}
        return self._winner_writes(ref, "result", result, after=TaskState.ACCEPTED)

    def _winner_writes(self, ref: TaskRef, key: str, value: Any, *, after: TaskState) -> TaskView:
        view = self._require_view(ref)
        if view.award != self.me:
            raise NegotiationError(f"{ref} was not awarded to this peer")
        if view.problems:
            raise NegotiationError(
                f"the award of {ref} fails this replica's audit: {view.problems[0]}"
            )
        order = [TaskState.AWARDED, TaskState.ACCEPTED, TaskState.IN_PROGRESS]
        if view.state not in order or order.index(view.state) < order.index(after):
            raise NegotiationError(f"{ref} is {view.state.value}: cannot write {key} now")
        document = self.replica.document(ref.section(self.me))
        with document.transaction():
            document.map(_ROOT)[key] = value
        return self._require_view(ref)

    # -- views -------------------------------------------------------------------------------

    def tasks(self) -> list[TaskRef]:
        """Every task whose announcement this replica holds, in a stable order."""
        index = self._index()
        refs = [r for r, authors in index.items() if r.announcer in authors]
        live = [r for r in refs if self._announcement(r) is not None]
        return sorted(live, key=lambda r: (r.announcer.key, r.name))

    def resolve(self, ref: TaskRef | str) -> TaskRef:
        """A task by reference, or by name when exactly one announcer used it."""
        if isinstance(ref, TaskRef):
            return ref
        matches = [r for r in self.tasks() if r.name == ref]
        if not matches:
            raise NegotiationError(f"unknown task {ref!r}")
        if len(matches) > 1:
            raise NegotiationError(
                f"{len(matches)} announcers used the name {ref!r}: pass a TaskRef"
            )
        return matches[0]

    def view(self, ref: TaskRef, now: float | None = None) -> TaskView | None:
        """The task as the replicated state says (None if its announcement is not here)."""
        outer = self._memo is None
        if outer:
            self._memo = {}  # each section is read once per view
        try:
            return self._view(ref, now)
        finally:
            if outer:
                self._memo = None

    def _view(self, ref: TaskRef, now: float | None) -> TaskView | None:
        ann = self._announcement(ref)
        if ann is None:
            return None
        now = self.clock() if now is None else now
        problems: list[str] = []
        rejected: list[RejectedBid] = []
        decider = self._section(ref, ann.decider)
        close = decider.get("close") if isinstance(decider.get("close"), dict) else None
        pinned: dict[str, str] = {}
        opened: dict[str, Any] = {}
        refused: dict[str, Any] = {}
        if close is not None:
            pinned = {str(k): str(v) for k, v in dict(close.get("bidders") or {}).items()}
            opened = dict(close.get("opened") or {})
            refused = dict(close.get("refused") or {})
        copies = self._copies(ref, opened) if opened else {}
        candidates: list[Bid] = []
        sealed_waiting = 0
        for bidder in self._participants(ref):
            if bidder in (ref.announcer,):
                continue
            section = self._section(ref, bidder)
            offers = self._offers(ref, bidder)
            if not offers:
                continue
            first = offers[0]
            if len(offers) > 1:
                rejected.append(RejectedBid(bidder, "duplicate bid ignored (the first counts)"))
            if "sealed" in first:
                bid = self._opened(ref, bidder, first, opened.get(str(bidder)), problems)
                if bid is None:
                    if bidder in copies:  # any replica can tell: see copied_sealed_bids
                        original = copies[bidder].short
                        rejected.append(RejectedBid(bidder, f"copies the sealed bid of {original}"))
                    elif close is None:
                        sealed_waiting += 1
                    elif str(bidder) in refused and str(bidder) not in pinned:
                        reason = str(refused[str(bidder)])[:200]
                        rejected.append(RejectedBid(bidder, f"refused by the decider: {reason}"))
                    elif str(bidder) not in pinned:
                        rejected.append(RejectedBid(bidder, "bid after the close"))
                    elif str(bidder) not in opened:
                        problems.append(f"closed on the sealed bid of {bidder.short} unopened")
                    continue
            else:
                bid = _bid(ref, bidder, first)
                if bid is None:
                    rejected.append(RejectedBid(bidder, "malformed bid"))
                    continue
            missing = sorted(set(ann.capabilities) - set(bid.capabilities))
            if missing:
                rejected.append(RejectedBid(bidder, f"missing capabilities: {', '.join(missing)}"))
                continue
            withdrawn = section.get("withdrawn")
            if close is not None:
                if str(bidder) not in pinned:
                    rejected.append(RejectedBid(bidder, "bid after the close"))
                    continue
                if pinned[str(bidder)] != bid.digest:
                    problems.append(f"the bid of {bidder.short} differs from the one closed on")
                    continue
            elif withdrawn is not None:
                rejected.append(RejectedBid(bidder, "withdrawn"))
                continue
            candidates.append(bid)
        held = {str(b.bidder) for b in candidates}
        missing_bids = sorted(set(pinned) - held - {str(r.bidder) for r in rejected})
        for bidder_text in missing_bids:
            problems.append(f"closed on a bid of {bidder_text[:12]} that this replica lacks")
        expected: PeerId | None = None
        enough = len(candidates) >= ann.negotiation.min_bidders
        if close is not None and not missing_bids and enough:
            chosen = select(candidates, ann.negotiation.selection_criteria, self.reputation)
            expected = chosen.bidder if chosen is not None else None
        award = _peer(dict(decider.get("award") or {}).get("winner"))
        if award is not None:
            if close is None:
                problems.append("an award without a close")
            elif not missing_bids and award != expected:
                want = expected.short if expected else "no award"
                problems.append(f"award to {award.short} does not follow from the rules ({want})")
        subtasks = self._subtasks(ref)
        state = self._state(ref, ann, candidates, close, award, now, subtasks)
        winner_section = self._section(ref, award) if award is not None else {}
        result = winner_section.get("result") if award is not None else None
        return TaskView(
            announcement=ann,
            state=state,
            bids=tuple(sorted(candidates, key=lambda b: b.bidder.key)),
            rejected=tuple(rejected),
            sealed=sealed_waiting,
            closed=close is not None,
            award=award,
            expected_winner=expected,
            problems=tuple(problems),
            ignored=tuple(self._ignored(ref, ann)),
            progress=winner_section.get("progress"),
            result=result,
            subtasks=subtasks,
        )

    def _ignored(self, ref: TaskRef, ann: Announcement) -> list[str]:
        """Writes outside a participant's role: never read, but reported."""
        notes = []
        for author in self._participants(ref):
            section = self._section(ref, author)
            for key in ("close", "award"):
                if key in section and author != ann.decider:
                    notes.append(f"{key} by {author.short} ignored: only {ann.decider.short} may")
            if "verdict" in section and author != ref.announcer:
                notes.append(f"verdict by {author.short} ignored: only the announcer gives it")
        return notes

    def _state(
        self,
        ref: TaskRef,
        ann: Announcement,
        bids: list[Bid],
        close: dict[str, Any] | None,
        award: PeerId | None,
        now: float,
        subtasks: tuple[TaskRef, ...],
    ) -> TaskState:
        verdict = dict(self._section(ref, ref.announcer).get("verdict") or {}).get("state")
        if verdict in {s.value for s in FINAL}:
            return TaskState(verdict)
        if award is not None:
            winner = self._section(ref, award)
            status = dict(winner.get("result") or {}).get("status")
            if status in (TaskState.COMPLETED.value, TaskState.FAILED.value):
                return TaskState(status)
            if subtasks:
                views = [self.view(s, now) for s in subtasks]
                if all(v is not None and v.state is TaskState.COMPLETED for v in views):
                    return TaskState.COMPLETED
            if winner.get("progress") is not None:
                return TaskState.IN_PROGRESS
            if winner.get("accepted") is not None:
                return TaskState.ACCEPTED
            return TaskState.AWARDED
        if now > ann.deadline or close is not None:
            return TaskState.EXPIRED  # deadline passed, or closed with no acceptable bid
        return TaskState.BIDDING if bids else TaskState.ANNOUNCED

    # -- reading sections --------------------------------------------------------------------

    def _participants(self, ref: TaskRef) -> list[PeerId]:
        return list(self._index().get(ref, ()))

    def _section(self, ref: TaskRef, author: PeerId) -> dict[str, Any]:
        if self._memo is not None and (ref, author) in self._memo:
            return self._memo[(ref, author)]
        doc_id = ref.section(author)
        section: dict[str, Any] = {}
        if self.replica.has_document(doc_id):
            section = dict(self.replica.document(doc_id).map(_ROOT).to_py() or {})
        if self._memo is not None:
            self._memo[(ref, author)] = section
        return section

    def _offers(self, ref: TaskRef, author: PeerId) -> list[dict[str, Any]]:
        doc_id = ref.section(author)
        if not self.replica.has_document(doc_id):
            return []
        offers = self.replica.document(doc_id).array(_BIDS).to_py() or []
        return [o for o in offers if isinstance(o, dict)]

    def _announcement(self, ref: TaskRef) -> Announcement | None:
        record = self._section(ref, ref.announcer).get("announcement")
        if not isinstance(record, dict):
            return None
        try:
            requirements = dict(record.get("requirements") or {})
            parent = record.get("parent")
            return Announcement(
                ref=ref,
                capabilities=tuple(str(c) for c in requirements.get("capabilities", [])),
                requirements=requirements,
                deadline=float(record["deadline"]),
                negotiation=NegotiationConfig.from_mapping(
                    {k: v for k, v in dict(record["negotiation"]).items()}
                    | {"min_bidders": int(record["negotiation"]["min_bidders"])}
                ),
                mode=TaskCoordinationMode(record["mode"]),
                coordinator=_peer(record.get("coordinator")),
                parent=TaskRef(PeerId.parse(parent[0]), str(parent[1])) if parent else None,
                announced_at=float(record["announced_at"]),
            )
        except (KeyError, TypeError, ValueError, IndexError):
            return None  # written badly by its announcer: not a task anyone can bid on

    def _require_view(self, ref: TaskRef) -> TaskView:
        view = self.view(ref)
        if view is None:
            raise NegotiationError(f"unknown task {ref}")
        return view

    def _subtasks(self, parent: TaskRef) -> tuple[TaskRef, ...]:
        index = self._index()
        if len(index) <= 1:
            return ()
        if self._parents_at != self._indexed_at:  # who is whose parent, once per index
            children: dict[TaskRef, list[TaskRef]] = {}
            for ref in self.tasks():
                ann = self._announcement(ref)
                if ann is not None and ann.parent is not None:
                    children.setdefault(ann.parent, []).append(ref)
            self._children, self._parents_at = children, self._indexed_at
        return tuple(self._children.get(parent, ()))

    # -- sealed bids -------------------------------------------------------------------------

    def _opened(
        self,
        ref: TaskRef,
        bidder: PeerId,
        sealed: dict[str, Any],
        opening: Any,
        problems: list[str],
    ) -> Bid | None:
        """A sealed bid as the close opened it, checked against its commitment."""
        if opening is None:
            return None
        try:
            plain, nonce = bytes.fromhex(opening[0]), bytes.fromhex(opening[1])
            if _commitment(ref, bidder, plain, nonce) != sealed.get("commitment"):
                problems.append(f"the opened bid of {bidder.short} does not match its sealed bid")
                return None
            offer = cbor2.loads(plain)
        except (ValueError, TypeError, IndexError, cbor2.CBORDecodeError):
            problems.append(f"the opened bid of {bidder.short} is malformed")
            return None
        bid = _bid(ref, bidder, offer)
        if bid is None:
            problems.append(f"the opened bid of {bidder.short} is malformed")
            return None
        return dataclasses.replace(bid, digest=_digest(sealed))

    def _closed_openings(self, ref: TaskRef) -> dict[str, Any]:
        ann = self._announcement(ref)
        if ann is None:
            return {}
        close = self._section(ref, ann.decider).get("close")
        return dict(close.get("opened") or {}) if isinstance(close, dict) else {}

    def _copies(self, ref: TaskRef, opened: Mapping[str, Any]) -> dict[PeerId, PeerId]:
        """Bidders whose sealed commitment is another's whose opening verifies."""
        by_commitment: dict[str, list[PeerId]] = {}
        for bidder in self._participants(ref):
            offers = self._offers(ref, bidder)
            if offers and "sealed" in offers[0]:
                commitment = str(offers[0].get("commitment"))
                by_commitment.setdefault(commitment, []).append(bidder)
        copies: dict[PeerId, PeerId] = {}
        for commitment, bidders in by_commitment.items():
            if len(bidders) < 2:
                continue
            originals = [
                b for b in bidders if _opening_matches(ref, b, opened.get(str(b)), commitment)
            ]
            if len(originals) == 1:
                copies.update({b: originals[0] for b in bidders if b != originals[0]})
        return copies

    def _open_sealed(self, ref: TaskRef) -> tuple[list[Bid], dict[str, list[str]], dict[str, str]]:
        """The decider opens every sealed bid it holds (only it can): the bids, their
        openings, and the sealed bids it refused (bidder -> reason)."""
        identity = self.replica.identity
        ann = self._announcement(ref)
        assert ann is not None
        bids: list[Bid] = []
        opened: dict[str, list[str]] = {}
        refused: dict[str, str] = {}
        for bidder in self._participants(ref):
            offers = self._offers(ref, bidder)
            if not offers or "sealed" not in offers[0]:
                continue
            if self._section(ref, bidder).get("withdrawn") is not None:
                continue
            try:
                box = identity.unseal(bytes.fromhex(offers[0]["sealed"]))
            except (ValueError, TypeError):
                refused[str(bidder)] = "a sealed bid the decider cannot open"
                continue
            opening = _open_content(box)
            if opening is None:
                refused[str(bidder)] = "a malformed sealed bid"
                continue
            task, named, plain, nonce = opening
            if task != ref.document_name or named != bidder.key:
                whose = _peer_of_key(named)
                refused[str(bidder)] = (
                    f"copies the sealed bid of {whose.short}"
                    if task == ref.document_name and whose is not None
                    else "a sealed bid made for another bidder or task"
                )
                continue
            offer = cbor2.loads(plain) if plain else None
            bid = _bid(ref, bidder, offer) if isinstance(offer, dict) else None
            if bid is None or set(ann.capabilities) - set(bid.capabilities):
                refused[str(bidder)] = "a malformed or unqualified sealed bid"
                continue
            opened[str(bidder)] = [plain.hex(), nonce.hex()]
            bids.append(dataclasses.replace(bid, digest=_digest(offers[0])))
        return bids, opened, refused

    def sealed_bids(self, ref: TaskRef) -> list[Bid]:
        """The sealed bids only the decider can read before the close (for it to look at)."""
        if self.me != self._require_view(ref).announcement.decider:
            raise NegotiationError("only the decider can open sealed bids")
        return self._open_sealed(ref)[0]

    def copied_sealed_bids(self, ref: TaskRef) -> dict[PeerId, PeerId]:
        """Sealed bids whose commitment is another bidder's (copier -> original).

        Any replica can tell, once the close opened the original: the commitment binds
        a bidder's key, so it verifies for the original and for nobody else.
        """
        return self._copies(ref, self._closed_openings(ref))


# -- the service on a mesh -----------------------------------------------------------------------


class TaskService:
    """``mesh.tasks``: task negotiation for a running mesh. Off unless ``P2P_ENABLED``
    and ``P2P_TASK_NEGOTIATION`` are on (or the mesh has no config).

    Events (on every replica, when the state arrives): ``p2p:task:announced`` (a
    :class:`TaskView`), ``p2p:task:bid:received`` (a :class:`Bid`, or the task's view
    for a sealed bid), ``p2p:task:assigned`` (a :class:`TaskView`).
    """

    def __init__(
        self,
        host: Host,
        config: TaskConfig | None = None,
        *,
        capabilities: Callable[[PeerId], Sequence[str]] | None = None,
        reputation: ReputationProvider | None = None,
    ) -> None:
        self._host = host
        self.config = config or TaskConfig()
        # membership, as the composition root hands it: what a peer declared it can do
        self._capabilities = capabilities or (lambda peer: ())
        self.board = TaskBoard(host.replica)
        if reputation is not None:
            self.board.reputation = reputation
        self._announced: set[TaskRef] = set()
        self._bids: set[tuple[TaskRef, PeerId]] = set()
        self._assigned: set[TaskRef] = set()
        self._changed: anyio.Event | None = None  # set on each commit that touches a task
        # Its events fire on every replica, from the first commit, while it is on.
        enabled = host.config is None or host.config.enables(Feature.TASK_NEGOTIATION)
        self._unsubscribe = host.replica.on_commit(self._on_commit) if enabled else _nothing

    def _require(self) -> None:
        if self._host.config is not None:
            self._host.config.require(Feature.TASK_NEGOTIATION)

    def set_reputation(self, provider: ReputationProvider) -> None:
        """Where the ``reputation`` criterion gets its scores (default: neutral 0.5)."""
        self.board.reputation = provider

    async def announce(
        self,
        name: str,
        requirements: Mapping[str, Any] | None = None,
        *,
        deadline: float | None = None,
        negotiation: NegotiationConfig | Mapping[str, Any] | None = None,
        mode: TaskCoordinationMode | None = None,
        coordinator: PeerId | None = None,
        parent: TaskRef | None = None,
    ) -> Announcement:
        """Announce a task (see :meth:`TaskBoard.announce`); defaults from ``config``."""
        self._require()
        return self.board.announce(
            name,
            requirements,
            deadline=deadline,
            negotiation=negotiation or self.config.negotiation_config,
            mode=mode or self.config.coordination_mode,
            coordinator=coordinator or self.config.coordinator,
            parent=parent,
        )

    async def bid(
        self,
        task: TaskRef | str,
        *,
        price: float,
        availability: float = 1.0,
        eta: float = 0.0,
        capabilities: Iterable[str] | None = None,
    ) -> Bid | None:
        """Bid on a task; capabilities default to this peer's published record."""
        self._require()
        if capabilities is None:
            capabilities = self._capabilities(self._host.replica.peer_id)
        return self.board.bid(
            task, price=price, availability=availability, eta=eta, capabilities=capabilities
        )

    async def collect_bids(self, task: TaskRef | str, timeout: float | None = None) -> list[Bid]:
        """Wait for ``min_bidders`` acceptable bids or the end of the bidding window."""
        self._require()
        ref = self.board.resolve(task)
        view = self.board._require_view(ref)
        ann = view.announcement
        sealed = ann.mode is TaskCoordinationMode.P2P_AUCTIONED
        ends = ann.bids_close_at if timeout is None else time.time() + timeout

        def bids() -> list[Bid]:
            if sealed and self.board.me == ann.decider:
                return self.board.sealed_bids(ref)
            current = self.board.view(ref)
            return list(current.bids) if current is not None else []

        while len(bids()) < ann.negotiation.min_bidders and time.time() < ends:
            if self._changed is None:
                self._changed = anyio.Event()
            with anyio.move_on_after(min(_POLL, max(0.0, ends - time.time()))):
                await self._changed.wait()
        return bids()

    async def select_bid(
        self, bids: Sequence[Bid] | TaskRef | str, criteria: Sequence[str] | None = None
    ) -> Bid | None:
        """Close bidding and award by the announced rules; the winning bid, or None
        (the task expired: fewer acceptable bids than ``min_bidders``).

        Raises:
            NegotiationError: criteria other than the announced ones, or not the decider.
        """
        self._require()
        if isinstance(bids, TaskRef | str):
            ref = self.board.resolve(bids)
        elif bids:
            ref = bids[0].task
        else:
            raise NegotiationError("no bids, and no task named: nothing to select from")
        ann = self.board._require_view(ref).announcement
        if criteria is not None and tuple(criteria) != ann.negotiation.selection_criteria:
            raise NegotiationError(
                f"the announced criteria are {list(ann.negotiation.selection_criteria)}: "
                "an award by others would fail every replica's audit"
            )
        view = self.board.close(ref)
        if view.award is None:
            return None
        return next(b for b in view.bids if b.bidder == view.award)

    async def accept(self, task: TaskRef | str) -> TaskView:
        self._require()
        return self.board.accept(self.board.resolve(task))

    async def report_progress(self, task: TaskRef | str, progress: Any) -> TaskView:
        self._require()
        return self.board.report_progress(self.board.resolve(task), progress)

    async def complete(self, task: TaskRef | str, output: Any = None) -> TaskView:
        self._require()
        return self.board.complete(self.board.resolve(task), output)

    async def fail(self, task: TaskRef | str, reason: str = "") -> TaskView:
        self._require()
        return self.board.fail(self.board.resolve(task), reason)

    async def conclude(self, task: TaskRef | str, state: TaskState, note: str = "") -> TaskView:
        self._require()
        return self.board.conclude(self.board.resolve(task), state, note)

    async def cancel(self, task: TaskRef | str) -> TaskView:
        self._require()
        return self.board.cancel(self.board.resolve(task))

    async def decompose(
        self, parent: TaskRef | str, subtasks: Mapping[str, Mapping[str, Any]], **options: Any
    ) -> list[Announcement]:
        """Split a task into subtasks, each negotiated on its own; the parent is
        complete when they all are. ``subtasks`` maps names to requirements."""
        self._require()
        parent_ref = self.board.resolve(parent)
        return [
            await self.announce(name, requirements, parent=parent_ref, **options)
            for name, requirements in subtasks.items()
        ]

    def view(self, task: TaskRef | str) -> TaskView:
        self._require()
        return self.board._require_view(self.board.resolve(task))

    def tasks(self) -> list[TaskView]:
        self._require()
        return [v for r in self.board.tasks() if (v := self.board.view(r)) is not None]

    # -- events --------------------------------------------------------------------------------

    def _on_commit(self, entries: list[Entry]) -> None:
        touched = {
            (ref, e.document.owner)
            for e in entries
            if (ref := TaskRef.from_document(e.document)) is not None and e.document.owner
        }
        if not touched:
            return
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        events = self._host.events
        for ref, author in sorted(touched, key=lambda t: (str(t[0]), t[1].key)):
            view = self.board.view(ref)
            if view is None:
                continue
            if ref not in self._announced:
                self._announced.add(ref)
                events.emit(P2PEvents.TASK_ANNOUNCED, view)
            new_bidder = author != ref.announcer and (ref, author) not in self._bids
            if new_bidder and self.board._offers(ref, author):
                self._bids.add((ref, author))
                bid = next((b for b in view.bids if b.bidder == author), None)
                events.emit(P2PEvents.BID_RECEIVED, bid or view)
            if view.award is not None and ref not in self._assigned:
                self._assigned.add(ref)
                events.emit(P2PEvents.TASK_ASSIGNED, view)
                # A copied sealed bid is proof of dishonesty that every replica can check.
                for copier, original in self.board.copied_sealed_bids(ref).items():
                    reason = f"copied the sealed bid of {original.short} on {ref}"
                    self._host.penalise(copier, Offence.DISHONEST, reason)

    def close(self) -> None:
        self._unsubscribe()


def _nothing() -> None:
    pass


# -- helpers --------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A value as the document will hold it (numbers as floats), or ValueError."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise NegotiationError("numbers in a task are finite")
        return number
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise NegotiationError("keys in a task are strings")
        return {k: _plain(v) for k, v in value.items()}
    raise NegotiationError(
        f"a task holds plain values (str, number, bool, list, dict), not {value!r}"
    )


def _encode(value: Any) -> bytes:
    return cbor2.dumps(_plain(value), canonical=True)


_SEALED_BID_DOMAIN = b"crdt_mesh/sealed-bid/v2\x00"
#: Sealed boxes are padded to the smallest of these sizes that fits (then to a
#: multiple of the largest), so their length says nothing of what they hold.
_PAD_BUCKETS = (256, 512, 1024, 2048, 4096)


def _commitment(ref: TaskRef, bidder: PeerId, plain: bytes, nonce: bytes) -> str:
    """The hash a sealed bid commits to: its offer, nonce, bidder and task. Binding the
    bidder and the task is what makes a copied commitment worthless to the copier."""
    bound = cbor2.dumps([ref.document_name, bidder.key, plain, nonce], canonical=True)
    return hashlib.blake2b(_SEALED_BID_DOMAIN + bound, digest_size=32).hexdigest()


def _seal_content(ref: TaskRef, bidder: PeerId, plain: bytes, nonce: bytes) -> bytes:
    """What goes in the sealed box: the task, the bidder, the offer and its nonce, padded."""
    content = cbor2.dumps([2, ref.document_name, bidder.key, plain, nonce], canonical=True)
    framed = len(content).to_bytes(4, "big") + content
    size = next((b for b in _PAD_BUCKETS if b >= len(framed)), None)
    if size is None:
        largest = _PAD_BUCKETS[-1]
        size = -(-len(framed) // largest) * largest
    return framed.ljust(size, b"\x00")


def _open_content(box: bytes) -> tuple[str, bytes, bytes, bytes] | None:
    """(task, bidder key, offer, nonce) of an opened box, or None if malformed."""
    try:
        length = int.from_bytes(box[:4], "big")
        version, task, bidder, plain, nonce = cbor2.loads(box[4 : 4 + length])
    except (ValueError, TypeError, cbor2.CBORDecodeError):
        return None
    if version != 2 or not isinstance(task, str):
        return None
    if not all(isinstance(v, bytes) for v in (bidder, plain, nonce)):
        return None
    return task, bidder, plain, nonce


def _opening_matches(ref: TaskRef, bidder: PeerId, opening: Any, commitment: str) -> bool:
    try:
        plain, nonce = bytes.fromhex(opening[0]), bytes.fromhex(opening[1])
    except (ValueError, TypeError, IndexError, KeyError):
        return False
    return _commitment(ref, bidder, plain, nonce) == commitment


def _peer_of_key(key: Any) -> PeerId | None:
    try:
        return PeerId(key)
    except (ValueError, TypeError):
        return None


def _digest(offer: Mapping[str, Any]) -> str:
    return hashlib.blake2b(_encode(offer), digest_size=16).hexdigest()


def _bid(ref: TaskRef, bidder: PeerId, offer: Any) -> Bid | None:
    if not isinstance(offer, dict):
        return None
    try:
        price, availability, eta = (float(offer[k]) for k in ("price", "availability", "eta"))
        caps = tuple(str(c) for c in offer.get("capabilities", []))
        at = float(offer.get("at", 0.0))
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(price) and price >= 0 and math.isfinite(eta) and eta >= 0):
        return None
    if not 0.0 <= availability <= 1.0:
        return None
    return Bid(ref, bidder, price, availability, eta, caps, at, _digest(offer))


def _peer(text: Any) -> PeerId | None:
    if not isinstance(text, str):
        return None
    try:
        return PeerId.parse(text)
    except ValueError:
        return None


__all__ = [
    "CRITERIA",
    "Announcement",
    "Bid",
    "NegotiationConfig",
    "RejectedBid",
    "TaskBoard",
    "TaskConfig",
    "TaskRef",
    "TaskService",
    "TaskState",
    "TaskView",
    "neutral_reputation",
    "select",
]
