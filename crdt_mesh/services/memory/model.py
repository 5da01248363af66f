"""Federated memory's vocabulary: privacy levels, memories, channels, organizations.

Where each kind of record lives (names are what the read policy reads):

==============================  ==========  ======================================
document                        policy      who may read it
==============================  ==========  ======================================
``mem:channel:<name>``          members     the channel's members (its ACL)
``mem:organization:<name>``     members     the organization's members (its ACL)
``mem:team:<admin>:<ch>:<id>``  owner       the members of channel ``<ch>``
``mem:org:<admin>:<org>:<id>``  owner       the members of organization ``<org>``
``mem:public:<id>``             owner       anyone
``mem:private:<id>``            local       nobody else (encrypted at rest)
``<memory>:forgotten``          owner       whoever may read the memory
==============================  ==========  ======================================

One document per memory (its author's section): forgetting purges that one feed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import LocalError
from ...identity import PeerId
from ...ledger import DocumentId, Policy

PREFIX = "mem:"
FORGOTTEN = ":forgotten"


class MemoryPrivacyLevel(enum.StrEnum):
    """Who may read a memory."""

    PRIVATE = "private"  # this agent only
    TEAM = "team"  # members of a team
    ORGANIZATION = "organization"  # members of an organization
    PUBLIC = "public"  # the whole network
    ENCRYPTED = "encrypted"  # shared, readable with a group key


class MemoryEvents(enum.StrEnum):
    """The events federated memory fires."""

    SHARED = "p2p:memory:shared"  # payload: the Memory, where it becomes readable
    REQUESTED = "p2p:memory:requested"  # payload: the MemoryRequest, on the asked peer


class FederatedMemoryError(LocalError, ValueError):
    """A memory call the rules refuse (unknown channel, not a member, not the author ...);
    nothing was written."""


@dataclass(frozen=True, slots=True)
class MemoryRef:
    """Names one memory: the document its author keeps it in."""

    document: DocumentId

    @property
    def author(self) -> PeerId:
        assert self.document.owner is not None or self.document.policy is Policy.LOCAL
        return self.document.owner  # type: ignore[return-value]

    def __str__(self) -> str:
        return self.document.text


@dataclass(frozen=True, slots=True)
class Memory:
    """A memory as this replica may read it."""

    ref: MemoryRef
    author: PeerId
    privacy: MemoryPrivacyLevel
    content: str
    tags: tuple[str, ...] = ()
    channel: str | None = None
    organization: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class MemoryHit:
    """A query result: the memory and its score (higher ranks first)."""

    memory: Memory
    score: float


@dataclass(frozen=True, slots=True)
class Channel:
    """A team: its admins change its members; memories reach its members only.

    ``admin`` is the peer that created it (its name is part of every memory's
    document); ``admins`` all who may change it, the creator among them.
    """

    name: str
    admin: PeerId
    members: frozenset[PeerId]
    organization: str | None = None
    admins: frozenset[PeerId] = frozenset()


@dataclass(frozen=True, slots=True)
class Organization:
    """A signed set of members and channels; its memories reach every member of it
    (and of its channels) and nobody else. ``admin``: its creator."""

    name: str
    admin: PeerId
    members: frozenset[PeerId]
    admins: frozenset[PeerId] = frozenset()
    channels: frozenset[tuple[PeerId, str]] = frozenset()  # (creator, name)


@dataclass(frozen=True, slots=True)
class MemoryRequest:
    """A federated query this peer was asked (the payload of ``p2p:memory:requested``)."""

    asker: PeerId
    sender: PeerId
    spec: Mapping[str, Any]
    hops_left: int


#: What each event's handlers receive (one of these types).
EVENT_PAYLOADS: Mapping[MemoryEvents, tuple[type, ...]] = {
    MemoryEvents.SHARED: (Memory,),
    MemoryEvents.REQUESTED: (MemoryRequest,),
}
