"""Federated memory (issue 14): so far its vocabulary only."""

from .model import EVENT_PAYLOADS as EVENT_PAYLOADS
from .model import MemoryEvents as MemoryEvents
from .model import MemoryPrivacyLevel as MemoryPrivacyLevel

__all__ = ["EVENT_PAYLOADS", "MemoryEvents", "MemoryPrivacyLevel"]
