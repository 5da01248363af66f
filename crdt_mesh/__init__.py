"""crdt_mesh: peer-to-peer coordination for agents over signed CRDT documents.

Every piece of shared state is a pycrdt document whose transactions are signed,
hash-chained ledger entries in a local LMDB store, kept in step with other peers
by anti-entropy over pluggable transports.
"""

from .config import Feature as Feature
from .config import MeshConfig as MeshConfig
from .errors import (
    ArgumentTypeError as ArgumentTypeError,
)
from .errors import (
    ArgumentValueError as ArgumentValueError,
)
from .errors import (
    AuthenticationError as AuthenticationError,
)
from .errors import (
    ChainError as ChainError,
)
from .errors import (
    ClientIdViolation as ClientIdViolation,
)
from .errors import (
    ClosedError as ClosedError,
)
from .errors import (
    ConfigError as ConfigError,
)
from .errors import (
    FeatureDisabledError as FeatureDisabledError,
)
from .errors import (
    ForkDetected as ForkDetected,
)
from .errors import (
    InvalidDocumentId as InvalidDocumentId,
)
from .errors import (
    InvalidEntry as InvalidEntry,
)
from .errors import (
    InvalidKeyFile as InvalidKeyFile,
)
from .errors import (
    InvalidSignature as InvalidSignature,
)
from .errors import (
    InvalidUpdate as InvalidUpdate,
)
from .errors import (
    LinkClosed as LinkClosed,
)
from .errors import (
    LocalError as LocalError,
)
from .errors import (
    MeshError as MeshError,
)
from .errors import (
    MissingExtra as MissingExtra,
)
from .errors import (
    NotWritable as NotWritable,
)
from .errors import (
    PendingOverflow as PendingOverflow,
)
from .errors import (
    PolicyViolation as PolicyViolation,
)
from .errors import (
    RateLimitExceeded as RateLimitExceeded,
)
from .errors import (
    RemoteError as RemoteError,
)
from .errors import (
    StoreError as StoreError,
)
from .errors import (
    TransportError as TransportError,
)
from .errors import (
    UnknownEvent as UnknownEvent,
)
from .events import EventBus as EventBus
from .identity import Identity as Identity
from .identity import PeerId as PeerId
from .ledger import Acl as Acl
from .ledger import DocumentId as DocumentId
from .ledger import Entry as Entry
from .ledger import EntryKind as EntryKind
from .ledger import ForkProof as ForkProof
from .ledger import Policy as Policy
from .ledger import client_id_for as client_id_for
from .mesh import Mesh as Mesh
from .replica.document import Document as Document
from .replica.pending import PendingLimits as PendingLimits
from .replica.records import DocumentChange as DocumentChange
from .replica.records import Head as Head
from .replica.records import IngestReport as IngestReport
from .replica.records import Rejection as Rejection
from .replica.records import ReplicaSummary as ReplicaSummary
from .replica.replica import Replica as Replica
from .runtime.penalty import Offence as Offence
from .runtime.penalty import Penalties as Penalties
from .runtime.penalty import PenaltySettings as PenaltySettings
from .runtime.transport import Link as Link
from .runtime.transport import Listener as Listener
from .runtime.transport import Transport as Transport
from .store import Durability as Durability

__version__ = "0.1.0"

from .mesh import P2PEvents as P2PEvents
from .services.gossip import GossipEvents as GossipEvents
from .services.gossip import GossipMessage as GossipMessage
from .services.gossip import GossipMessageType as GossipMessageType
from .services.gossip import PeerRecord as PeerRecord
from .services.gossip import SwimSettings as SwimSettings
from .services.memory import FederatedMemoryError as FederatedMemoryError
from .services.memory import Memory as Memory
from .services.memory import MemoryEvents as MemoryEvents
from .services.memory import MemoryHit as MemoryHit
from .services.memory import MemoryPrivacyLevel as MemoryPrivacyLevel
from .services.memory import MemoryRef as MemoryRef
from .services.memory import MemoryRequest as MemoryRequest
from .services.reputation import Challenge as Challenge
from .services.reputation import ChallengeStatus as ChallengeStatus
from .services.reputation import Outcome as Outcome
from .services.reputation import ReputationError as ReputationError
from .services.reputation import ReputationEvents as ReputationEvents
from .services.reputation import ReputationScore as ReputationScore
from .services.reputation import ReputationSettings as ReputationSettings
from .services.reputation import ReputationUpdate as ReputationUpdate
from .services.tasks import Announcement as Announcement
from .services.tasks import Bid as Bid
from .services.tasks import NegotiationConfig as NegotiationConfig
from .services.tasks import NegotiationError as NegotiationError
from .services.tasks import TaskConfig as TaskConfig
from .services.tasks import TaskCoordinationMode as TaskCoordinationMode
from .services.tasks import TaskEvents as TaskEvents
from .services.tasks import TaskPriority as TaskPriority
from .services.tasks import TaskRef as TaskRef
from .services.tasks import TaskState as TaskState
from .services.tasks import TaskView as TaskView

__all__ = [
    "Acl",
    "Announcement",
    "ArgumentTypeError",
    "ArgumentValueError",
    "AuthenticationError",
    "Bid",
    "ChainError",
    "Challenge",
    "ChallengeStatus",
    "ClientIdViolation",
    "ClosedError",
    "ConfigError",
    "Document",
    "DocumentChange",
    "DocumentId",
    "Durability",
    "Entry",
    "EntryKind",
    "EventBus",
    "Feature",
    "FeatureDisabledError",
    "FederatedMemoryError",
    "ForkDetected",
    "ForkProof",
    "GossipEvents",
    "GossipMessage",
    "GossipMessageType",
    "Head",
    "Identity",
    "IngestReport",
    "InvalidDocumentId",
    "InvalidEntry",
    "InvalidKeyFile",
    "InvalidSignature",
    "InvalidUpdate",
    "Link",
    "LinkClosed",
    "Listener",
    "LocalError",
    "Memory",
    "MemoryEvents",
    "MemoryHit",
    "MemoryPrivacyLevel",
    "MemoryRef",
    "MemoryRequest",
    "Mesh",
    "MeshConfig",
    "MeshError",
    "MissingExtra",
    "NegotiationConfig",
    "NegotiationError",
    "NotWritable",
    "Offence",
    "Outcome",
    "P2PEvents",
    "PeerId",
    "PeerRecord",
    "Penalties",
    "PenaltySettings",
    "PendingLimits",
    "PendingOverflow",
    "Policy",
    "PolicyViolation",
    "RateLimitExceeded",
    "Rejection",
    "RemoteError",
    "Replica",
    "ReplicaSummary",
    "ReputationError",
    "ReputationEvents",
    "ReputationScore",
    "ReputationSettings",
    "ReputationUpdate",
    "StoreError",
    "SwimSettings",
    "TaskConfig",
    "TaskCoordinationMode",
    "TaskEvents",
    "TaskPriority",
    "TaskRef",
    "TaskState",
    "TaskView",
    "Transport",
    "TransportError",
    "UnknownEvent",
    "client_id_for",
]
