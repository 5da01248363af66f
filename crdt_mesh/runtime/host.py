"""What a service gets from the runtime: the narrow door services come in by.

A service is built by the composition root (:class:`crdt_mesh.Mesh`) over a
:class:`Host`, and never sees the runtime itself: it reads and writes through the
replica, fires events on the bus, sends ephemeral frames on a channel it owns,
runs its loops in the host's task group, and reports what it can prove against a
peer. What other services it needs (tasks needs membership) it is handed by the
root, through its constructor.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from ..config import MeshConfig
from ..events import EventBus
from ..identity import PeerId
from ..replica.replica import Replica
from .penalty import Offence

#: What handles the frames of an ephemeral channel: ``handler(sender, data)``.
EphemeralHandler = Callable[[PeerId, bytes], None]


class LinkEnd(enum.Enum):
    """How a link of the active view ended, as far as this side can tell."""

    #: without a word: a crash, a shutdown, a fault (the peer may be gone)
    LOST = "lost"
    #: a side closed it on purpose and stays in the mesh (a shuffle, a surplus)
    PARTED = "parted"
    #: the peer's view was full: it served one round and closed
    FULL = "full"


def link_ceiling(target: int, max_peers: int) -> int:
    """Links kept at once for an active view aimed at ``target``: half as many again
    (links others dialled while this view was short), never past ``max_peers``; a
    link past it is served one round and closed."""
    return min(max_peers, target + math.ceil(target / 2))


class Host(Protocol):
    """The runtime as a service sees it (:class:`~crdt_mesh.runtime.runtime.Runtime`)."""

    @property
    def replica(self) -> Replica:
        """The local replica: the service's state lives in its documents."""
        ...

    @property
    def events(self) -> EventBus:
        """Where the service fires its events."""
        ...

    @property
    def config(self) -> MeshConfig | None:
        """The ``P2P_*`` settings (None: everything on, defaults)."""
        ...

    @property
    def interval(self) -> float:
        """Seconds between anti-entropy rounds."""
        ...

    @property
    def rng(self) -> random.Random:
        """The runtime's seeded randomness."""
        ...

    @property
    def peers(self) -> list[PeerId]:
        """Peers with a live link (the active view)."""
        ...

    @property
    def address(self) -> str | None:
        """The address the runtime listens on."""
        ...

    @property
    def max_peers(self) -> int:
        """The most links kept at once."""
        ...

    def want_links(self, count: int) -> None:
        """Aim the active view at ``count`` links (at most ``max_peers``)."""
        ...

    @property
    def running(self) -> bool:
        """Whether the runtime is up (its tasks can be spawned)."""
        ...

    def spawn(self, function: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Run a coroutine function in the runtime's task group."""
        ...

    def on_ephemeral(self, channel: bytes, handler: EphemeralHandler) -> Callable[[], None]:
        """Own ``channel``: its ephemeral frames go to ``handler``."""
        ...

    def send_ephemeral(
        self, channel: bytes, peer: PeerId, data: bytes, addresses: Sequence[str] = ()
    ) -> None:
        """Send an ephemeral frame on ``channel`` (best effort)."""
        ...

    def penalise(
        self, peer: PeerId, offence: Offence, reason: str = "", *, weight: float | None = None
    ) -> None:
        """Count misbehaviour the service can prove against ``peer``."""
        ...

    async def connect(self, address: str) -> PeerId:
        """Dial ``address`` and keep the link."""
        ...

    async def disconnect(self, peer: PeerId) -> None:
        """Close the link to ``peer`` on purpose (the peer is told so)."""
        ...

    def on_link_closed(self, handler: Callable[[PeerId, LinkEnd], None]) -> Callable[[], None]:
        """Call ``handler(peer, how)`` when the active view's link to ``peer`` ends."""
        ...


__all__ = ["EphemeralHandler", "Host", "LinkEnd", "link_ceiling"]
