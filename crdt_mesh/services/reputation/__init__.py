"""Reputation: outcomes and ratings recorded on the tasks they are about, Beta scores
with forgetting that every replica computes alike, EigenTrust weighting of raters
from pre-trusted peers, challenges decided by a jury drawn from the ledger. See
docs/reputation.md."""

from .board import ReputationBoard as ReputationBoard
from .model import EVENT_PAYLOADS as EVENT_PAYLOADS
from .model import Challenge as Challenge
from .model import ChallengeStatus as ChallengeStatus
from .model import Outcome as Outcome
from .model import Record as Record
from .model import ReputationError as ReputationError
from .model import ReputationEvents as ReputationEvents
from .model import ReputationScore as ReputationScore
from .model import ReputationSettings as ReputationSettings
from .model import ReputationUpdate as ReputationUpdate
from .model import Vote as Vote
from .service import Recommendation as Recommendation
from .service import ReputationService as ReputationService

__all__ = [
    "EVENT_PAYLOADS",
    "Challenge",
    "ChallengeStatus",
    "Outcome",
    "Recommendation",
    "Record",
    "ReputationBoard",
    "ReputationError",
    "ReputationEvents",
    "ReputationScore",
    "ReputationService",
    "ReputationSettings",
    "ReputationUpdate",
    "Vote",
]
