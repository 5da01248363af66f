"""Membership, discovery, failure detection and epidemic broadcast.

model: records, message kinds, event names · rules: the SWIM/Lifeguard detector
(:mod:`.swim`), the broadcaster (:mod:`.epidemic`), sampling · board: the peer set
over one replica · service: ``mesh.gossip``, the async shell.
"""

from .board import MembershipBoard as MembershipBoard
from .board import peer_records as peer_records
from .board import read_record as read_record
from .board import write_record as write_record
from .epidemic import MAX_BROADCAST as MAX_BROADCAST
from .epidemic import MAX_FANOUT as MAX_FANOUT
from .epidemic import MAX_TTL as MAX_TTL
from .epidemic import Broadcaster as Broadcaster
from .model import EVENT_PAYLOADS as EVENT_PAYLOADS
from .model import RECORD_DOCUMENT as RECORD_DOCUMENT
from .model import GossipEvents as GossipEvents
from .model import GossipMessage as GossipMessage
from .model import GossipMessageType as GossipMessageType
from .model import PeerRecord as PeerRecord
from .model import record_document as record_document
from .service import GossipService as GossipService
from .swim import FailureDetector as FailureDetector
from .swim import Status as Status
from .swim import SwimSettings as SwimSettings

__all__ = [
    "EVENT_PAYLOADS",
    "MAX_BROADCAST",
    "MAX_FANOUT",
    "MAX_TTL",
    "RECORD_DOCUMENT",
    "Broadcaster",
    "FailureDetector",
    "GossipEvents",
    "GossipMessage",
    "GossipMessageType",
    "GossipService",
    "MembershipBoard",
    "PeerRecord",
    "Status",
    "SwimSettings",
    "peer_records",
    "read_record",
    "record_document",
    "write_record",
]
