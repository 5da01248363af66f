"""Federated memory: memories whose replication scope is their privacy level.

model: levels, memories, channels, organizations, errors, event names · rules: document
names, record codecs, sealing at rest, filters and ranking (pure) · board: commands and
views over one replica (clock injected), and the read policy · service: ``mesh.memory``.
"""

from .board import MemoryBoard as MemoryBoard
from .model import EVENT_PAYLOADS as EVENT_PAYLOADS
from .model import Channel as Channel
from .model import FederatedMemoryError as FederatedMemoryError
from .model import Memory as Memory
from .model import MemoryEvents as MemoryEvents
from .model import MemoryHit as MemoryHit
from .model import MemoryPrivacyLevel as MemoryPrivacyLevel
from .model import MemoryRef as MemoryRef
from .model import MemoryRequest as MemoryRequest
from .model import Organization as Organization
from .service import MemoryService as MemoryService

__all__ = [
    "EVENT_PAYLOADS",
    "Channel",
    "FederatedMemoryError",
    "Memory",
    "MemoryBoard",
    "MemoryEvents",
    "MemoryHit",
    "MemoryPrivacyLevel",
    "MemoryRef",
    "MemoryRequest",
    "MemoryService",
    "Organization",
]
