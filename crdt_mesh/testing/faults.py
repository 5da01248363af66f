"""One fault model for every simulated network: the deterministic simulator
(:class:`~crdt_mesh.testing.SimulatedMesh`) and the in-memory transport
(``transports.memory.MemoryNetwork``) both take a :class:`Faults`.

Importing this module needs nothing beyond the library (no hypothesis, no pytest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Faults:
    """What the network does to frames: probabilities per frame, a delay, a lifetime.

    ``loss``, ``duplication`` and ``reorder`` apply everywhere; ``delay`` (seconds, at
    most, per frame) is the memory transport's, which runs in real time; ``die_after``
    makes each link die after between that many and twice as many frames (a link
    that dies mid-batch).
    """

    loss: float = 0.0
    duplication: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    die_after: int | None = None

    def __post_init__(self) -> None:
        for name in ("loss", "duplication", "reorder"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} is a probability in [0, 1), not {value!r}")
        if not isinstance(self.delay, int | float) or not (
            math.isfinite(self.delay) and self.delay >= 0
        ):
            raise ValueError(f"delay is a number of seconds >= 0, not {self.delay!r}")
        if self.die_after is not None and (
            not isinstance(self.die_after, int) or self.die_after < 1
        ):
            raise ValueError(f"die_after is None or an int >= 1, not {self.die_after!r}")


#: A perfect network.
NO_FAULTS = Faults()

__all__ = ["NO_FAULTS", "Faults"]
