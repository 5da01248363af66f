"""Reputation's vocabulary (the service itself is issue 15's work)."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class ReputationEvents(enum.StrEnum):
    """The events reputation fires."""

    UPDATED = "p2p:reputation:updated"
    CHALLENGED = "p2p:reputation:challenged"


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


#: What each event's handlers receive: declared with the service itself (not built yet).
EVENT_PAYLOADS: Mapping[ReputationEvents, tuple[type, ...]] = {}
