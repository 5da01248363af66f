"""The composition root: a runtime, and the services the configuration enables over it.

    async with Mesh(replica, transport, listen="mem://a", peers=["mem://b"]) as mesh:
        ...   # write to replica documents; they reach the peers
        mesh.gossip.join(capabilities=["code-review"])
        await mesh.tasks.announce("review", {"capabilities": ["code-review"]})

:class:`Mesh` is what users hold. It builds a
:class:`~crdt_mesh.runtime.runtime.Runtime` (links, sync, timers, events), then
each service over the runtime's narrow host interface, and hands the services
what they need of each other through their constructors (task negotiation gets
membership from gossip). The runtime imports no service; services import no
runtime, only its host interface.

The replica is used from the event loop's thread only (it is not thread-safe);
write to its documents from async code running in the mesh's event loop.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from types import TracebackType

from .config import Feature, MeshConfig
from .events import EventBus
from .identity import PeerId
from .metrics import Metrics
from .replica.metrics import declare_replica_metrics
from .replica.replica import Replica
from .runtime.metrics import declare_runtime_metrics
from .runtime.penalty import Offence, Penalties
from .runtime.runtime import Runtime
from .runtime.transport import Transport
from .services.gossip import GossipEvents, GossipService, SwimSettings
from .services.gossip.swim import Status
from .services.memory import MemoryEvents, MemoryService
from .services.reputation import ReputationEvents, ReputationService, ReputationSettings
from .services.tasks import TaskEvents, TaskService


class P2PEvents(enum.StrEnum):
    """Every event name of the mission, as each service names it."""

    TASK_ANNOUNCED = TaskEvents.ANNOUNCED.value
    BID_RECEIVED = TaskEvents.BID_RECEIVED.value
    TASK_ASSIGNED = TaskEvents.ASSIGNED.value
    PEER_DISCOVERED = GossipEvents.PEER_DISCOVERED.value
    PEER_LOST = GossipEvents.PEER_LOST.value
    MESSAGE_RECEIVED = GossipEvents.MESSAGE_RECEIVED.value
    MEMORY_SHARED = MemoryEvents.SHARED.value
    MEMORY_REQUESTED = MemoryEvents.REQUESTED.value
    REPUTATION_UPDATED = ReputationEvents.UPDATED.value
    REPUTATION_CHALLENGED = ReputationEvents.CHALLENGED.value
    REPUTATION_DECIDED = ReputationEvents.DECIDED.value  # (a verdict: the seed lacks it)


class Mesh:
    """Runs sync between ``replica`` and its peers over ``transport``, with the services.

    Args:
        replica: the local replica (the mesh does not close it).
        transport: how to reach peers (default: the transport of each address's
            scheme, found in the registry: ``tcp://``, ``mem://``, your own).
        listen: an address to accept links on, or None.
        peers: addresses to dial (and redial with backoff while the mesh runs).
        interval: seconds between anti-entropy rounds on each dialled link.
        push_fanout: peers that get each fresh local entry at once.
        max_peers: links kept at once; a link beyond it is closed at once.
        seed: for the random choices (push targets, backoff jitter).
        config: the ``P2P_*`` settings. When given, it supplies the listen port,
            bootstrap peers and max peers that are not passed
            explicitly, and with ``P2P_ENABLED`` off the mesh does no P2P work at
            all: no listener, no dialling, no timers. Its flags say which services
            run (without a config, all of them).
        swim: failure-detection timings (default: the gossip interval as the period).
        reputation: how reputation scores (half-life, pre-trusted peers).
        penalties: the table of misbehaviour (default: a fresh one); share one
            between meshes of one process to refuse a peer everywhere at once.
        rounds_per_second: rounds a peer may open on one link per second (a burst of
            twice as many); more is a budget overrun. Default: four per ``interval``,
            at least 20.
        metrics: keep the metrics of :attr:`metrics` (False: none is declared, and
            nothing is recorded as entries commit).
    """

    def __init__(
        self,
        replica: Replica,
        transport: Transport | None = None,
        *,
        listen: str | None = None,
        peers: Sequence[str] = (),
        interval: float = 5.0,
        push_fanout: int = 3,
        max_peers: int | None = None,
        seed: int | None = None,
        config: MeshConfig | None = None,
        swim: SwimSettings | None = None,
        penalties: Penalties | None = None,
        rounds_per_second: float | None = None,
        reputation: ReputationSettings | None = None,
        metrics: bool = True,
    ) -> None:
        self.runtime = Runtime(
            replica,
            transport,
            listen=listen,
            peers=peers,
            interval=interval,
            push_fanout=push_fanout,
            max_peers=max_peers,
            seed=seed,
            config=config,
            penalties=penalties,
            rounds_per_second=rounds_per_second,
        )
        # every name of the mission, those of services still to come included
        self.runtime.events.register(*P2PEvents)
        #: membership and discovery (see :mod:`crdt_mesh.services.gossip`)
        self.gossip = GossipService(self.runtime, swim)
        #: task negotiation (see :mod:`crdt_mesh.services.tasks`)
        self.tasks = TaskService(self.runtime, capabilities=self._capabilities_of)
        #: federated memory (see :mod:`crdt_mesh.services.memory`)
        self.memory = MemoryService(self.runtime)
        #: reputation (see :mod:`crdt_mesh.services.reputation`): records on the tasks
        self.reputation = ReputationService(
            self.runtime,
            self.tasks.board,
            capabilities=self._capabilities_of,
            peers=lambda: [r.peer for r in self.gossip.board.peers()],
            alive=self._alive,
            settings=reputation,
        )
        if self.runtime.config is None or self.runtime.config.enables(Feature.REPUTATION):
            # task selection's reputation criterion reads it (the close pins the scores)
            self.tasks.set_reputation(self.reputation)
        #: what the mesh tells an operator (``crdt_mesh.prometheus`` serves it)
        self.metrics = Metrics()
        self._stop_metrics: Callable[[], None] = lambda: None
        if metrics:
            self._stop_metrics = declare_replica_metrics(self.metrics, replica)
            declare_runtime_metrics(self.metrics, self.runtime)
            for service in (self.gossip, self.tasks, self.memory, self.reputation):
                service.declare_metrics(self.metrics)

    def _alive(self, peer: PeerId) -> bool | None:
        status = self.gossip.status(peer)
        return None if status is None else status is Status.ALIVE

    def _capabilities_of(self, peer: PeerId) -> tuple[str, ...]:
        record = self.gossip.record(peer)
        return record.capabilities if record is not None else ()

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> Mesh:
        await self.runtime.__aenter__()
        if self.runtime.config is not None and self.runtime.config.enables(Feature.GOSSIP):
            self.gossip.start()
        self.memory.start()
        self.reputation.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._stop_metrics()
        self.gossip.close()
        self.tasks.close()
        self.memory.close()
        self.reputation.close()
        return await self.runtime.__aexit__(exc_type, exc, tb)

    # -- the runtime, as users see it --------------------------------------------------------

    @property
    def replica(self) -> Replica:
        return self.runtime.replica

    @property
    def transport(self) -> Transport:
        return self.runtime.transport

    @property
    def config(self) -> MeshConfig | None:
        return self.runtime.config

    @property
    def active(self) -> bool:
        """False when the config's ``P2P_ENABLED`` is off: the mesh does no P2P work."""
        return self.runtime.active

    @property
    def events(self) -> EventBus:
        """The event bus: ``mesh.events.on(P2PEvents.PEER_DISCOVERED, handler)``."""
        return self.runtime.events

    @property
    def address(self) -> str | None:
        """The address this mesh listens on (with the port chosen, for TCP port 0)."""
        return self.runtime.address

    @property
    def peers(self) -> list[PeerId]:
        """Peers with a live link."""
        return self.runtime.peers

    @property
    def interval(self) -> float:
        return self.runtime.interval

    @property
    def max_peers(self) -> int:
        return self.runtime.max_peers

    @property
    def rng(self) -> random.Random:
        return self.runtime.rng

    @property
    def penalties(self) -> Penalties:
        """Misbehaviour counted per peer (see docs/security.md)."""
        return self.runtime.penalties

    @property
    def dropped_links(self) -> int:
        """Links closed because the peer broke the protocol."""
        return self.runtime.dropped_links

    @property
    def rejected_inputs(self) -> int:
        """Inputs refused at ingest (bad signatures, chains, policies ...)."""
        return self.runtime.rejected_inputs

    @property
    def refused_links(self) -> int:
        """Links beyond ``max_peers`` (served one round, or refused at once)."""
        return self.runtime.refused_links

    @property
    def failed_dials(self) -> int:
        """Dials of the bootstrap peers that failed (warned about once per episode)."""
        return self.runtime.failed_dials

    @property
    def refused_peers(self) -> int:
        """Links closed at once because their peer is refused."""
        return self.runtime.refused_peers

    async def connect(self, address: str) -> PeerId:
        """Dial ``address`` once and keep the link until it closes; returns the peer.

        Raises:
            TransportError: the dial failed.
        """
        return await self.runtime.connect(address)

    async def disconnect(self, peer: PeerId) -> None:
        """Close the link to ``peer``, if there is one."""
        await self.runtime.disconnect(peer)

    async def sync_now(self) -> None:
        """Start a round of anti-entropy on every dialled link now."""
        await self.runtime.sync_now()

    def penalise(
        self, peer: PeerId, offence: Offence, reason: str = "", *, weight: float | None = None
    ) -> None:
        """Count ``offence`` against ``peer`` (see :meth:`Runtime.penalise`)."""
        self.runtime.penalise(peer, offence, reason, weight=weight)


__all__ = ["Mesh", "P2PEvents"]
