"""Federated memory's vocabulary (the service itself is issue 14's work)."""

from __future__ import annotations

import enum
from collections.abc import Mapping


class MemoryPrivacyLevel(enum.StrEnum):
    """Who may read a memory."""

    PRIVATE = "private"  # this agent only
    TEAM = "team"  # members of a team
    ORGANIZATION = "organization"  # members of an organization
    PUBLIC = "public"  # the whole network
    ENCRYPTED = "encrypted"  # shared, readable with a group key


class MemoryEvents(enum.StrEnum):
    """The events federated memory fires."""

    SHARED = "p2p:memory:shared"
    REQUESTED = "p2p:memory:requested"


#: What each event's handlers receive: declared with the service itself (not built yet).
EVENT_PAYLOADS: Mapping[MemoryEvents, tuple[type, ...]] = {}
