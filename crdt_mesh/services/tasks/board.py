"""The task board: task negotiation's commands and views over one replica.

Synchronous, with the clock injected: the same logic whether a mesh runs it or a
test drives it. Commands check the rules before they write (a
:class:`NegotiationError`, nothing written); views are pure functions of the
sections the replica holds (and of the time given).

Why one module (~700 lines): the commands and the view read the same
sections with the same helpers (the view is what every command checks before
it writes); the pure parts (selection, sealed-bid crypto, codecs) are already
in :mod:`.rules` and :mod:`.model`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import cbor2

from ...arguments import number, of_type, strings
from ...errors import ArgumentTypeError
from ...identity import PeerId
from ...ledger import DocumentId
from ...replica.index import DocumentIndex
from .model import (
    FINAL,
    MAX_REACH,
    OFFERS_PREFIX,
    Announcement,
    Bid,
    NegotiationConfig,
    NegotiationError,
    Parties,
    RejectedBid,
    ReputationProvider,
    ReputationSource,
    TaskCoordinationMode,
    TaskRef,
    TaskState,
    TaskView,
)
from .rules import (
    LEFT_OUT,
    check_requirements,
    clamp_score,
    close_digest,
    encode_value,
    may_read_offers,
    neutral_reputation,
    offer_digest,
    open_content,
    opening_matches,
    parse_bid,
    parse_peer,
    peer_of_key,
    plain_value,
    seal_content,
    sealed_commitment,
    select,
)

if TYPE_CHECKING:
    from ...replica.replica import Replica

_ROOT = "task"
_BIDS = "bids"
#: Peers that may follow one private task by asking its announcer, and the tasks
#: whose followers an announcer remembers (the least recently asked go first).
MAX_FOLLOWERS = 64
MAX_FOLLOWED = 1024


class TaskBoard:
    """Task negotiation over one replica, synchronously (no I/O, the clock passed in).

    :class:`TaskService` (``mesh.tasks``) wraps it for a running mesh.
    """

    def __init__(
        self,
        replica: Replica,
        *,
        reputation: ReputationProvider | ReputationSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.replica = replica
        self.reputation = reputation or neutral_reputation
        self._checking = False  # checking a close's reputation evidence
        self.clock = clock
        # the task sections this replica holds, kept up to date as entries commit
        self._documents = DocumentIndex(replica, TaskRef.from_document)
        self._indexed_at = -1  # the index version the sections below were built from
        self._sections: dict[TaskRef, list[PeerId]] = {}
        self._parents_at = -1
        self._memo: dict[DocumentId, dict[str, Any]] | None = None
        self._children: dict[TaskRef, list[TaskRef]] = {}
        # announcements read by the read policy, per replica version
        self._policy_cache: tuple[int, dict[TaskRef, Announcement | None]] = (-1, {})
        # private tasks this replica announced -> the peers that asked to follow them
        self._followers: OrderedDict[TaskRef, set[PeerId]] = OrderedDict()
        self._remove_policy = replica.add_read_policy(self._offered)

    def detach(self) -> None:
        """Stop reading the replica: the index of sections and the read policy go."""
        self._remove_policy()
        self._documents.close()

    def _offered(self, document: DocumentId, peer: PeerId) -> bool | None:
        """The read policy of offers documents (:func:`may_read_offers`); None, at
        once, for any other document."""
        if not document.name.startswith(OFFERS_PREFIX):
            return None
        ref = TaskRef.from_offers(document)
        if ref is None:
            return None
        version, announcements = self._policy_cache
        if version != self.replica.version:
            announcements = {}
            self._policy_cache = (self.replica.version, announcements)
        if ref not in announcements:
            announcements[ref] = self._announcement(ref)
        return may_read_offers(
            document, peer, announcements[ref], self._followers.get(ref, frozenset())
        )

    def admit_follower(self, ref: TaskRef, peer: PeerId) -> bool:
        """Let ``peer`` read every offers document of ``ref``, a private task this
        replica announced (a peer that audits it by choice; at most
        :data:`MAX_FOLLOWERS` per task, for the :data:`MAX_FOLLOWED` tasks followed
        last). False, and nothing changes, for another task or past the cap."""
        announcement = self._announcement(ref)
        if (
            announcement is None
            or ref.announcer != self.me
            or not announcement.negotiation.private_bids
        ):
            return False
        followers = self._followers.get(ref)
        if followers is None:
            followers = self._followers[ref] = set()
            while len(self._followers) > MAX_FOLLOWED:
                self._followers.popitem(last=False)
        self._followers.move_to_end(ref)
        if peer in followers:
            return True
        if len(followers) >= MAX_FOLLOWERS:
            return False
        followers.add(peer)
        self.replica.policy_changed()  # the peer is offered the bids from now on
        return True

    def _index(self) -> dict[TaskRef, list[PeerId]]:
        """Task -> the authors of its sections (rebuilt only when sections appear)."""
        if self._documents.version != self._indexed_at:
            sections = {
                ref: sorted({d.owner for d in docs if d.owner is not None}, key=lambda p: p.key)
                for ref, docs in self._documents.items()
            }
            self._sections, self._indexed_at = sections, self._documents.version
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
        reach: Iterable[str] = (),
    ) -> Announcement:
        """Announce a task (a call for proposals); returns the announcement.

        ``reach``: addresses this peer listens on, where bidders carry private bids.

        Raises:
            NegotiationError (a ValueError): the name is taken or malformed, the
                deadline has passed, a coordinated mode has no coordinator, the parent
                is not one this peer may split, or the requirements or negotiation
                settings are malformed.
        """
        if not isinstance(name, str):
            raise ArgumentTypeError(f"name: a task name is a str, not {name!r}")
        if not name or ":" in name:
            raise NegotiationError(f"name: a task name is non-empty, without ':', not {name!r}")
        if negotiation is not None and not isinstance(negotiation, NegotiationConfig | Mapping):
            raise ArgumentTypeError(
                f"negotiation: a NegotiationConfig or a mapping of its fields, not {negotiation!r}"
            )
        config = (
            negotiation
            if isinstance(negotiation, NegotiationConfig)
            else NegotiationConfig.from_mapping(negotiation)
        )
        try:
            mode = TaskCoordinationMode(mode)
        except ValueError:
            known = [m.value for m in TaskCoordinationMode]
            raise NegotiationError(f"mode: one of {known}, not {mode!r}") from None
        if deadline is not None:
            deadline = number("deadline", deadline, error=NegotiationError)
        if coordinator is not None:
            of_type("coordinator", coordinator, PeerId, "a PeerId or None")
        if parent is not None:
            of_type("parent", parent, TaskRef, "a TaskRef or None")
        coordinated = mode in (TaskCoordinationMode.CENTRALIZED, TaskCoordinationMode.HYBRID)
        if coordinated and coordinator is None:
            raise NegotiationError(f"{mode.value} needs a coordinator peer")
        ref = TaskRef(self.me, name)
        if self._announcement(ref) is not None:
            raise NegotiationError(f"task {name!r} was announced already")
        requirements = check_requirements(requirements)
        addresses = strings("reach", reach)
        if len(addresses) > MAX_REACH or any(len(a) > 256 for a in addresses):
            raise NegotiationError(f"reach: at most {MAX_REACH} addresses of 256 characters")
        now = self.clock()
        deadline = now + config.announcement_ttl if deadline is None else deadline
        if deadline <= now:
            raise NegotiationError(f"deadline: {deadline} has passed already")
        if parent is not None:
            view = self.view(parent)
            if view is None:
                raise NegotiationError(f"unknown parent task {parent}")
            if self.me not in (parent.announcer, view.award):
                raise NegotiationError("only a task's announcer or its winner may split it")
        record = {
            "name": name,
            "requirements": requirements,
            "deadline": deadline,
            "negotiation": {
                "bid_timeout": config.bid_timeout,
                "min_bidders": config.min_bidders,
                "selection_criteria": list(config.selection_criteria),
                "announcement_ttl": config.announcement_ttl,
                "private_bids": config.private_bids,
                "auditors": [str(a) for a in config.auditors],
            },
            "mode": mode.value,
            "coordinator": str(coordinator) if coordinator is not None else None,
            "parent": [str(parent.announcer), parent.name] if parent is not None else None,
            "announced_at": now,
            "reach": list(addresses),
        }
        document = self.replica.document(ref.section(self.me))
        with document.transaction():
            document.map(_ROOT)["announcement"] = record
        announcement = self._announcement(ref)
        assert announcement is not None
        return announcement

    def close(self, ref: TaskRef, among: Iterable[PeerId] | None = None) -> TaskView:
        """Close bidding and award by the rules (one entry): the decider's call.

        ``among`` names the bidders to select from (default: every acceptable bid);
        the close lists the others as refused, so every replica sees that they were
        left out and why. When the criteria include reputation, the close pins the
        score this replica's provider gave each bidder: every replica audits the
        award against the same scores. With fewer acceptable bids than
        ``min_bidders`` the task expires instead.

        Raises:
            NegotiationError: not the decider, unknown task, closed already, or
                ``among`` empty or naming a bidder with no acceptable bid here.
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
        acceptable = len(bids)  # min_bidders counts the bids received, chosen or not
        if among is not None:
            chosen = set(among)
            if not chosen:
                raise NegotiationError("select among at least one bid (None: all of them)")
            unknown = chosen - {b.bidder for b in bids}
            if unknown:
                names = ", ".join(sorted(p.short for p in unknown))
                raise NegotiationError(f"this replica holds no acceptable bid of {names} on {ref}")
            for bid in bids:
                if bid.bidder not in chosen:
                    refused[str(bid.bidder)] = LEFT_OUT
            bids = [b for b in bids if b.bidder in chosen]
        criteria = ann.negotiation.selection_criteria
        at = self.clock()
        source = self.reputation if isinstance(self.reputation, ReputationSource) else None
        scores: dict[str, float] = {}
        if "reputation" in criteria:
            for b in bids:
                if source is not None:
                    given = source.score(b.bidder, at)
                else:
                    assert callable(self.reputation)
                    given = self.reputation(b.bidder)
                scores[str(b.bidder)] = clamp_score(given)
        close: dict[str, Any] = {
            "bidders": {str(b.bidder): b.digest for b in bids},
            "opened": opened,
            "refused": refused,
            "scores": scores,
            "at": at,
        }
        if source is not None and "reputation" in criteria:
            close["evidence"] = dict(source.evidence([b.bidder for b in bids], at))
        winner = select(bids, criteria, lambda peer: scores[str(peer)])
        if ann.negotiation.private_bids:
            # the details go where only parties and auditors read; everyone gets a
            # close of fixed size that binds them
            kept = self.replica.document(ref.offers(self.me))
            with kept.transaction():
                kept.map(_ROOT)["close"] = close
            stored = dict(kept.map(_ROOT).to_py() or {})["close"]
            close = {"private": True, "count": len(bids), "digest": close_digest(stored), "at": at}
        document = self.replica.document(ref.section(self.me))
        with document.transaction():
            root = document.map(_ROOT)
            root["close"] = close
            if winner is not None and acceptable >= ann.negotiation.min_bidders:
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
        price = number("price", price, low=0, error=NegotiationError)
        availability = number("availability", availability, low=0, high=1, error=NegotiationError)
        eta = number("eta", eta, low=0, error=NegotiationError)
        caps = strings("capabilities", capabilities)
        ref = self.resolve(ref)
        view = self._require_view(ref)
        ann = view.announcement
        now = self.clock()
        if self.me == ref.announcer:
            raise NegotiationError("the announcer does not bid on its own task")
        if now > ann.bids_close_at or now > ann.deadline:
            raise NegotiationError(f"the bidding window of {ref} has passed")
        if view.closed or view.state in FINAL:
            raise NegotiationError(f"bidding on {ref} is closed")
        missing = sorted(set(ann.capabilities) - set(caps))
        if missing:
            raise NegotiationError(f"missing capabilities: {', '.join(missing)}")
        section = self.replica.document(ref.offers(self.me))
        existing = section.array(_BIDS).to_py() or []
        if existing and not self._offers_root(ref, self.me).get("withdrawn"):
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
            plain = encode_value(offer)
            entry = {
                "sealed": ann.decider.seal(seal_content(ref, self.me, plain, nonce)).hex(),
                "commitment": sealed_commitment(ref, self.me, plain, nonce),
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
        document = self.replica.document(ref.offers(self.me))
        if not document.array(_BIDS).to_py():
            raise NegotiationError(f"no bid on {ref} to withdraw")
        with document.transaction():
            document.map(_ROOT)["withdrawn"] = self.clock()

    def accept(self, ref: TaskRef) -> TaskView:
        """The winner accepts the award."""
        return self._winner_writes(ref, "accepted", self.clock(), after=TaskState.AWARDED)

    def report_progress(self, ref: TaskRef, progress: Any) -> TaskView:
        """The winner reports progress (any plain value) once it has accepted."""
        return self._winner_writes(ref, "progress", plain_value(progress), after=TaskState.ACCEPTED)

    def complete(self, ref: TaskRef, output: Any = None) -> TaskView:
        result = {
            "status": TaskState.COMPLETED.value,
            "output": plain_value(output),
            "at": self.clock(),
        }
        return self._winner_writes(ref, "result", result, after=TaskState.ACCEPTED)

    def fail(self, ref: TaskRef, reason: str = "") -> TaskView:
        result = {"status": TaskState.FAILED.value, "output": reason, "at": self.clock()}
        return self._winner_writes(ref, "result", result, after=TaskState.ACCEPTED)

    def _winner_writes(self, ref: TaskRef, key: str, value: Any, *, after: TaskState) -> TaskView:
        view = self._require_view(ref)
        if view.award != self.me:
            raise NegotiationError(f"{ref} was not awarded to this peer")
        if view.awaiting:
            names = ", ".join(peer.short for peer in view.awaiting)
            raise NegotiationError(
                f"the award of {ref} cannot be audited here yet: the bids of {names} it was"
                " made on have not arrived"
            )
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

    # -- records other services keep on a task (reputation's outcomes and ratings) -----------

    #: Keys of a section that other services write (task negotiation never reads them).
    ANNOTATIONS = frozenset({"outcome", "ratings", "challenges", "votes"})

    def annotate(self, ref: TaskRef, key: str, value: Any) -> None:
        """Write ``value`` under ``key`` (one of :data:`ANNOTATIONS`) in this peer's
        section of ``ref``: records about a task live beside it, signed by their author.

        Raises:
            NegotiationError: not one of the keys other services may write.
        """
        if key not in self.ANNOTATIONS:
            raise NegotiationError(f"{key!r} is not a key other services write on a task")
        document = self.replica.document(ref.section(self.me))
        with document.transaction():
            document.map(_ROOT)[key] = value

    def parties(self, ref: TaskRef) -> Parties | None:
        """Who ``ref`` involved, as this replica's view says (None: unknown task)."""
        if not isinstance(ref, TaskRef):
            return None
        view = self.view(ref)
        if view is None:
            return None
        ann = view.announcement
        # an award the rules account for (not one whose bids are still awaited)
        winner = view.award if view.audit_ok and not view.awaiting else None
        return Parties(ref.document_name, ref.announcer, ann.decider, winner, ann.capabilities)

    @staticmethod
    def concerns(document: DocumentId) -> bool:
        """Whether ``document`` is a section of a task."""
        return TaskRef.from_document(document) is not None

    def annotations(self, ref: TaskRef, key: str) -> dict[PeerId, Any]:
        """What each participant of ``ref`` wrote under ``key`` (one of
        :data:`ANNOTATIONS`), as this replica holds it."""
        out = {}
        for author in self._participants(ref):
            section = self._section(ref, author)
            if key in section:
                out[author] = section[key]
        return out

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
        if not isinstance(ref, str):
            raise ArgumentTypeError(f"task: a TaskRef or a task's name, not {ref!r}")
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
        details = self._close_details(ref, ann, close, problems)  # None: not ours to check
        pinned: dict[str, str] = {}
        opened: dict[str, Any] = {}
        refused: dict[str, Any] = {}
        if details is not None:
            pinned = {str(k): str(v) for k, v in dict(details.get("bidders") or {}).items()}
            opened = dict(details.get("opened") or {})
            refused = dict(details.get("refused") or {})
        copies = self._copies(ref, opened) if opened else {}
        candidates: list[Bid] = []
        left_out = 0
        sealed_waiting = 0
        for bidder in self._participants(ref):
            if bidder in (ref.announcer,):
                continue
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
                    elif details is None:
                        pass  # closed in private: this replica cannot check it
                    elif str(bidder) in refused and str(bidder) not in pinned:
                        reason = str(refused[str(bidder)])[:200]
                        rejected.append(RejectedBid(bidder, f"refused by the decider: {reason}"))
                    elif str(bidder) not in pinned:
                        rejected.append(RejectedBid(bidder, "bid after the close"))
                    elif str(bidder) not in opened:
                        problems.append(f"closed on the sealed bid of {bidder.short} unopened")
                    continue
            else:
                bid = parse_bid(ref, bidder, first)
                if bid is None:
                    rejected.append(RejectedBid(bidder, "malformed bid"))
                    continue
            missing = sorted(set(ann.capabilities) - set(bid.capabilities))
            if missing:
                rejected.append(RejectedBid(bidder, f"missing capabilities: {', '.join(missing)}"))
                continue
            withdrawn = self._offers_root(ref, bidder).get("withdrawn")
            if details is not None:
                if str(bidder) in refused and str(bidder) not in pinned:
                    reason = str(refused[str(bidder)])[:200]
                    rejected.append(RejectedBid(bidder, f"refused by the decider: {reason}"))
                    left_out += reason == LEFT_OUT  # acceptable, and held here: it counts
                    continue
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
        awaiting: list[PeerId] = []  # pinned bids not here yet: the audit waits for them
        for bidder_text in missing_bids:
            awaited = parse_peer(bidder_text)
            if awaited is None:  # no bid can ever come from it
                problems.append(f"the close pins a bid of {bidder_text[:12]!r}, not a peer id")
            else:
                awaiting.append(awaited)
        expected: PeerId | None = None
        enough = len(candidates) + left_out >= ann.negotiation.min_bidders
        scores = self._pinned_scores(details, ann, candidates, problems)
        if scores is not None and details is not None and "evidence" in details:
            problems += self._check_evidence(details, candidates, scores)
        if details is not None and not missing_bids and enough and scores is not None:
            chosen = select(candidates, ann.negotiation.selection_criteria, scores)
            expected = chosen.bidder if chosen is not None else None
        award = parse_peer(dict(decider.get("award") or {}).get("winner"))
        if award is not None:
            if close is None:
                problems.append("an award without a close")
            elif details is not None and not missing_bids and award != expected:
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
            audited=(close is None or details is not None) and not awaiting,
            awaiting=tuple(awaiting),
        )

    def _close_details(
        self,
        ref: TaskRef,
        ann: Announcement,
        close: Mapping[str, Any] | None,
        problems: list[str],
    ) -> Mapping[str, Any] | None:
        """What the close lists (bids, openings, refusals, scores): the close itself,
        or for private bids the details the decider keeps in its offers document,
        checked against the digest the close published (None: not held here)."""
        if close is None or not close.get("private"):
            return close
        details = self._offers_root(ref, ann.decider).get("close")
        if not isinstance(details, dict):
            return None
        if close_digest(details) != close.get("digest"):
            problems.append("the close's details differ from the digest it published")
        return details

    @staticmethod
    def _pinned_scores(
        close: Mapping[str, Any] | None,
        ann: Announcement,
        candidates: list[Bid],
        problems: list[str],
    ) -> ReputationProvider | None:
        """The reputation the close pinned for each candidate (None: not auditable)."""
        if close is None or "reputation" not in ann.negotiation.selection_criteria:
            return neutral_reputation
        pinned = close.get("scores")
        pinned = dict(pinned) if isinstance(pinned, Mapping) else {}
        scores: dict[PeerId, float] = {}
        for bid in candidates:
            score = pinned.get(str(bid.bidder))
            if not isinstance(score, int | float) or not 0.0 <= float(score) <= 1.0:
                problems.append(f"the close pins no valid reputation of {bid.bidder.short}")
                return None
            scores[bid.bidder] = float(score)
        return lambda peer: scores[peer]

    def _check_evidence(
        self, close: Mapping[str, Any], candidates: list[Bid], scores: ReputationProvider
    ) -> list[str]:
        """Whether each pinned score follows from the evidence the close pinned, as this
        replica's reputation source judges (no source here: nothing to say)."""
        source = self.reputation if isinstance(self.reputation, ReputationSource) else None
        evidence = close.get("evidence")
        if source is None or not isinstance(evidence, Mapping) or self._checking:
            return []  # (the source reads task views to check: those skip the check)
        found = []
        self._checking = True
        try:
            for bid in candidates:
                problem = source.check(evidence, bid.bidder, scores(bid.bidder))
                if problem is not None:
                    found.append(problem)
        finally:
            self._checking = False
        return found

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
        return self._root(ref.section(author))

    def _offers_root(self, ref: TaskRef, author: PeerId) -> dict[str, Any]:
        """The root of ``author``'s offers document: its withdrawal; the decider's: the
        details of a private close."""
        return self._root(ref.offers(author))

    def _root(self, doc_id: DocumentId) -> dict[str, Any]:
        if self._memo is not None and doc_id in self._memo:
            return self._memo[doc_id]
        root: dict[str, Any] = {}
        if self.replica.has_document(doc_id):
            root = dict(self.replica.document(doc_id).map(_ROOT).to_py() or {})
        if self._memo is not None:
            self._memo[doc_id] = root
        return root

    def _offers(self, ref: TaskRef, author: PeerId) -> list[dict[str, Any]]:
        doc_id = ref.offers(author)
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
                coordinator=parse_peer(record.get("coordinator")),
                parent=TaskRef(PeerId.parse(parent[0]), str(parent[1])) if parent else None,
                announced_at=float(record["announced_at"]),
                reach=_reach(record.get("reach")),
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
            if sealed_commitment(ref, bidder, plain, nonce) != sealed.get("commitment"):
                problems.append(f"the opened bid of {bidder.short} does not match its sealed bid")
                return None
            offer = cbor2.loads(plain)
        except (ValueError, TypeError, IndexError, cbor2.CBORDecodeError):
            problems.append(f"the opened bid of {bidder.short} is malformed")
            return None
        bid = parse_bid(ref, bidder, offer)
        if bid is None:
            problems.append(f"the opened bid of {bidder.short} is malformed")
            return None
        return dataclasses.replace(bid, digest=offer_digest(sealed))

    def _closed_openings(self, ref: TaskRef) -> dict[str, Any]:
        ann = self._announcement(ref)
        if ann is None:
            return {}
        close = self._section(ref, ann.decider).get("close")
        if not isinstance(close, dict):
            return {}
        details = self._close_details(ref, ann, close, [])
        return dict(details.get("opened") or {}) if details is not None else {}

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
                b for b in bidders if opening_matches(ref, b, opened.get(str(b)), commitment)
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
            if self._offers_root(ref, bidder).get("withdrawn") is not None:
                continue
            try:
                box = identity.unseal(bytes.fromhex(offers[0]["sealed"]))
            except (ValueError, TypeError):
                refused[str(bidder)] = "a sealed bid the decider cannot open"
                continue
            opening = open_content(box)
            if opening is None:
                refused[str(bidder)] = "a malformed sealed bid"
                continue
            task, named, plain, nonce = opening
            if task != ref.document_name or named != bidder.key:
                whose = peer_of_key(named)
                refused[str(bidder)] = (
                    f"copies the sealed bid of {whose.short}"
                    if task == ref.document_name and whose is not None
                    else "a sealed bid made for another bidder or task"
                )
                continue
            offer = cbor2.loads(plain) if plain else None
            bid = parse_bid(ref, bidder, offer) if isinstance(offer, dict) else None
            if bid is None or set(ann.capabilities) - set(bid.capabilities):
                refused[str(bidder)] = "a malformed or unqualified sealed bid"
                continue
            opened[str(bidder)] = [plain.hex(), nonce.hex()]
            bids.append(dataclasses.replace(bid, digest=offer_digest(offers[0])))
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


def _reach(stored: Any) -> tuple[str, ...]:
    """The addresses an announcement gives, as far as they are well formed."""
    if not isinstance(stored, list):
        return ()
    return tuple(a for a in stored[:MAX_REACH] if isinstance(a, str) and 0 < len(a) <= 256)
