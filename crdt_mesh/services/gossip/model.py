"""Membership's vocabulary: peer records, where they live, message kinds, event names."""

from __future__ import annotations

import enum
from dataclasses import dataclass

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


def record_document(peer: PeerId) -> DocumentId:
    """The document in which ``peer`` publishes its record (only it may write it)."""
    return DocumentId(Policy.OWNER, RECORD_DOCUMENT, peer)


def record_owner(document: DocumentId) -> PeerId | None:
    """Whose record ``document`` is (None: not a peer record)."""
    if document.policy is Policy.OWNER and document.name == RECORD_DOCUMENT:
        return document.owner
    return None
