"""Federated memory (issue 14): so far its vocabulary only."""

from .model import MemoryEvents as MemoryEvents
from .model import MemoryPrivacyLevel as MemoryPrivacyLevel

__all__ = ["MemoryEvents", "MemoryPrivacyLevel"]
