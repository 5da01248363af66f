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

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio

from ...arguments import number
from ...config import Feature
from ...identity import PeerId
from ...ledger import Entry
from ...metrics import Kind, Metrics
from ...runtime.host import Host
from ...runtime.penalty import Offence
from .board import MAX_FOLLOWED, TaskBoard
from .model import (
    Announcement,
    Bid,
    NegotiationConfig,
    NegotiationError,
    ReputationProvider,
    ReputationSource,
    TaskConfig,
    TaskCoordinationMode,
    TaskEvents,
    TaskRef,
    TaskState,
    TaskView,
)

#: The channel of a private task's courier: a frame to the announcer, which dials a
#: link for it if there is none; that link's one round of anti-entropy carries
#: what the two may exchange (a bid: readable by the announcer, by no peer on the
#: way). Empty: a bid's courier; ``f`` and a task's name: "let me follow it".
COURIER = b"T"
_FOLLOW = b"f"
_MAX_NAME_BYTES = 1024

#: How long collect_bids polls between looks at the replica (it also wakes on commits).
_POLL = 0.05


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
        host.events.register(*TaskEvents)
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
        self._unroute = host.on_ephemeral(COURIER, self._receive_courier) if enabled else _nothing
        self._following: set[TaskRef] = set()  # followed private tasks not closed yet

    def _require(self) -> None:
        if self._host.config is not None:
            self._host.config.require(Feature.TASK_NEGOTIATION)

    def set_reputation(self, provider: ReputationProvider | ReputationSource) -> None:
        """Where the ``reputation`` criterion gets its scores (default: neutral 0.5): a
        function of the peer, or a source whose evidence the close pins and every
        replica audits (``mesh.reputation`` is one)."""
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
            reach=[self._host.address] if self._host.address else [],
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
        ref = self.board.resolve(task)
        bid = self.board.bid(
            ref, price=price, availability=availability, eta=eta, capabilities=capabilities
        )
        ann = self.board._require_view(ref).announcement
        if ann.negotiation.private_bids and ref.announcer not in self._host.peers:
            # no peer on the way may read it: a link to the announcer carries it
            self._host.send_ephemeral(COURIER, ref.announcer, b"", ann.reach)
        return bid

    def follow(self, task: TaskRef | str) -> None:
        """Audit a private task by choice: ask its announcer to offer this replica
        every bid and the details of the close (open bids reach every replica anyway:
        nothing to do). Asked again when the close arrives, so that the details come
        too; ``view(task).audited`` then says whether the audit could run.

        Raises:
            NegotiationError: unknown task, or this replica follows 1,024 open tasks
                already.
        """
        self._require()
        ref = self.board.resolve(task)
        view = self.board._require_view(ref)
        if not view.announcement.negotiation.private_bids or ref.announcer == self.board.me:
            return
        if not view.closed:  # (closed: this one ask brings the details too)
            if ref not in self._following and len(self._following) >= MAX_FOLLOWED:
                raise NegotiationError(f"this replica follows {MAX_FOLLOWED} open tasks already")
            self._following.add(ref)
        self._ask_to_follow(ref)

    @property
    def following(self) -> frozenset[TaskRef]:
        """The private tasks this replica follows whose close has not arrived yet."""
        return frozenset(self._following)

    def _ask_to_follow(self, ref: TaskRef) -> None:
        reach = self.board._require_view(ref).announcement.reach
        self._host.send_ephemeral(COURIER, ref.announcer, _FOLLOW + ref.name.encode(), reach)

    def _receive_courier(self, sender: PeerId, data: bytes) -> None:
        """A courier's frame: the link it came on does the work; a follower is let in."""
        if not data:
            return
        try:
            if data[:1] != _FOLLOW or len(data) > 1 + _MAX_NAME_BYTES:
                raise ValueError("not a courier frame")
            ref = TaskRef(self.board.me, data[1:].decode())
            ref.section(self.board.me)  # a name no document may have: InvalidDocumentId
        except ValueError:  # (InvalidDocumentId is one)
            self._host.penalise(sender, Offence.JUNK, "a malformed courier frame")
            return
        self.board.admit_follower(ref, sender)

    async def collect_bids(
        self, task: TaskRef | str, timeout: float | None = None, *, whole_window: bool = False
    ) -> list[Bid]:
        """The acceptable bids, once there are ``min_bidders`` of them or the bidding
        window (or ``timeout`` seconds) is over, whichever comes first.

        With the default ``min_bidders`` of 1 that is the first bid. Pass
        ``whole_window=True`` to wait for the end of the window (or ``timeout``)
        whatever comes in before.

        Raises:
            NegotiationError: unknown task, or ``timeout`` not a number >= 0.
        """
        self._require()
        if timeout is not None:
            timeout = number("timeout", timeout, low=0, error=NegotiationError)
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

        enough = math.inf if whole_window else ann.negotiation.min_bidders
        while len(bids()) < enough and time.time() < ends:
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

        Given a task, it selects among every acceptable bid this replica holds. Given
        bids (of one task), it selects among those alone: the close lists the other
        acceptable bids as refused ("not among the bids selected from"), on every
        replica.

        Raises:
            NegotiationError: criteria other than the announced ones, not the decider,
                no bids, bids of several tasks, or a bid this replica does not hold
                as acceptable.
        """
        self._require()
        given: list[Bid] | None = None
        if isinstance(bids, TaskRef | str):
            ref = self.board.resolve(bids)
        else:
            given = list(bids)
            if not given or not all(isinstance(b, Bid) for b in given):
                raise NegotiationError("bids: a task, or a non-empty list of its Bids")
            ref = given[0].task
            if any(b.task != ref for b in given):
                raise NegotiationError("bids: all of one task")
        ann = self.board._require_view(ref).announcement
        if criteria is not None and tuple(criteria) != ann.negotiation.selection_criteria:
            raise NegotiationError(
                f"the announced criteria are {list(ann.negotiation.selection_criteria)}: "
                "an award by others would fail every replica's audit"
            )
        among: list[PeerId] | None = None
        if given is not None:
            sealed = ann.mode is TaskCoordinationMode.P2P_AUCTIONED
            acceptable = (
                self.board.sealed_bids(ref) if sealed else self.board._require_view(ref).bids
            )
            held = {b.bidder: b for b in acceptable}
            for bid in given:
                if held.get(bid.bidder) != bid:
                    raise NegotiationError(
                        f"bids: this replica holds no such acceptable bid of {bid.bidder.short}"
                    )
            among = [b.bidder for b in given]
        view = self.board.close(ref, among=among)
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
                events.emit(TaskEvents.ANNOUNCED, view)
            new_bidder = author != ref.announcer and (ref, author) not in self._bids
            if new_bidder and self.board._offers(ref, author):
                self._bids.add((ref, author))
                bid = next((b for b in view.bids if b.bidder == author), None)
                events.emit(TaskEvents.BID_RECEIVED, bid or view)
            if view.closed and ref in self._following:
                self._following.discard(ref)
                self._ask_to_follow(ref)  # a round now brings the details of the close
            if view.award is not None and ref not in self._assigned:
                self._assigned.add(ref)
                events.emit(TaskEvents.ASSIGNED, view)
                # A copied sealed bid is proof of dishonesty that every replica can check.
                for copier, original in self.board.copied_sealed_bids(ref).items():
                    reason = f"copied the sealed bid of {original.short} on {ref}"
                    self._host.penalise(copier, Offence.DISHONEST, reason)

    def declare_metrics(self, metrics: Metrics) -> None:
        """Declare task metrics in ``metrics`` (read from the board when collected)."""
        config = self._host.config
        on = config is None or config.enables(Feature.TASK_NEGOTIATION)

        def views() -> list[TaskView]:
            return self.tasks() if on and not self._host.replica.closed else []

        def by_state() -> list[tuple[tuple[str], float]]:
            counts = dict.fromkeys(TaskState, 0)
            for view in views():
                counts[view.state] += 1
            return [((state.value,), n) for state, n in counts.items()]

        metrics.observe(
            "crdt_mesh_tasks",
            "Tasks this replica holds, by state.",
            Kind.GAUGE,
            by_state,
            ("state",),
        )
        metrics.observe(
            "crdt_mesh_task_bids_total",
            "Bidders seen bidding on tasks this replica holds (one per task and bidder).",
            Kind.COUNTER,
            lambda: len(self._bids),
        )
        metrics.observe(
            "crdt_mesh_task_audits_failed",
            "Tasks audited here whose award or close does not follow from the rules.",
            Kind.GAUGE,
            lambda: sum(1 for v in views() if v.audited and not v.audit_ok),
        )

    def close(self) -> None:
        self._unsubscribe()
        self._unroute()
        self.board.detach()


def _nothing() -> None:
    pass
