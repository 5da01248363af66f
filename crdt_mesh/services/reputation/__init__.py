"""Reputation (issue 15): so far its vocabulary only."""

from .model import ReputationEvents as ReputationEvents
from .model import ReputationScore as ReputationScore

__all__ = ["ReputationEvents", "ReputationScore"]
