"""Epidemic broadcast of signed, ephemeral messages. Sans-IO.

A message is signed by its origin and identified by the hash of its body; it
is not stored in the ledger (DESIGN invariant 7). A member that receives it
for the first time delivers it (once: ids are remembered) and, while its TTL
in hops lasts, pushes it to ``fanout`` random members in each of its next
``rounds`` gossip rounds: the first push at once (:meth:`Broadcaster.pump`),
the others on the gossip timer (:meth:`Broadcaster.tick`). Pushing for a few
rounds rather than once is what takes reach from the ~94% of a single push
with fanout 3 (1 - e^-3) to every member: the chance that a member is missed
falls as e^-(fanout x rounds).

The core chooses no peers itself: the shell passes a ``pick(count, avoid)``
that draws members it may send to (from its active view in a mesh; from the
live members in a simulation).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import cbor2
import nacl.bindings
import nacl.exceptions

from .identity import Identity, PeerId

#: ``pick(count, avoid)``: up to ``count`` distinct members to send to, none of ``avoid``.
Pick = Callable[[int, Collection[PeerId]], list[PeerId]]

_DOMAIN = b"crdt_mesh/broadcast/v1\x00"
MAX_TTL = 16
MAX_FANOUT = 8
MAX_BROADCAST = 64 * 1024
_SEEN = 10_000  # message ids remembered for de-duplication


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """A broadcast as a receiver sees it: verified, delivered once."""

    id: bytes
    origin: PeerId
    type: str
    payload: Any
    created_at: int
    ttl: int  # hops it may still travel after this one
    hops: int  # hops it travelled to get here


@dataclass(slots=True)
class _Active:
    body: bytes
    signature: bytes
    ttl: int  # for the copies we send
    fanout: int
    hops: int
    rounds_left: int
    avoid: set[PeerId]  # who sent it to us (or the origin): no point sending it back
    pushed: bool = False


def rounds_for(members: int, fanout: int) -> int:
    """Push rounds per member such that a member is missed with chance ~ 1/(e^2 n)."""
    return max(1, math.ceil(math.log(members + 1) / max(fanout, 1)) + 2)


class Broadcaster:
    """One member's side of epidemic broadcast. See the module doc.

    Args:
        identity: signs what this member originates.
        rounds: push rounds per message; None picks :func:`rounds_for` the
            number of members the shell offers.
    """

    def __init__(self, identity: Identity, *, rounds: int | None = None) -> None:
        self.identity = identity
        self.rounds = rounds
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._active: dict[bytes, _Active] = {}
        self._outbox: list[tuple[PeerId, bytes]] = []
        #: messages delivered, and frames dropped as malformed or forged
        self.delivered = 0
        self.dropped = 0
        self.sent = 0

    def originate(
        self,
        type: str,
        payload: Any,
        *,
        ttl: int,
        fanout: int,
        created_at: int,
        pick: Pick,
        members: int,
    ) -> bytes:
        """Sign a new message and push it at once; returns its id.

        Raises:
            ValueError: a bad type, ttl or fanout, or a payload too large.
        """
        if not isinstance(type, str) or not type:
            raise ValueError("a message type is a non-empty string")
        if not 1 <= ttl <= MAX_TTL or not 1 <= fanout <= MAX_FANOUT:
            raise ValueError(f"ttl is 1..{MAX_TTL} and fanout 1..{MAX_FANOUT}")
        body = cbor2.dumps(
            [1, self.identity.peer_id.key, type, payload, created_at, os.urandom(8)],
            canonical=True,
        )
        if len(body) > MAX_BROADCAST:
            raise ValueError(f"broadcast of {len(body)} bytes exceeds {MAX_BROADCAST}")
        message_id = _message_id(body)
        self._remember(message_id)
        signature = self.identity.sign(_DOMAIN + body)
        self._activate(message_id, body, signature, ttl, fanout, 0, set(), members)
        self.pump(pick)
        return message_id

    def receive(self, sender: PeerId, data: bytes, *, members: int) -> GossipMessage | None:
        """A frame from ``sender``: the message if it is new here and genuine, else None.

        ``members`` is how many members the shell can push to (it sets the rounds).
        """
        try:
            body, signature, ttl, fanout, hops = cbor2.loads(data)
            if not (
                isinstance(body, bytes)
                and isinstance(signature, bytes)
                and len(body) <= MAX_BROADCAST
            ):
                raise ValueError("bad broadcast")
            if not all(isinstance(v, int) for v in (ttl, fanout, hops)):
                raise ValueError("bad broadcast")
            message_id = _message_id(body)
            if message_id in self._seen:
                return None  # a duplicate: not even worth a signature check
            version, origin_key, kind, payload, created, _nonce = cbor2.loads(body)
            if version != 1 or not isinstance(kind, str) or not isinstance(created, int):
                raise ValueError("bad broadcast")
            origin = PeerId(origin_key)
            nacl.bindings.crypto_sign_open(signature + _DOMAIN + body, origin.key)
        except (ValueError, TypeError, nacl.exceptions.CryptoError, cbor2.CBORDecodeError):
            self.dropped += 1
            return None
        self._remember(message_id)
        if origin == self.identity.peer_id:
            return None
        ttl = min(ttl, MAX_TTL)
        fanout = max(1, min(fanout, MAX_FANOUT))
        hops = max(0, min(hops, MAX_TTL)) + 1
        if ttl > 1:
            avoid = {sender, origin}
            self._activate(message_id, body, signature, ttl - 1, fanout, hops, avoid, members)
        self.delivered += 1
        return GossipMessage(message_id, origin, kind, payload, created, ttl - 1, hops)

    def pump(self, pick: Pick) -> None:
        """Push every message not pushed yet (the first, eager round)."""
        for message_id, active in list(self._active.items()):
            if not active.pushed:
                self._push(message_id, active, pick)

    def tick(self, pick: Pick) -> None:
        """One gossip round: push every active message once more."""
        for message_id, active in list(self._active.items()):
            self._push(message_id, active, pick)

    def outbox(self) -> list[tuple[PeerId, bytes]]:
        out, self._outbox = self._outbox, []
        return out

    @property
    def active(self) -> int:
        """Messages this member is still pushing."""
        return len(self._active)

    def _activate(
        self,
        message_id: bytes,
        body: bytes,
        signature: bytes,
        ttl: int,
        fanout: int,
        hops: int,
        avoid: set[PeerId],
        members: int,
    ) -> None:
        rounds = self.rounds if self.rounds is not None else rounds_for(members, fanout)
        self._active[message_id] = _Active(body, signature, ttl, fanout, hops, rounds, avoid)

    def _push(self, message_id: bytes, active: _Active, pick: Pick) -> None:
        frame = cbor2.dumps([active.body, active.signature, active.ttl, active.fanout, active.hops])
        for peer in pick(active.fanout, active.avoid):
            self._outbox.append((peer, frame))
            self.sent += 1
        active.pushed = True
        active.rounds_left -= 1
        if active.rounds_left <= 0:
            del self._active[message_id]

    def _remember(self, message_id: bytes) -> None:
        self._seen[message_id] = None
        while len(self._seen) > _SEEN:
            self._seen.popitem(last=False)


def _message_id(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


__all__ = [
    "MAX_BROADCAST",
    "MAX_FANOUT",
    "MAX_TTL",
    "Broadcaster",
    "GossipMessage",
    "Pick",
    "rounds_for",
]
