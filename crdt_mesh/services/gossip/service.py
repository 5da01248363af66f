"""Membership: who is in the mesh, as replicated state; peer discovery from it.

Each peer publishes a signed record in a document only it can write
(``owner:<peer>:mesh:peer``): its capabilities, addresses, start time, and
whether it left on purpose. The peer set is a pure view over those records
(invariant 6 of docs/architecture.md), so every replica that holds the same entries shows
the same peers. Records spread like any other document: anti-entropy plus eager push.

Discovery in the manner of HyParView (Leitão, Pereira, Rodrigues, DSN 2007):
the links a mesh keeps are its *active view*, a few: ``log2(N) + 1`` for N peers
present (:func:`active_size`), never more than ``P2P_MAX_PEERS``; the records it
knows but is not linked to are its *passive view*. Every gossip interval the
mesh dials a random passive peer while the active view is short of its size
(links are symmetric: a peer it dials counts it too; the runtime serves links
past half the size again one round and closes them, and a peer that did so is
not dialled again for a while); links up to that ceiling are kept, and a full
active view is left alone, but for a swap of one active peer for a passive one
about once a minute (a shuffle), so that the overlay does not set in stone.
Anti-entropy and eager push run over the active view, so a peer's idle cost
follows its links, not the mesh's size.

Failure detection (:mod:`crdt_mesh.services.gossip.swim`): SWIM probes with the Lifeguard
refinements, over ephemeral signed frames, on the overlay: a peer probes its
linked peers over their links (and asks them for indirect probes, which a helper
relays only over a link it has), and what it learns of the others rides on those
frames. No link is ever dialled for a probe. A link that ends without a parting
word (a crash, a shutdown; :meth:`Host.on_link_closed
<crdt_mesh.runtime.host.Host.on_link_closed>`) makes the peer suspect at once,
as the link is the overlay's failure detector (HyParView's): a peer that still
lives hears of the suspicion as any update spreads, and refutes it; a crashed
one is suspected by each of its neighbours, and declared dead.
A peer is *present* while its record says it is in the mesh and the detector
has not declared it dead; ``p2p:peer:discovered`` and ``p2p:peer:lost`` fire
as that changes, so a crashed peer is lost and, restarted, discovered again.

Epidemic broadcast (``propagate``, :mod:`crdt_mesh.services.gossip.epidemic`): a message
signed by its origin, not stored in the ledger (invariant 7 of docs/architecture.md),
pushed to ``fanout`` random linked peers at once and in a few later gossip rounds; each
peer delivers it once (de-duplicated by id) and pushes it on while its TTL in
hops lasts. Replicated state does not depend on it: anti-entropy underneath
converges even where a broadcast is lost.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

import anyio

from ...config import Feature, MeshConfig
from ...errors import MeshError
from ...identity import PeerId
from ...ledger import Entry
from ...metrics import Kind, Metrics
from ...runtime.host import Host, LinkEnd, link_ceiling
from ...runtime.penalty import Offence
from .board import MembershipBoard
from .epidemic import Broadcaster, Drop, GossipMessage
from .model import GossipEvents, PeerRecord, record_owner
from .rules import sample_distinct, strings
from .swim import FailureDetector, MemberChange, Status, SwimCounts, SwimSettings

log = logging.getLogger(__name__)

#: Seconds, on average, between swaps of an active peer for a passive one once the
#: view is full: often enough that the overlay does not set in stone, rarely enough
#: that links carrying traffic stay (each swap costs both ends a handshake).
SHUFFLE_SECONDS = 60.0
#: Gossip intervals a peer whose view was full (it served one round and closed) is
#: not dialled again: a short view tries others, not the same full peers each step.
FULL_BACKOFF = 10
_FULL_KEPT = 1024
#: The fewest links an active view aims at (three: a ring of two is fragile).
MIN_ACTIVE = 3


def active_size(present: int, max_peers: int) -> int:
    """Links an active view aims at with ``present`` peers in the mesh (this one
    included): ``ceil(log2 N) + 1``, at least :data:`MIN_ACTIVE`, at most
    ``max_peers`` (HyParView keeps 5 for 10,000; push gossip needs about log N)."""
    wanted = math.ceil(math.log2(max(present, 2))) + 1
    return max(1, min(max_peers, max(MIN_ACTIVE, wanted)))


#: The ephemeral channels gossip owns: broadcasts, and the failure detector's frames.
_BROADCAST, _SWIM = b"B", b"S"


class GossipService:
    """``mesh.gossip``: join, leave, the peer set, and discovery. Off unless
    ``P2P_ENABLED`` and ``P2P_GOSSIP`` are on (or the mesh has no config)."""

    def __init__(self, host: Host, swim: SwimSettings | None = None) -> None:
        self._host = host
        host.events.register(*GossipEvents)
        self._interval = host.config.gossip_interval if host.config is not None else host.interval
        interval = self._interval
        #: SWIM/Lifeguard timings; the protocol period defaults to the gossip interval
        self.swim_settings = swim or SwimSettings(period=interval, probe_timeout=interval / 2)
        self.board = MembershipBoard(host.replica)
        self._records: dict[PeerId, PeerRecord] = {}
        self._present: dict[PeerId, bool] = {}  # what the events last said of each peer
        self._dialling: set[PeerId] = set()
        #: links of the active view that ended, and those that ended without a
        #: parting word (each made the peer suspect)
        self.links_ended = 0
        self.links_lost = 0
        self._full: dict[PeerId, float] = {}  # peers whose view was full, and since when
        self._unsubscribe = host.replica.on_commit(self._on_commit)
        self.shuffles = 0
        #: maintenance steps taken (one per gossip interval)
        self.steps = 0
        rng = random.Random(host.rng.random())
        # Refuses what was created before it started: a restart never delivers twice.
        self._broadcaster = Broadcaster(host.replica.identity, now=_now_ms())
        self._detector: FailureDetector | None = None
        self._swim_woken: anyio.Event | None = None
        self._detector_rng = rng
        self._handlers: list[Callable[[GossipMessage], Any]] = []
        self._running = False
        # A mesh whose gossip is off owns no channel: it ignores broadcasts and probes.
        self._channels: list[Callable[[], None]] = []
        if host.config is None or host.config.enables(Feature.GOSSIP):
            self._channels = [
                host.on_ephemeral(_BROADCAST, self._receive_broadcast),
                host.on_ephemeral(_SWIM, self._receive_swim),
                host.on_link_closed(self._on_link_closed),
            ]

    def start(self) -> None:
        """Run discovery, failure detection and broadcast rounds (once; the root calls
        it when gossip is on, and :meth:`join` does)."""
        host = self._host
        if self._running or not host.running:
            return
        self._running = True
        host.spawn(self.run, self._interval)

    @property
    def delivered(self) -> int:
        """Broadcasts delivered here."""
        return self._broadcaster.delivered

    @property
    def dropped(self) -> int:
        """Ephemeral frames refused (malformed, forged, too large)."""
        swim = self._detector.dropped if self._detector is not None else 0
        return self._broadcaster.dropped + swim

    @property
    def _config(self) -> MeshConfig | None:
        return self._host.config

    def _require(self) -> None:
        if self._config is not None:
            self._config.require(Feature.GOSSIP)

    # -- commands -----------------------------------------------------------------------

    def join(
        self, capabilities: Iterable[str] = (), listen_address: str | None = None
    ) -> PeerRecord:
        """Publish (or update) this peer's record.

        Raises:
            FeatureDisabledError: gossip is off.
            ValueError: a capability or address is not a non-empty string.
        """
        self._require()
        caps = strings(capabilities, "capabilities")
        address = listen_address or self._host.address
        addresses = strings([address] if address else [], "listen_address")
        record = self._write(caps, addresses, left=False)
        self.start()
        return record

    def leave(self) -> PeerRecord:
        """Say, in the record, that this peer left on purpose (it is not probed)."""
        self._require()
        current = self.record(self._host.replica.peer_id)
        caps = current.capabilities if current else ()
        addresses = current.addresses if current else ()
        record = self._write(caps, addresses, left=True)
        if self._detector is not None:
            self._detector.leave()
            self._send_swim()
        return record

    def _write(
        self, caps: tuple[str, ...], addresses: tuple[str, ...], *, left: bool
    ) -> PeerRecord:
        return self.board.write(caps, addresses, left=left)

    # -- views --------------------------------------------------------------------------

    def record(self, peer: PeerId) -> PeerRecord | None:
        """The record ``peer`` published, as this replica holds it (None if none)."""
        return self.board.record(peer)

    def peers(self, *, include_left: bool = False) -> list[PeerRecord]:
        """Every peer whose record this replica holds (a pure view of replicated state)."""
        self._require()
        return self.board.peers(include_left=include_left)

    def with_capabilities(self, *capabilities: str) -> list[PeerRecord]:
        """Live peers that declared every one of ``capabilities``."""
        wanted = set(capabilities)
        return [r for r in self.peers() if wanted <= set(r.capabilities)]

    def status(self, peer: PeerId) -> Status | None:
        """What this peer's failure detector thinks of ``peer`` (None: not probing it).

        Local opinion, not replicated state: two peers may differ for a while.
        """
        return self._detector.status(peer) if self._detector is not None else None

    def present(self) -> list[PeerRecord]:
        """Peers in the mesh (by their records) that the failure detector has not lost."""
        lost = (Status.DEAD, Status.LEFT)
        return [r for r in self.peers() if self.status(r.peer) not in lost]

    # -- events -------------------------------------------------------------------------

    def _on_commit(self, entries: list[Entry]) -> None:
        authors = {record_owner(e.document) for e in entries}
        for peer in authors:
            if peer is None:
                continue
            record = self.record(peer)
            if record is None:
                continue
            self._records[peer] = record
            if peer == self._host.replica.peer_id:
                continue
            if self._detector is not None:
                if record.left:
                    self._detector.remove(peer)
                else:
                    self._detector.add(peer)
            self._announce(peer)

    def _announce(self, peer: PeerId) -> None:
        """Fire discovered/lost when whether ``peer`` is present changes."""
        record = self._records.get(peer)
        now = (
            record is not None
            and not record.left
            and self.status(peer) not in (Status.DEAD, Status.LEFT)
        )
        before = self._present.get(peer, False)
        self._present[peer] = now
        if record is not None and now and not before:
            self._host.events.emit(GossipEvents.PEER_DISCOVERED, record)
        elif record is not None and before and not now:
            self._host.events.emit(GossipEvents.PEER_LOST, record)

    # -- epidemic broadcast -------------------------------------------------------------

    def on(self, event: str, handler: Callable[[GossipMessage], Any]) -> Callable[[], None]:
        """``on("message", handler)``: ``handler`` receives each broadcast once.

        Raises:
            FeatureDisabledError: gossip is off.
            ValueError: ``event`` is not ``"message"``.
        """
        self._require()
        if event != "message":
            raise ValueError(f"unknown gossip event {event!r} (only 'message')")
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    def propagate(self, type: str, payload: Any = None, *, ttl: int = 5, fanout: int = 3) -> bytes:
        """Broadcast a signed, ephemeral message; returns its id.

        Args:
            type: a :class:`~crdt_mesh.services.gossip.GossipMessageType` (or another name).
            payload: any CBOR-encodable value.
            ttl: hops it may travel (at most MAX_TTL).
            fanout: peers each hop sends it to (at most MAX_FANOUT).

        Raises:
            FeatureDisabledError: gossip is off.
            ValueError: bad ttl, fanout or type, or a payload too large.
        """
        self._require()
        message_id = self._broadcaster.originate(
            type,
            payload,
            ttl=ttl,
            fanout=fanout,
            created_at=_now_ms(),
            pick=self._pick,
            members=len(self._host.peers),
        )
        self._send_broadcasts()
        return message_id

    def _receive_swim(self, sender: PeerId, frame: bytes) -> None:
        """A failure-detector frame from ``sender``."""
        if self._detector is None:
            return
        dropped = self._detector.dropped
        self._detector.receive(sender, frame, anyio.current_time())
        if self._detector.dropped > dropped:
            self._host.penalise(sender, Offence.JUNK, "a malformed or forged SWIM frame")
        self._after_swim()
        if self._swim_woken is not None:
            self._swim_woken.set()  # its deadlines may have moved

    def _receive_broadcast(self, sender: PeerId, frame: bytes) -> None:
        """A broadcast frame from ``sender``: delivered once if genuine and within bounds."""
        message = self._broadcaster.receive(
            sender, frame, members=len(self._host.peers), now=_now_ms()
        )
        if isinstance(message, Drop):
            self._host.penalise(sender, message.offence, message.reason)
        elif message is not None:
            for handler in list(self._handlers):
                try:
                    handler(message)
                except Exception:
                    log.exception("gossip message handler failed")
            self._host.events.emit(GossipEvents.MESSAGE_RECEIVED, message)
        self._broadcaster.pump(self._pick)
        self._send_broadcasts()

    def _pick(self, count: int, avoid: Collection[PeerId]) -> list[PeerId]:
        """Broadcast targets: linked peers (the active view), drawn at random."""
        return sample_distinct(self._detector_rng, self._host.peers, count, avoid)

    def _send_broadcasts(self) -> None:
        for peer, frame in self._broadcaster.outbox():
            self._host.send_ephemeral(_BROADCAST, peer, frame)

    # -- failure detection --------------------------------------------------------------

    def _send_swim(self) -> None:
        if self._detector is None:
            return
        for peer, frame in self._detector.outbox():
            self._host.send_ephemeral(_SWIM, peer, frame)  # over a link, or not at all

    def _after_swim(self) -> None:
        assert self._detector is not None
        self._send_swim()
        for change in self._detector.changes():
            self._on_member_change(change)

    def _on_member_change(self, change: MemberChange) -> None:
        log.info("peer %s is %s", change.peer.short, change.status.name.lower())
        self._announce(change.peer)

    # -- the loops (run by the mesh) ----------------------------------------------------

    async def run(self, interval: float) -> None:
        """Discovery, failure detection and broadcast rounds, until cancelled."""
        me = self._host.replica.peer_id
        self._detector = FailureDetector(
            self._host.replica.identity,
            incarnation=int(time.time() * 1000),  # a restart starts above any before it
            settings=self.swim_settings,
            rng=self._detector_rng,
            neighbours=lambda: self._host.peers,
        )
        for record in self.peers(include_left=True):
            self._records[record.peer] = record
            if record.peer != me and not record.left:
                self._detector.add(record.peer)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._probe_loop)
            while True:
                await anyio.sleep(interval)
                try:
                    self._broadcaster.tick(self._pick)
                    self._send_broadcasts()
                    await self.maintain()
                    self.steps += 1
                except Exception:  # a maintenance step must never take the mesh down
                    log.exception("gossip maintenance failed")

    async def _probe_loop(self) -> None:
        """Tick the detector at its next deadline, or sooner when a frame arrives (a
        frame can bring an earlier deadline: no polling in between)."""
        detector = self._detector
        assert detector is not None
        while True:
            now = anyio.current_time()
            try:
                detector.tick(now)
                self._after_swim()
            except Exception:
                log.exception("failure detection step failed")
            self._swim_woken = anyio.Event()
            with anyio.move_on_after(max(0.0, detector.next_deadline() - now)):
                await self._swim_woken.wait()

    def _on_link_closed(self, peer: PeerId, how: LinkEnd) -> None:
        """A neighbour whose link ended without a word is suspected; one that was full
        is not dialled again for a while."""
        self.links_ended += 1
        if how is LinkEnd.FULL:
            self._full.pop(peer, None)
            self._full[peer] = anyio.current_time()
            while len(self._full) > _FULL_KEPT:
                del self._full[next(iter(self._full))]  # the oldest first
        detector = self._detector
        if how is not LinkEnd.LOST or detector is None:
            return
        self.links_lost += 1
        detector.lost(peer, anyio.current_time())
        self._after_swim()
        if self._swim_woken is not None:
            self._swim_woken.set()  # a suspicion brings a deadline

    def _full_lately(self, peer: PeerId, now: float) -> bool:
        since = self._full.get(peer)
        if since is None:
            return False
        if now - since < FULL_BACKOFF * self._interval:
            return True
        del self._full[peer]
        return False

    async def maintain(self) -> None:
        """One HyParView-style step: fill the active view; shuffle when it is full."""
        host = self._host
        me = host.replica.peer_id
        active = set(host.peers)
        now = anyio.current_time()
        passive = [
            r
            for r in self.present()
            if r.peer != me
            and r.peer not in active
            and r.peer not in self._dialling
            and r.addresses
            and not self._full_lately(r.peer, now)
        ]
        size = active_size(len(self.present()), host.max_peers)
        host.want_links(size)
        ceiling = link_ceiling(size, host.max_peers)
        if len(active) > ceiling:
            # past the link limit (links kept while the view's size was larger): let
            # the surplus go at once; the other ends, if short, dial someone else
            for peer in host.rng.sample(sorted(active, key=str), len(active) - ceiling):
                await host.disconnect(peer)
            self.shuffles += 1
            return
        # Links others dialled past the size, up to the ceiling, are kept: letting
        # one go makes its other end, if short, dial someone else, who may let one
        # go in turn (idle churn, each link a handshake and a first round).
        if not passive:
            return
        candidate = host.rng.choice(passive)
        if len(active) >= size:
            # A full active view is left alone most of the time (links that carry
            # traffic should be stable); now and then one active peer is swapped for
            # a passive one, so the overlay does not set in stone.
            if host.rng.random() >= self._interval / SHUFFLE_SECONDS:
                return
            victim = host.rng.choice(sorted(active, key=str))
            await host.disconnect(victim)
            self.shuffles += 1
        self._dialling.add(candidate.peer)
        try:
            for address in candidate.addresses:
                try:
                    await host.connect(address)
                    break
                except MeshError as exc:
                    log.info("dial %s at %s failed: %s", candidate.peer.short, address, exc)
            else:  # reachable at none: probe it, or a crash of it may go unnoticed
                if self._detector is not None:
                    self._detector.unreachable(candidate.peer)
        finally:
            self._dialling.discard(candidate.peer)

    def declare_metrics(self, metrics: Metrics) -> None:
        """Declare membership, failure detection and broadcast metrics in ``metrics``."""
        broadcaster = self._broadcaster

        def members() -> list[tuple[tuple[str], float]]:
            detector = self._detector
            return [
                ((status.name.lower(),), len(detector.members(status)) if detector else 0)
                for status in Status
            ]

        def probes() -> list[tuple[tuple[str], float]]:
            counts = self._detector.counts if self._detector else SwimCounts()
            return [
                (("acked",), counts.probes_acked),
                (("acked_indirectly",), counts.probes_acked_indirectly),
                (("failed",), counts.probes_failed),
            ]

        def count(name: str) -> Callable[[], float]:
            return lambda: getattr(self._detector.counts, name) if self._detector else 0

        observe = metrics.observe
        observe(
            "crdt_mesh_members",
            "Other members as this one's failure detector sees them, by status.",
            Kind.GAUGE,
            members,
            ("status",),
        )
        observe(
            "crdt_mesh_swim_probes_total",
            "Probes of members, by result: acked, acked through helpers, or failed.",
            Kind.COUNTER,
            probes,
            ("result",),
        )
        observe(
            "crdt_mesh_swim_suspicions_total",
            "Members this one began to suspect (its probes, or another's word).",
            Kind.COUNTER,
            count("suspicions"),
        )
        observe(
            "crdt_mesh_swim_refutations_total",
            "Suspicions of this member it refuted (with a higher incarnation).",
            Kind.COUNTER,
            count("refutations"),
        )
        observe(
            "crdt_mesh_swim_health",
            "Lifeguard's local health multiplier: 0 is healthy; it grows as this member "
            "misses acks and is suspected (its probes slow down in step).",
            Kind.GAUGE,
            lambda: self._detector.health if self._detector else 0,
        )
        observe(
            "crdt_mesh_broadcasts_total",
            "Broadcasts (gossip.broadcast): frames sent, messages delivered, copies "
            "of delivered ones dropped, and frames dropped as forged or malformed.",
            Kind.COUNTER,
            lambda: [
                (("sent",), broadcaster.sent),
                (("delivered",), broadcaster.delivered),
                (("duplicate",), broadcaster.duplicates),
                (("dropped",), broadcaster.dropped),
            ],
            ("event",),
        )

    def close(self) -> None:
        self._unsubscribe()
        self.board.close()
        for release in self._channels:
            release()
        self._channels = []


def _now_ms() -> int:
    return int(time.time() * 1000)
