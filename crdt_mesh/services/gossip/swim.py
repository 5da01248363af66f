"""Failure detection in the manner of SWIM with the Lifeguard refinements. Sans-IO.

SWIM (Das, Gupta, Motivala, DSN 2002): each protocol period a member probes
one other member, taken in a shuffled round-robin order; no ack within the
probe timeout, and it asks ``k`` other members to probe it indirectly; still
nothing by the end of the period, and the target becomes *suspect*. A suspect
that does not refute the suspicion (by announcing a higher *incarnation*
number, which only it can sign) before the suspicion timeout is declared
*dead*. Membership updates ride on probes and acks (piggyback), each
retransmitted ``retransmit_mult * log10(n)`` times.

Lifeguard (Dadgar, Phillips, Currey, 2018) makes slow members less quick to
accuse: a *local health multiplier* grows when this member's own probes fail,
its nacks go missing or it has to refute a suspicion, and stretches its probe
timeout and period; the suspicion timeout starts long and shrinks as
independent members confirm the suspicion; a probe of a suspect carries the
suspicion, so the suspect hears of it at once and refutes it (buddy system).

Every frame is signed by the member that wrote it (invariant 7 of docs/architecture.md:
signed, but not in the ledger). An ack relayed by an intermediary is the target's own
signed ack, so nobody can vouch for a member that is not answering; an
*alive* update carries the member's own signature over its incarnation, so
nobody can refute a suspicion on another's behalf.

Over an overlay (``neighbours``): a member probes, and asks for indirect probes,
only the members it is linked to (its active view), so a probe never needs a link
of its own; a helper asked for an indirect probe (after a direct one failed)
relays it to the target if they are linked, and answers with a nack at once if
not. What a member learns of the others rides on those frames, and spreads
through the overlay as any piggybacked update does. A neighbour whose link ended
without a word is no longer probed by anyone near it: the shell reports it
(:meth:`lost`) and it is suspected at once, the link having been the failure
detector. Without ``neighbours``, every member is probed (plain SWIM).

The core owns no clock, socket or task: the shell calls :meth:`tick` with the
time, hands it frames with :meth:`receive`, sends what :meth:`outbox` returns
and reads :meth:`changes`. :meth:`next_deadline` says when to tick next.

Why one module (~710 lines): SWIM's probe, suspicion and dissemination and
Lifeguard's three refinements act on one member table in one period; the
frame codec is the only part that stands alone, and it is short.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
import random
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import cbor2

from ...identity import Domain, Identity, PeerId
from .rules import sample_distinct

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024
_VERIFIED_CACHE = 4096


class Status(enum.Enum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


_LIVE = (Status.ALIVE, Status.SUSPECT)


@dataclass(frozen=True, slots=True)
class SwimSettings:
    """Timings (seconds) and counts; the defaults are memberlist's LAN profile.

    Args:
        period: the protocol period: one probe started per period.
        probe_timeout: wait this long for a direct ack before probing indirectly.
        indirect_probes: members asked to probe a silent target (SWIM's ``k``).
        suspicion_mult: minimum suspicion timeout, in periods, times log10(n).
        suspicion_max_mult: the first suspicion timeout is this many times the minimum.
        confirmations: independent suspicions after which the timeout is at its minimum.
        retransmit_mult: each update is piggybacked this many times log10(n).
        max_updates: updates piggybacked on one frame.
        max_health: the local health multiplier saturates here.
        lifeguard: False runs plain SWIM (no health multiplier, a fixed suspicion
            timeout, no buddy system): only for comparison.
    """

    period: float = 1.0
    probe_timeout: float = 0.5
    indirect_probes: int = 3
    suspicion_mult: float = 4.0
    suspicion_max_mult: float = 6.0
    confirmations: int = 3
    retransmit_mult: int = 4
    max_updates: int = 8
    max_health: int = 8
    lifeguard: bool = True

    def __post_init__(self) -> None:
        if not (0 < self.probe_timeout < self.period):
            raise ValueError("probe_timeout is positive and shorter than the period")
        if self.indirect_probes < 0 or self.confirmations < 1 or self.max_updates < 1:
            raise ValueError("indirect_probes >= 0, confirmations >= 1, max_updates >= 1")
        if self.suspicion_mult <= 0 or self.suspicion_max_mult < 1 or self.max_health < 0:
            raise ValueError("suspicion multipliers are positive (max >= 1); max_health >= 0")


@dataclass(frozen=True, slots=True)
class MemberChange:
    """A member's status changed in this member's eyes."""

    peer: PeerId
    status: Status
    incarnation: int
    previous: Status | None  # None: a member this detector had not heard of


@dataclass(slots=True)
class _Member:
    status: Status
    incarnation: int
    proof: bytes | None = None  # its signature over alive(incarnation), when we have it
    suspected_at: float = 0.0
    accusers: set[PeerId] = field(default_factory=set)


@dataclass(slots=True)
class _Probe:
    target: PeerId
    seq: int
    started: float
    indirect_at: float
    ends_at: float
    acked: bool = False
    indirect_done: bool = False
    helpers: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    target: PeerId
    requester: PeerId
    requester_seq: int
    nack_at: float


@dataclass(slots=True)
class _Update:
    kind: Status
    peer: PeerId
    incarnation: int
    extra: bytes  # alive/left: the member's signature; suspect/dead: the accuser's key
    sent: int = 0


@dataclass(slots=True)
class SwimCounts:
    """What a failure detector's probing found since it started."""

    probes_acked: int = 0
    #: acked through helpers (an indirect probe) after the direct one went unanswered
    probes_acked_indirectly: int = 0
    probes_failed: int = 0
    #: members this one began to suspect (from alive), by its probes or others' word
    suspicions: int = 0
    #: suspicions of this member it answered with a higher incarnation
    refutations: int = 0


class FailureDetector:
    """One member's SWIM+Lifeguard state. See the module doc.

    Args:
        identity: this member.
        incarnation: where this member's incarnation starts; a restarted member
            starts above any it had before (the shell uses the wall clock in ms).
        settings: timings and counts.
        rng: every random choice (pass a seeded one for a replayable run).
        neighbours: the members this one is linked to, if it probes only those (an
            overlay); None: it probes every member.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        incarnation: int = 0,
        settings: SwimSettings | None = None,
        rng: random.Random | None = None,
        neighbours: Callable[[], Collection[PeerId]] | None = None,
    ) -> None:
        self.identity = identity
        self._neighbours = neighbours
        self._ring: list[PeerId] = []  # neighbours still to probe this round
        self._unreachable: PeerId | None = None  # a member to probe next (see unreachable)
        self.me = identity.peer_id
        self.settings = settings or SwimSettings()
        self.rng = rng or random.Random()
        self.incarnation = incarnation
        self._proof = self._sign_alive(incarnation)
        self.health = 0  # Lifeguard's local health multiplier
        #: what probing found, since start (an operator's view: the metrics)
        self.counts = SwimCounts()
        # Members are a shared base (known from records, assumed alive at incarnation
        # 0, not copied: 10,000 detectors can share one list) plus the members we hold
        # state for, materialised when first touched.
        self._members: dict[PeerId, _Member] = {}
        self._base: Sequence[PeerId] = ()
        self._base_set: AbstractSet[PeerId] = frozenset()
        self._extra: list[PeerId] = []  # members outside the base, in order of arrival
        self._suspects: set[PeerId] = set()
        # the probe round: a random permutation as start + step * stride (mod size)
        self._round_size = 0
        self._round_step = 0
        self._round_start = 0
        self._round_stride = 1
        self._seq = 0
        self._probe: _Probe | None = None
        self._next_probe = 0.0
        self._relays: dict[int, _Relay] = {}  # our seq of a ping sent for someone else
        self._updates: dict[PeerId, _Update] = {}
        self._outbox: list[tuple[PeerId, bytes]] = []
        self._changes: list[MemberChange] = []
        self._verified: dict[bytes, None] = {}
        self._left = False
        #: frames refused (bad signature, malformed, too big)
        self.dropped = 0
        if incarnation > 0:  # a restart: tell the members we are back
            self._queue(_Update(Status.ALIVE, self.me, incarnation, self._proof))

    # -- the member list -------------------------------------------------------------------

    def add(self, peer: PeerId) -> None:
        """A member learned elsewhere (a replicated peer record): probe it from now on."""
        member = self._member(peer)
        if member is None and peer != self.me:
            # Known from its record: alive at its first incarnation (0) until we hear more.
            self._new(peer, _Member(Status.ALIVE, 0))
        elif member is not None and member.status is Status.LEFT:
            self._set(peer, member, Status.ALIVE, member.incarnation)  # it joined again

    def assume(self, peers: Sequence[PeerId], as_set: AbstractSet[PeerId] | None = None) -> None:
        """Many members at once, known alive (from records), held without a copy.

        ``as_set`` (the same members as a set) may be shared between detectors too.
        Only before any other member is known; later, use :meth:`add`.
        """
        if self._base or self._members:
            raise RuntimeError("assume() comes first; add members one by one after that")
        self._base = peers
        self._base_set = as_set if as_set is not None else frozenset(peers)

    def remove(self, peer: PeerId) -> None:
        """A member that left on purpose (its record says so): no longer probed."""
        member = self._member(peer)
        if member is None and peer != self.me:
            self._new(peer, _Member(Status.LEFT, 0))
        elif member is not None and member.status is not Status.LEFT:
            self._set(peer, member, Status.LEFT, member.incarnation)

    def status(self, peer: PeerId) -> Status | None:
        member = self._members.get(peer)
        if member is not None:
            return member.status
        return Status.ALIVE if peer in self._base_set and peer != self.me else None

    def members(self, *statuses: Status) -> list[PeerId]:
        """Members with one of ``statuses`` (all, if none given), in id order."""
        wanted = set(statuses) or set(Status)
        return sorted((p for p in self._all() if self.status(p) in wanted), key=str)

    def live(self) -> list[PeerId]:
        """Members believed up: alive or merely suspect, in id order."""
        return self.members(Status.ALIVE, Status.SUSPECT)

    def size(self) -> int:
        """How many members this detector knows of, whatever their status."""
        return len(self._base) + len(self._extra)

    def sample(self, count: int, exclude: Iterable[PeerId] = ()) -> list[PeerId]:
        """Up to ``count`` random members believed up, none of ``exclude``."""
        excluded = set(exclude)
        excluded.add(self.me)
        size = self.size()
        picked: list[PeerId] = []
        if size > 4 * (count + len(excluded)) + 16:  # many members: draw and reject
            for _ in range(20 * count + 20):
                peer = self._at(self.rng.randrange(size))
                if peer not in excluded and peer not in picked and self._is_live(peer):
                    picked.append(peer)
                    if len(picked) == count:
                        return picked
        pool = [p for p in self._all() if p not in excluded and self._is_live(p)]
        return sample_distinct(self.rng, pool, count)

    def _all(self) -> Iterator[PeerId]:
        yield from (p for p in self._base if p != self.me)
        yield from self._extra

    def _at(self, index: int) -> PeerId:
        base = len(self._base)
        return self._base[index] if index < base else self._extra[index - base]

    def _is_live(self, peer: PeerId) -> bool:
        return self.status(peer) in (Status.ALIVE, Status.SUSPECT)

    def _member(self, peer: PeerId) -> _Member | None:
        """The state held for ``peer``, materialised from the base when first touched."""
        member = self._members.get(peer)
        if member is None and peer in self._base_set and peer != self.me:
            member = self._members[peer] = _Member(Status.ALIVE, 0)
        return member

    def _new(self, peer: PeerId, member: _Member) -> None:
        self._members[peer] = member
        if peer not in self._base_set:
            self._extra.append(peer)

    def leave(self) -> None:
        """Say, signed, that this member leaves on purpose; it stops probing."""
        self._left = True
        signature = self.identity.sign(
            Domain.SWIM_ALIVE, _alive_body(self.me, self.incarnation, left=True)
        )
        self._queue(_Update(Status.LEFT, self.me, self.incarnation, signature))
        for peer in self._helpers(3):
            self._send(peer, {"k": "ping", "seq": self._next_seq(), "to": peer.key})
        self._probe = None

    # -- the shell's calls -------------------------------------------------------------------

    def outbox(self) -> list[tuple[PeerId, bytes]]:
        """Frames to send, each to one member; taking them empties the outbox."""
        out, self._outbox = self._outbox, []
        return out

    def changes(self) -> list[MemberChange]:
        """Status changes since the last call."""
        out, self._changes = self._changes, []
        return out

    def next_deadline(self) -> float:
        """The latest time by which :meth:`tick` should be called again."""
        deadlines = [self._next_probe]
        if self._probe is not None:
            probe = self._probe
            deadlines.append(probe.ends_at if probe.indirect_done else probe.indirect_at)
        deadlines.extend(r.nack_at for r in self._relays.values())
        for peer in self._suspects:
            member = self._members[peer]
            deadlines.append(member.suspected_at + self._suspicion_timeout(len(member.accusers)))
        return min(deadlines)

    def tick(self, now: float) -> None:
        """Run what is due at ``now``: probes, their timeouts, suspicion expiry."""
        self._expire_relays(now)
        probe = self._probe
        if probe is not None and not probe.acked:
            if not probe.indirect_done and now >= probe.indirect_at:
                self._probe_indirectly(probe)
            if now >= probe.ends_at:
                self._probe_failed(probe, now)
        if probe is not None and (probe.acked or now >= probe.ends_at):
            self._probe = None
        for peer in list(self._suspects):
            member = self._members[peer]
            if now >= member.suspected_at + self._suspicion_timeout(len(member.accusers)):
                self._set(peer, member, Status.DEAD, member.incarnation)
                self._queue(_Update(Status.DEAD, peer, member.incarnation, self.me.key))
        if now >= self._next_probe and self._probe is None and not self._left:
            self._start_probe(now)

    def receive(self, sender: PeerId, data: bytes, now: float) -> None:
        """A frame from ``sender`` (the link's authenticated peer). Bad frames are dropped."""
        try:
            body, author = self._open(data)
            kind = body["k"]
            seq = body["seq"]
            if not isinstance(kind, str) or not isinstance(seq, int):
                raise ValueError("bad frame")
            self._heard_from(author, body.get("inc"), body.get("proof"))
            for update in body.get("u", ()):
                self._apply(update, now)
        except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError) as exc:
            self.dropped += 1
            log.debug("dropped a frame from %s: %s", sender.short, exc)
            return
        if self._left:
            return
        to = body.get("to")
        if kind == "ping" and to == self.me.key:
            ack: dict[str, Any] = {"k": "ack", "seq": seq, "to": author.key}
            if body.get("for") is not None:
                ack["for"] = body["for"]
            self._send(sender, ack)
        elif kind == "ack":
            self._on_ack(author, sender, seq, body.get("for"), data)
        elif kind == "ping-req" and isinstance(to, bytes) and author == sender:
            target = PeerId(to)
            if self._neighbours is not None and target not in self._neighbours():
                self._send(sender, {"k": "nack", "seq": seq})  # no way to it but a new link
                return
            relay_seq = self._next_seq()
            self._relays[relay_seq] = _Relay(
                target, sender, seq, now + 0.8 * self.settings.probe_timeout * (self.health + 1)
            )
            self._send(target, {"k": "ping", "seq": relay_seq, "to": to, "for": [sender.key, seq]})
        elif kind == "nack" and author == sender and self._probe and self._probe.seq == seq:
            self._probe.nacks += 1

    def lost(self, peer: PeerId, now: float) -> None:
        """The link to ``peer`` ended without a parting word (a crash, a shutdown):
        suspect it (or confirm a suspicion), as a failed probe would. A member that
        lives refutes it."""
        member = self._member(peer)
        if not self._left and member is not None and member.status in _LIVE:
            self._suspect(peer, member, member.incarnation, self.me, now)

    def unreachable(self, peer: PeerId) -> None:
        """A dial of ``peer`` failed at every address it lists: probe it next (through
        the neighbours, over the links they have). Over an overlay only neighbours are
        probed, so a member nobody is linked to would never be, and its crash never
        noticed; a member that lives and is linked to anyone acks through them."""
        member = self._member(peer)
        if peer != self.me and member is not None and member.status in _LIVE:
            self._unreachable = peer

    # -- probing -----------------------------------------------------------------------------

    def _start_probe(self, now: float) -> None:
        period = self.settings.period * (self.health + 1)
        self._next_probe = now + period
        target = self._next_target()
        if target is None:
            return
        seq = self._next_seq()
        timeout = self.settings.probe_timeout * (self.health + 1)
        self._probe = _Probe(target, seq, now, now + timeout, now + period)
        self._send(target, {"k": "ping", "seq": seq, "to": target.key})

    def _next_target(self) -> PeerId | None:
        """SWIM's round-robin: every member (or neighbour) once per round, in a fresh
        random order."""
        unreachable, self._unreachable = self._unreachable, None
        if unreachable is not None and self._is_live(unreachable):
            return unreachable
        if self._neighbours is not None:
            return self._next_neighbour()
        size = self.size()
        for _ in range(size + 1):
            if self._round_step >= self._round_size:
                if size == 0:
                    return None
                # a random permutation without a list: start + step * stride, stride
                # coprime with the size (O(1) memory, whatever the membership)
                self._round_size, self._round_step = size, 0
                self._round_start = self.rng.randrange(size)
                self._round_stride = 1
                if size > 2:
                    self._round_stride = self.rng.randrange(1, size)
                    while math.gcd(self._round_stride, size) != 1:
                        self._round_stride = self.rng.randrange(1, size)
            index = (self._round_start + self._round_step * self._round_stride) % self._round_size
            self._round_step += 1
            peer = self._at(index)
            if peer != self.me and self._is_live(peer):
                return peer
        return None

    def _next_neighbour(self) -> PeerId | None:
        assert self._neighbours is not None
        linked = set(self._neighbours())
        for _ in range(2):
            while self._ring:
                peer = self._ring.pop()
                if peer in linked and peer != self.me and self._is_live(peer):
                    return peer
            self._ring = sorted(linked, key=lambda p: p.key)
            self.rng.shuffle(self._ring)
        return None

    def _helpers(self, count: int, exclude: Iterable[PeerId] = ()) -> list[PeerId]:
        """Members to ask for an indirect probe (neighbours, over an overlay)."""
        if self._neighbours is None:
            return self.sample(count, exclude)
        excluded = {*exclude, self.me}
        pool = sorted(
            (p for p in self._neighbours() if p not in excluded and self._is_live(p)),
            key=lambda p: p.key,
        )
        return sample_distinct(self.rng, pool, count)

    def _probe_indirectly(self, probe: _Probe) -> None:
        chosen = self._helpers(self.settings.indirect_probes, exclude=[probe.target])
        for helper in chosen:
            self._send(helper, {"k": "ping-req", "seq": probe.seq, "to": probe.target.key})
        probe.indirect_done = True
        probe.helpers = len(chosen)  # Lifeguard: each helper owes us an ack or a nack

    def _probe_failed(self, probe: _Probe, now: float) -> None:
        self.counts.probes_failed += 1
        self._adjust_health(+1)
        if probe.nacks < probe.helpers:
            self._adjust_health(+1)  # missed nacks: our own links may be what is failing
        member = self._member(probe.target)
        if member is not None and member.status in _LIVE:
            # a first suspicion, or (already suspect) an independent confirmation
            self._suspect(probe.target, member, member.incarnation, self.me, now)

    def _on_ack(
        self, author: PeerId, sender: PeerId, seq: int, on_behalf: Any, data: bytes
    ) -> None:
        relay = self._relays.get(seq)
        if relay is not None and author == relay.target == sender:
            del self._relays[seq]
            self._outbox.append((relay.requester, data))  # the target's own signed ack
            return
        probe = self._probe
        if probe is None or author != probe.target or probe.acked:
            return
        direct = on_behalf is None and sender == author and seq == probe.seq
        if direct or on_behalf == [self.me.key, probe.seq]:
            probe.acked = True
            if direct:
                self.counts.probes_acked += 1
            else:
                self.counts.probes_acked_indirectly += 1
            self._adjust_health(-1)

    def _expire_relays(self, now: float) -> None:
        for seq, relay in list(self._relays.items()):
            if now >= relay.nack_at:
                del self._relays[seq]
                self._send(relay.requester, {"k": "nack", "seq": relay.requester_seq})

    def _adjust_health(self, delta: int) -> None:
        if self.settings.lifeguard:
            self.health = max(0, min(self.settings.max_health, self.health + delta))

    # -- membership updates --------------------------------------------------------------------

    def _heard_from(self, peer: PeerId, incarnation: Any, proof: Any) -> None:
        if not isinstance(incarnation, int) or not isinstance(proof, bytes):
            raise ValueError("a frame carries its author's incarnation and proof")
        self._alive(peer, incarnation, proof)

    def _apply(self, update: Any, now: float) -> None:
        kind, key, incarnation, extra = update
        if not isinstance(incarnation, int) or not isinstance(extra, bytes):
            raise ValueError("bad update")
        peer = PeerId(key)
        status = Status(kind)
        if status is Status.ALIVE:
            self._alive(peer, incarnation, extra)
        elif status is Status.LEFT:
            self._left_update(peer, incarnation, extra)
        elif peer == self.me:
            if incarnation >= self.incarnation and not self._left:
                self._refute()
        else:
            accuser = PeerId(extra)
            member = self._member(peer)
            if member is None or member.status is Status.LEFT or incarnation < member.incarnation:
                return
            if status is Status.SUSPECT:
                self._suspect(peer, member, incarnation, accuser, now)
            elif member.status is not Status.DEAD or incarnation > member.incarnation:
                self._set(peer, member, Status.DEAD, incarnation)
                self._queue(_Update(Status.DEAD, peer, incarnation, extra))

    def _alive(self, peer: PeerId, incarnation: int, proof: bytes) -> None:
        if peer == self.me:
            return
        member = self._member(peer)
        if member is not None and incarnation <= member.incarnation:
            return
        if not self._verify(
            peer, Domain.SWIM_ALIVE, _alive_body(peer, incarnation, left=False), proof
        ):
            raise ValueError("an alive update without its member's signature")
        if member is None:
            member = _Member(Status.ALIVE, incarnation, proof)
            self._new(peer, member)
            self._changes.append(MemberChange(peer, Status.ALIVE, incarnation, None))
        else:
            member.proof = proof
            if member.status is Status.ALIVE:
                member.incarnation = incarnation
            else:
                self._set(peer, member, Status.ALIVE, incarnation)
        self._queue(_Update(Status.ALIVE, peer, incarnation, proof))

    def _left_update(self, peer: PeerId, incarnation: int, signature: bytes) -> None:
        member = self._member(peer)
        if peer == self.me or (member is not None and member.status is Status.LEFT):
            return
        if member is not None and incarnation < member.incarnation:
            return
        if not self._verify(
            peer, Domain.SWIM_ALIVE, _alive_body(peer, incarnation, left=True), signature
        ):
            raise ValueError("a left update without its member's signature")
        if member is None:
            member = _Member(Status.LEFT, incarnation)
            self._new(peer, member)
            self._changes.append(MemberChange(peer, Status.LEFT, incarnation, None))
        else:
            self._set(peer, member, Status.LEFT, incarnation)
        self._queue(_Update(Status.LEFT, peer, incarnation, signature))

    def _suspect(
        self, peer: PeerId, member: _Member, incarnation: int, accuser: PeerId, now: float
    ) -> None:
        if member.status is Status.DEAD and incarnation <= member.incarnation:
            return
        if member.status is Status.SUSPECT and incarnation == member.incarnation:
            if accuser not in member.accusers:  # an independent confirmation
                member.accusers.add(accuser)
                self._queue(_Update(Status.SUSPECT, peer, incarnation, accuser.key))
            return
        member.suspected_at = now
        member.accusers = {accuser}
        self._set(peer, member, Status.SUSPECT, incarnation)
        self._queue(_Update(Status.SUSPECT, peer, incarnation, accuser.key))

    def _refute(self) -> None:
        """Someone suspects or buried us: a higher incarnation, signed, says we live."""
        self.counts.refutations += 1
        self._adjust_health(+1)
        self.incarnation += 1
        self._proof = self._sign_alive(self.incarnation)
        self._queue(_Update(Status.ALIVE, self.me, self.incarnation, self._proof))

    def _suspicion_timeout(self, accusers: int) -> float:
        """Lifeguard: from ``max`` down to ``min`` as independent confirmations arrive."""
        s = self.settings
        n = max(self.size() + 1, 2)
        low = s.suspicion_mult * max(1.0, math.log10(n)) * s.period
        if not s.lifeguard:
            return low
        high = s.suspicion_max_mult * low
        confirmations = max(0, accusers - 1)
        fraction = math.log(confirmations + 1) / math.log(s.confirmations + 1)
        return max(low, high - (high - low) * fraction)

    def _set(self, peer: PeerId, member: _Member, status: Status, incarnation: int) -> None:
        previous = member.status
        member.status = status
        if status is Status.SUSPECT:
            if previous is not Status.SUSPECT:
                self.counts.suspicions += 1
            self._suspects.add(peer)
        else:
            self._suspects.discard(peer)
        member.incarnation = incarnation
        if status is not Status.SUSPECT:
            member.accusers = set()
        if previous is not status:
            self._changes.append(MemberChange(peer, status, incarnation, previous))

    def _queue(self, update: _Update) -> None:
        self._updates[update.peer] = update  # a newer word on a member replaces the older

    def _piggyback(self, to: PeerId) -> list[list[Any]]:
        n = self.size() + 1
        limit = self.settings.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))
        out: list[list[Any]] = []
        member = self._member(to)
        if (
            self.settings.lifeguard
            and member is not None
            and member.status in (Status.SUSPECT, Status.DEAD)
        ):
            # Buddy system: a member we suspect hears it from us at once, and can refute.
            accuser = next(iter(member.accusers), self.me)
            out.append([member.status.value, to.key, member.incarnation, accuser.key])
        chosen = sorted(
            (u for u in self._updates.values() if u.peer != to or not out),
            key=lambda u: u.sent,
        )[: self.settings.max_updates - len(out)]
        for update in chosen:
            update.sent += 1
            if update.sent >= limit:
                self._updates.pop(update.peer, None)
            out.append([update.kind.value, update.peer.key, update.incarnation, update.extra])
        return out

    # -- frames ------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, to: PeerId, body: dict[str, Any]) -> None:
        body["v"] = 1
        body["from"] = self.me.key
        body["inc"] = self.incarnation
        body["proof"] = self._proof
        body["u"] = self._piggyback(to)
        encoded = cbor2.dumps(body, canonical=True)
        signature = self.identity.sign(Domain.SWIM_FRAME, encoded)
        self._outbox.append((to, cbor2.dumps([encoded, signature])))

    def _open(self, data: bytes) -> tuple[dict[str, Any], PeerId]:
        if len(data) > MAX_FRAME:
            raise ValueError("frame too large")
        encoded, signature = cbor2.loads(data)
        if not isinstance(encoded, bytes) or not isinstance(signature, bytes):
            raise ValueError("bad frame")
        body = cbor2.loads(encoded)
        if not isinstance(body, dict) or body.get("v") != 1:
            raise ValueError("bad frame")
        author = PeerId(body["from"])
        if not self._verify(author, Domain.SWIM_FRAME, encoded, signature, cache=False):
            raise ValueError("bad signature")
        return body, author

    def _sign_alive(self, incarnation: int) -> bytes:
        return self.identity.sign(Domain.SWIM_ALIVE, _alive_body(self.me, incarnation, left=False))

    def _verify(
        self,
        peer: PeerId,
        domain: Domain,
        message: bytes,
        signature: bytes,
        *,
        cache: bool = True,
    ) -> bool:
        token = hashlib.blake2b(domain.value + message + signature, digest_size=16).digest()
        if cache and token in self._verified:
            return True
        if not peer.verify(domain, message, signature):
            return False
        if cache:
            self._verified[token] = None
            if len(self._verified) > _VERIFIED_CACHE:
                del self._verified[next(iter(self._verified))]
        return True


def _alive_body(peer: PeerId, incarnation: int, *, left: bool) -> bytes:
    return cbor2.dumps([peer.key, incarnation, left])


def seed_members(detectors: Iterable[FailureDetector]) -> None:
    """Make every detector know every other (a steady state to start a simulation from).

    They share one list and one set of members: no detector holds a copy.
    """
    group = list(detectors)
    peers = tuple(d.me for d in group)
    as_set = frozenset(peers)
    for detector in group:
        detector.assume(peers, as_set)


__all__ = ["FailureDetector", "MemberChange", "Status", "SwimSettings", "seed_members"]
