"""The mission's services: thin views and commands over replicated documents."""

from .gossip.service import GossipService as GossipService
from .gossip.service import PeerRecord as PeerRecord

__all__ = ["GossipService", "PeerRecord"]
