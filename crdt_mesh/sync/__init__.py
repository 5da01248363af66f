"""The sync protocol, sans-IO: anti-entropy by range-based set reconciliation.

No sockets, clocks, threads or stores in here: values in, values out. See
:class:`SyncSession` for the state machine and ``docs/protocol.md`` for the wire.
"""

from .index import KEY_MAX as KEY_MAX
from .index import FeedIndex as FeedIndex
from .index import FeedItem as FeedItem
from .messages import MAX_FRAME as MAX_FRAME
from .messages import PROTOCOL_VERSION as PROTOCOL_VERSION
from .messages import ProtocolError as ProtocolError
from .session import BroadcastReceived as BroadcastReceived
from .session import EntriesReceived as EntriesReceived
from .session import Event as Event
from .session import NeedEntries as NeedEntries
from .session import PeerHello as PeerHello
from .session import RoundFinished as RoundFinished
from .session import RoundStarted as RoundStarted
from .session import SyncSession as SyncSession

__all__ = [
    "KEY_MAX",
    "MAX_FRAME",
    "PROTOCOL_VERSION",
    "BroadcastReceived",
    "EntriesReceived",
    "Event",
    "FeedIndex",
    "FeedItem",
    "NeedEntries",
    "PeerHello",
    "ProtocolError",
    "RoundFinished",
    "RoundStarted",
    "SyncSession",
]
