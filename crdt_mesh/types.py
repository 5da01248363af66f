"""Shared types of the mission's services (names as in the P2P foundation design)."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class TaskCoordinationMode(enum.StrEnum):
    """How a task is allocated."""

    CENTRALIZED = "centralized"  # one coordinator decides
    HYBRID = "hybrid"  # a named coordinator awards among P2P bids
    P2P_NEGOTIATED = "p2p_negotiated"  # open bids, the announcer selects
    P2P_AUCTIONED = "p2p_auctioned"  # sealed bids, opened after the close


class MemoryPrivacyLevel(enum.StrEnum):
    """Who may read a memory."""

    PRIVATE = "private"  # this agent only
    TEAM = "team"  # members of a team
    ORGANIZATION = "organization"  # members of an organization
    PUBLIC = "public"  # the whole network
    ENCRYPTED = "encrypted"  # shared, readable with a group key


class GossipMessageType(enum.StrEnum):
    """Kinds of epidemic broadcast messages."""

    PEER_ANNOUNCEMENT = "peer-announcement"
    TASK_ANNOUNCEMENT = "task-announcement"
    MEMORY_SHARE = "memory-share"
    REPUTATION_UPDATE = "reputation-update"
    HEARTBEAT = "heartbeat"


_COMPONENTS = (
    "overall",
    "task_completion",
    "response_quality",
    "timeliness",
    "collaboration",
    "uptime",
)


@dataclass(frozen=True, slots=True)
class ReputationScore:
    """A peer's reputation: each component, and each domain's expertise, in [0, 1]."""

    overall: float = 0.0
    task_completion: float = 0.0
    response_quality: float = 0.0
    timeliness: float = 0.0
    collaboration: float = 0.0
    uptime: float = 0.0
    expertise: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _COMPONENTS:
            _check_unit(name, getattr(self, name))
        for domain, value in self.expertise.items():
            if not isinstance(domain, str) or not domain:
                raise ValueError("expertise domains are non-empty strings")
            _check_unit(f"expertise[{domain!r}]", value)
        object.__setattr__(self, "expertise", MappingProxyType(dict(self.expertise)))


def _check_unit(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in [0, 1], not {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], not {value!r}")
