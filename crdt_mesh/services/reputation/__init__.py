"""Reputation (issue 15): so far its vocabulary only."""

from .model import EVENT_PAYLOADS as EVENT_PAYLOADS
from .model import ReputationEvents as ReputationEvents
from .model import ReputationScore as ReputationScore

__all__ = ["EVENT_PAYLOADS", "ReputationEvents", "ReputationScore"]
