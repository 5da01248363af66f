"""Decentralised task negotiation (Contract Net over per-participant sections).

model: values, configuration, errors, event names · rules: selection, sealed-bid
crypto, codecs (pure) · board: commands and views over one replica (clock
injected) · service: ``mesh.tasks``, the async shell.
"""

from .board import TaskBoard as TaskBoard
from .model import CRITERIA as CRITERIA
from .model import EVENT_PAYLOADS as EVENT_PAYLOADS
from .model import Announcement as Announcement
from .model import Bid as Bid
from .model import NegotiationConfig as NegotiationConfig
from .model import NegotiationError as NegotiationError
from .model import RejectedBid as RejectedBid
from .model import ReputationProvider as ReputationProvider
from .model import TaskConfig as TaskConfig
from .model import TaskCoordinationMode as TaskCoordinationMode
from .model import TaskEvents as TaskEvents
from .model import TaskPriority as TaskPriority
from .model import TaskRef as TaskRef
from .model import TaskState as TaskState
from .model import TaskView as TaskView
from .rules import neutral_reputation as neutral_reputation
from .rules import select as select
from .service import TaskService as TaskService

__all__ = [
    "CRITERIA",
    "EVENT_PAYLOADS",
    "Announcement",
    "Bid",
    "NegotiationConfig",
    "NegotiationError",
    "RejectedBid",
    "ReputationProvider",
    "TaskBoard",
    "TaskConfig",
    "TaskCoordinationMode",
    "TaskEvents",
    "TaskPriority",
    "TaskRef",
    "TaskService",
    "TaskState",
    "TaskView",
    "neutral_reputation",
    "select",
]
