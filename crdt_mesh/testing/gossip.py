"""A simulated network for the gossip cores: failure detection and broadcast at scale.

Every member runs the real sans-IO cores (:class:`~crdt_mesh.swim.FailureDetector`
and :class:`~crdt_mesh.epidemic.Broadcaster`, real signatures included); only
the network and the clock are simulated: frames take a few virtual
milliseconds, can be lost (everywhere, or on one member's links), and members
can crash, restart and leave. Time is virtual, so a run of a thousand members
over a hundred protocol periods takes as long as its CPU work, and one seed
replays it exactly.

Members start knowing each other (the steady state a mesh reaches once the
peer records have spread; the replicated records themselves are exercised by
:class:`~crdt_mesh.testing.SimulatedMesh`). Broadcast runs in rounds: every
``period`` the frames sent in the last round arrive and all members push their
active messages at once, so the round in which a member first delivers a
message is the number of gossip rounds it took to get there.

    sim = SimulatedGossip(100, seed=1)
    sim.crash(7)
    sim.run_until(lambda: sim.declared_lost_by_all(7), timeout=60)
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ..identity import Identity, PeerId
from ..services.gossip.epidemic import Broadcaster, GossipMessage
from ..services.gossip.rules import sample_distinct
from ..services.gossip.swim import FailureDetector, MemberChange, Status, SwimSettings, seed_members

_DELIVER, _TICK, _ROUND = 0, 1, 2


@dataclass(slots=True)
class _Member:
    index: int
    identity: Identity
    detector: FailureDetector | None = None
    broadcaster: Broadcaster | None = None
    up: bool = True
    left: bool = False
    link_loss: float = 0.0
    tick_at: float = float("inf")
    delivered: Counter[bytes] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Reach:
    """How far a broadcast got: members reached, and the rounds it took."""

    reached: int
    members: int
    rounds_to_99: int | None
    rounds_to_all: int | None
    duplicates: int  # deliveries beyond the first at any member (must be 0)
    #: members reached by the end of each round (from the broadcast's round 0 on)
    by_round: tuple[int, ...] = ()

    @property
    def fraction(self) -> float:
        return self.reached / self.members if self.members else 1.0


class SimulatedGossip:
    """``size`` members on a simulated network. See the module doc.

    Args:
        size: number of members.
        seed: drives every random choice.
        loss: chance that any frame is lost.
        latency: a frame's base delay (virtual seconds; each takes up to twice it).
        settings: SWIM/Lifeguard timings and counts (the period is also the
            broadcast round).
        broadcast_rounds: push rounds per broadcast (None: chosen from the size).
        overlay: links each member dials at the start (None: no overlay, every member
            probes and pushes to any other, plain SWIM). With it, members run as a
            mesh does (HyParView's active view): they probe, ask for indirect probes
            and push broadcasts to the members they are linked to only, links being
            symmetric (so a member has ``overlay`` links or a few more).
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        loss: float = 0.0,
        latency: float = 0.005,
        settings: SwimSettings | None = None,
        broadcast_rounds: int | None = None,
        overlay: int | None = None,
    ) -> None:
        if size < 2:
            raise ValueError("a simulated mesh has at least two members")
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss is a probability in [0, 1)")
        self.rng = random.Random(seed)
        self.loss = loss
        self.latency = latency
        self.settings = settings or SwimSettings()
        self.broadcast_rounds = broadcast_rounds
        self.now = 0.0
        self.round = 0
        self._events: list[tuple[float, int, int, int, int, bytes]] = []
        self._order = 0
        self.members = [_Member(i, Identity.from_seed(self.rng.randbytes(32))) for i in range(size)]
        self._index = {m.identity.peer_id: m.index for m in self.members}
        self._started: dict[bytes, int] = {}  # broadcast id -> round it was sent in
        self._rounds: dict[bytes, list[int]] = {}  # broadcast id -> rounds to each delivery
        self._in_flight: list[tuple[int, int, bytes]] = []
        #: status changes seen, as (time, observer, change)
        self.changes: list[tuple[float, int, MemberChange]] = []
        #: members declared dead while they were up: (time, observer, subject)
        self.false_lost: list[tuple[float, int, int]] = []
        self.frames = {"swim": 0, "broadcast": 0}
        #: bytes of the frames sent, by kind
        self.bytes = {"swim": 0, "broadcast": 0}
        #: each member's linked members (None: no overlay)
        self.links: list[list[PeerId]] | None = None
        if overlay is not None:
            self.links = self._overlay(overlay)
        for member in self.members:
            self._start(member, incarnation=0)
        seed_members(m.detector for m in self.members if m.detector is not None)
        for member in self.members:
            # members start their protocol periods out of step, as real ones do
            self._schedule_tick(member, self.rng.random() * self.settings.period)
        self._push(self.settings.period, _ROUND, 0, 0, b"")

    def _overlay(self, degree: int) -> list[list[PeerId]]:
        """A random symmetric overlay: each member links to ``degree`` others (so it
        has that many links or a few more, as links others dialled count too)."""
        size = len(self.members)
        if not 1 <= degree < size:
            raise ValueError("an overlay's degree is at least 1 and less than the size")
        linked: list[set[int]] = [set() for _ in range(size)]
        for i in range(size):
            while len(linked[i]) < degree:
                j = self.rng.randrange(size)
                if j != i:
                    linked[i].add(j)
                    linked[j].add(i)
        return [[self.members[j].identity.peer_id for j in sorted(ls)] for ls in linked]

    def peer(self, index: int) -> PeerId:
        return self.members[index].identity.peer_id

    def up(self) -> list[int]:
        """Members running and not left."""
        return [m.index for m in self.members if m.up and not m.left]

    # -- faults ------------------------------------------------------------------------------

    def crash(self, index: int) -> None:
        """Stop a member without a word; frames to it are lost."""
        member = self.members[index]
        member.up = False
        member.detector = member.broadcaster = None

    def restart(self, index: int) -> None:
        """Start a crashed member again, with a higher incarnation (as a restart does)."""
        member = self.members[index]
        member.up = True
        member.left = False
        self._start(member, incarnation=int(self.now * 1000) + 1)
        assert member.detector is not None
        for other in self.members:  # as its replicated peer records say: left is left
            if other.left:
                member.detector.remove(other.identity.peer_id)
            else:
                member.detector.add(other.identity.peer_id)
        self._schedule_tick(member, self.now)

    def leave(self, index: int) -> None:
        """The member says it leaves, then stops."""
        member = self.members[index]
        if member.detector is not None:
            member.detector.leave()
            self._flush(member)
        member.left = True

    def set_link_loss(self, index: int, loss: float) -> None:
        """Frames to and from this member are lost with this chance (besides ``loss``)."""
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss is a probability in [0, 1)")
        self.members[index].link_loss = loss

    # -- broadcast ---------------------------------------------------------------------------

    def broadcast(
        self,
        index: int,
        type: str = "heartbeat",
        payload: object = None,
        *,
        ttl: int = 8,
        fanout: int = 3,
    ) -> bytes:
        """Originate a broadcast at member ``index`` now; returns its id."""
        member = self.members[index]
        assert member.broadcaster is not None and member.detector is not None
        message_id = member.broadcaster.originate(
            type,
            payload,
            ttl=ttl,
            fanout=fanout,
            created_at=int(self.now * 1000),
            pick=self._picker(member),
            members=member.detector.size(),
        )
        self._started[message_id] = self.round
        self._rounds[message_id] = []
        self._flush(member)
        return message_id

    def reach(self, message_id: bytes, origin: int) -> Reach:
        """Where a broadcast got to, among the members up now (the origin aside)."""
        up = [i for i in self.up() if i != origin]
        reached = sum(1 for i in up if self.members[i].delivered[message_id])
        duplicates = sum(max(0, self.members[i].delivered[message_id] - 1) for i in up)
        hops = sorted(self._rounds.get(message_id, []))

        def rounds_to(fraction: float) -> int | None:
            needed = max(1, -(-int(fraction * len(up) * 1000) // 1000))
            return hops[needed - 1] if len(hops) >= needed else None

        last = hops[-1] if hops else 0
        by_round = tuple(bisect.bisect_right(hops, r) for r in range(last + 1))
        return Reach(reached, len(up), rounds_to(0.99), rounds_to(1.0), duplicates, by_round)

    # -- views -------------------------------------------------------------------------------

    def status(self, observer: int, subject: int) -> Status | None:
        detector = self.members[observer].detector
        return detector.status(self.peer(subject)) if detector is not None else None

    def declared_lost_by_all(self, subject: int) -> bool:
        return all(self.status(i, subject) is Status.DEAD for i in self.up() if i != subject)

    def seen_alive_by_all(self, subject: int) -> bool:
        return all(self.status(i, subject) is Status.ALIVE for i in self.up() if i != subject)

    # -- running -----------------------------------------------------------------------------

    def run_for(self, seconds: float) -> None:
        self._run(self.now + seconds, None)

    def run_until(self, done: Callable[[], bool], timeout: float) -> float:
        """Run until ``done()`` (checked once a period); returns the time taken.

        Raises:
            TimeoutError: still not done after ``timeout`` virtual seconds.
        """
        start = self.now
        if self._run(start + timeout, done):
            return self.now - start
        raise TimeoutError(f"not done after {timeout} virtual seconds")

    def _run(self, until: float, done: Callable[[], bool] | None) -> bool:
        check_every = self.settings.period
        next_check = self.now
        while self._events and self._events[0][0] <= until:
            if done is not None and self._events[0][0] >= next_check:
                if done():
                    return True
                next_check = self._events[0][0] + check_every
            when, _, kind, a, b, frame = heapq.heappop(self._events)
            self.now = when
            if kind == _DELIVER:
                self._deliver(a, b, frame)
            elif kind == _TICK:
                self._tick(a, when)
            else:
                self._round()
        self.now = max(self.now, until)
        return done is not None and done()

    def _push(self, when: float, kind: int, a: int, b: int, frame: bytes) -> None:
        self._order += 1
        heapq.heappush(self._events, (when, self._order, kind, a, b, frame))

    def _schedule_tick(self, member: _Member, when: float) -> None:
        if when < member.tick_at:
            member.tick_at = when
            self._push(when, _TICK, member.index, 0, b"")

    def _tick(self, index: int, when: float) -> None:
        member = self.members[index]
        if when != member.tick_at:
            return  # superseded by an earlier tick
        member.tick_at = float("inf")
        if member.detector is None or member.left:
            return
        member.detector.tick(self.now)
        self._flush(member)

    def _round(self) -> None:
        """Deliver the broadcast frames sent last round, then every member pushes."""
        self.round += 1
        in_flight, self._in_flight = self._in_flight, []
        for sender, target, frame in in_flight:
            self._deliver(sender, target * 2 + 1, frame)
        for member in self.members:
            broadcaster, detector = member.broadcaster, member.detector
            if broadcaster and detector and broadcaster.active and not member.left:
                broadcaster.tick(self._picker(member))
                self._flush(member)
        self._push(self.now + self.settings.period, _ROUND, 0, 0, b"")

    def _deliver(self, sender: int, packed: int, frame: bytes) -> None:
        target, channel = divmod(packed, 2)
        member = self.members[target]
        if member.detector is None or member.broadcaster is None or member.left:
            return
        source = self.peer(sender)
        if channel == 0:
            member.detector.receive(source, frame, self.now)
        else:
            message = member.broadcaster.receive(
                source, frame, members=member.detector.size(), now=int(self.now * 1000)
            )
            if isinstance(message, GossipMessage):
                member.delivered[message.id] += 1
                started = self._started.get(message.id, self.round)
                self._rounds.setdefault(message.id, []).append(self.round - started)
        self._flush(member)

    def _flush(self, member: _Member) -> None:
        detector, broadcaster = member.detector, member.broadcaster
        if detector is None or broadcaster is None:
            return
        for channel, outbox in ((0, detector.outbox()), (1, broadcaster.outbox())):
            for peer, frame in outbox:
                kind = "broadcast" if channel else "swim"
                self.frames[kind] += 1
                self.bytes[kind] += len(frame)
                target = self._index[peer]
                loss = 1 - (1 - self.loss) * (1 - member.link_loss) * (
                    1 - self.members[target].link_loss
                )
                if loss and self.rng.random() < loss:
                    continue
                if channel:  # broadcast frames travel in rounds
                    self._in_flight.append((member.index, target, frame))
                    continue
                delay = self.latency * (1 + self.rng.random())
                self._push(self.now + delay, _DELIVER, member.index, target * 2 + channel, frame)
        for change in detector.changes():
            self.changes.append((self.now, member.index, change))
            subject = self._index[change.peer]
            was_up = self.members[subject].up and not self.members[subject].left
            if change.status is Status.DEAD and was_up:
                self.false_lost.append((self.now, member.index, subject))
        self._schedule_tick(member, detector.next_deadline())

    def _picker(self, member: _Member) -> Callable[[int, Collection[PeerId]], list[PeerId]]:
        """Whom ``member`` pushes broadcasts to: any member, or its links (an overlay)."""
        assert member.detector is not None
        if self.links is None:
            return member.detector.sample
        links, rng = self.links[member.index], self.rng
        return lambda count, avoid: sample_distinct(rng, links, count, avoid)

    def _start(self, member: _Member, incarnation: int) -> None:
        rng = random.Random(self.rng.random())
        links = self.links[member.index] if self.links is not None else None
        member.detector = FailureDetector(
            member.identity,
            incarnation=incarnation,
            settings=self.settings,
            rng=rng,
            neighbours=(lambda: links) if links is not None else None,
        )
        member.broadcaster = Broadcaster(
            member.identity, rounds=self.broadcast_rounds, now=int(self.now * 1000)
        )


__all__ = ["Reach", "SimulatedGossip"]
