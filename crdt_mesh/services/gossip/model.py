"""Membership's vocabulary: peer records, where they live, broadcasts, event names."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...identity import PeerId
from ...ledger import DocumentId, Policy

RECORD_DOCUMENT = "mesh:peer"


class GossipEvents(enum.StrEnum):
    """The events membership and broadcast fire."""

    PEER_DISCOVERED = "p2p:peer:discovered"  # payload: the PeerRecord
    PEER_LOST = "p2p:peer:lost"  # payload: the PeerRecord
    MESSAGE_RECEIVED = "p2p:gossip:message"  # payload: the GossipMessage


class GossipMessageType(enum.StrEnum):
    """Kinds of epidemic broadcast messages."""

    PEER_ANNOUNCEMENT = "peer-announcement"
    TASK_ANNOUNCEMENT = "task-announcement"
    MEMORY_SHARE = "memory-share"
    REPUTATION_UPDATE = "reputation-update"
    HEARTBEAT = "heartbeat"


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """One peer's published record (a view: built from its replicated document)."""

    peer: PeerId
    capabilities: tuple[str, ...]
    addresses: tuple[str, ...]
    started_at: int
    left: bool


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """A broadcast as a receiver sees it: verified, delivered once."""

    id: bytes
    origin: PeerId
    type: str
    payload: Any
    created_at: int
    ttl: int  # hops it may still travel after this one
    hops: int  # hops it travelled to get here


#: What each event's handlers receive (one of these types).
EVENT_PAYLOADS: Mapping[GossipEvents, tuple[type, ...]] = {
    GossipEvents.PEER_DISCOVERED: (PeerRecord,),
    GossipEvents.PEER_LOST: (PeerRecord,),
    GossipEvents.MESSAGE_RECEIVED: (GossipMessage,),
}


def record_document(peer: PeerId) -> DocumentId:
    """The document in which ``peer`` publishes its record (only it may write it)."""
    return DocumentId(Policy.OWNER, RECORD_DOCUMENT, peer)


def record_owner(document: DocumentId) -> PeerId | None:
    """Whose record ``document`` is (None: not a peer record)."""
    if document.policy is Policy.OWNER and document.name == RECORD_DOCUMENT:
        return document.owner
    return None
