"""The mission's services: thin views and commands over replicated documents."""

from .gossip import GossipService as GossipService
from .gossip import PeerRecord as PeerRecord

__all__ = ["GossipService", "PeerRecord"]
