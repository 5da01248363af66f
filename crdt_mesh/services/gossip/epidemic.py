"""Epidemic broadcast of signed, ephemeral messages. Sans-IO.

A message is signed by its origin and identified by the hash of its body; it
is not stored in the ledger (invariant 7 of docs/architecture.md). A member that receives it
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

What a relay can and cannot do: the origin signs the message's hop ceiling
(``ttl``), its ``fanout`` and its creation time; only the count of hops travelled
rides outside the signature. A frame whose hop count reached the ceiling is
refused (and costs its sender); a relay can make the message travel no further
than its signed ceiling *from that relay*, and push it to no more than its signed
fanout. A message is accepted only within ``window`` of its creation (and no more
than ``max_skew`` ahead of the receiver's clock), and ids are remembered for the
whole window, so an old message cannot be delivered twice: when memory is short
the oldest ids are forgotten and everything created before them is refused, and a
broadcaster starts refusing what was created before it started (a restart never
delivers a message again).
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

from ...arguments import integer
from ...errors import ArgumentTypeError, ArgumentValueError
from ...identity import Domain, Identity, PeerId
from ...runtime.penalty import Offence
from .model import GossipMessage

#: ``pick(count, avoid)``: up to ``count`` distinct members to send to, none of ``avoid``.
Pick = Callable[[int, Collection[PeerId]], list[PeerId]]

_VERSION = 2
MAX_TTL = 16
MAX_FANOUT = 8
MAX_BROADCAST = 64 * 1024
#: How long after its creation a message is accepted (ms), and how far ahead of
#: the receiver's clock its creation may lie (clock skew).
WINDOW_MS = 120_000
MAX_SKEW_MS = 30_000
_SEEN = 50_000  # message ids remembered for de-duplication (within the window)


@dataclass(frozen=True, slots=True)
class Drop:
    """A frame refused, and what its sender did (for the shell's penalty table)."""

    offence: Offence
    reason: str


@dataclass(slots=True)
class _Active:
    body: bytes
    signature: bytes
    hops: int  # for the copies we send: hops travelled when they arrive
    fanout: int
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
        now: the time (ms since the epoch) at which this broadcaster starts: what
            was created before it is refused.
        window: ms after its creation during which a message is accepted.
        max_skew: ms ahead of ``now`` that a message's creation may lie.
        remember: message ids kept for de-duplication.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        rounds: int | None = None,
        now: int = 0,
        window: int = WINDOW_MS,
        max_skew: int = MAX_SKEW_MS,
        remember: int = _SEEN,
    ) -> None:
        self.identity = identity
        self.rounds = rounds
        self.window = window
        self.max_skew = max_skew
        self._remember_at_most = remember
        # id -> creation time, oldest arrivals first; everything created at or before
        # ``_low_water`` is refused (ids that old may have been forgotten).
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._low_water = now - 1
        self._active: dict[bytes, _Active] = {}
        self._outbox: list[tuple[PeerId, bytes]] = []
        #: messages delivered, and frames dropped as malformed, forged or out of bounds
        self.delivered = 0
        self.dropped = 0
        self.sent = 0
        #: copies of messages delivered already (dropped before their signature check)
        self.duplicates = 0

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
            ArgumentTypeError, ArgumentValueError: a bad type, ttl or fanout, or a
                payload that CBOR cannot encode or that is too large.
        """
        if not isinstance(type, str) or not type:
            raise ArgumentTypeError(f"type: a non-empty string, not {type!r}")
        integer("ttl", ttl, low=1, high=MAX_TTL)
        integer("fanout", fanout, low=1, high=MAX_FANOUT)
        try:
            encoded_payload = cbor2.dumps(payload, canonical=True)
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise ArgumentValueError(
                f"payload: a CBOR-encodable value, not {payload!r} ({exc})"
            ) from None
        if len(encoded_payload) > MAX_BROADCAST:
            raise ArgumentValueError(f"payload: {len(encoded_payload)} bytes, over {MAX_BROADCAST}")
        body = cbor2.dumps(
            [
                _VERSION,
                self.identity.peer_id.key,
                type,
                payload,
                created_at,
                os.urandom(8),
                ttl,
                fanout,
            ],
            canonical=True,
        )
        if len(body) > MAX_BROADCAST:
            raise ArgumentValueError(
                f"payload: a broadcast of {len(body)} bytes, over {MAX_BROADCAST}"
            )
        message_id = _message_id(body)
        self._remember(message_id, created_at)
        signature = self.identity.sign(Domain.BROADCAST, body)
        self._activate(message_id, body, signature, 0, fanout, set(), members)
        self.pump(pick)
        return message_id

    def receive(
        self, sender: PeerId, data: bytes, *, members: int, now: int
    ) -> GossipMessage | Drop | None:
        """A frame from ``sender`` at ``now`` (ms since the epoch).

        Returns:
            The message if it is new here and genuine; a :class:`Drop` if the frame is
            refused (malformed, forged, past its hop ceiling, outside the window);
            None for a duplicate, or one of our own. ``members`` is how many members
            the shell can push to (it sets the rounds).
        """
        try:
            body, signature, hops = cbor2.loads(data)
            if not (
                isinstance(body, bytes)
                and isinstance(signature, bytes)
                and len(body) <= MAX_BROADCAST
                and isinstance(hops, int)
                and not isinstance(hops, bool)
                and hops >= 0
            ):
                raise ValueError("bad broadcast")
        except (ValueError, TypeError, cbor2.CBORDecodeError):
            return self._drop(Offence.JUNK, "malformed broadcast frame")
        message_id = _message_id(body)
        if message_id in self._seen:
            self.duplicates += 1
            return None  # a duplicate: not even worth a signature check
        try:
            version, origin_key, kind, payload, created, _nonce, ttl, fanout = cbor2.loads(body)
            if version != _VERSION or not isinstance(kind, str):
                raise ValueError("bad broadcast")
            if not all(_is_int(v) for v in (created, ttl, fanout)):
                raise ValueError("bad broadcast")
            if not (1 <= ttl <= MAX_TTL and 1 <= fanout <= MAX_FANOUT):
                raise ValueError("bad broadcast")
            origin = PeerId(origin_key)
        except (ValueError, TypeError, cbor2.CBORDecodeError):
            return self._drop(Offence.JUNK, "malformed broadcast")
        if hops >= ttl:
            return self._drop(Offence.HOP_LIMIT, f"relayed {hops} hops past a ceiling of {ttl}")
        if created <= self._low_water or created < now - self.window:
            return self._drop(Offence.STALE, "a broadcast older than the window")
        if created > now + self.max_skew:
            return self._drop(Offence.STALE, "a broadcast from the future")
        if not origin.verify(Domain.BROADCAST, body, signature):
            return self._drop(Offence.JUNK, "a broadcast whose signature does not verify")
        self._remember(message_id, created)
        self._expire(now)
        if origin == self.identity.peer_id:
            return None
        travelled = hops + 1
        if travelled < ttl:
            avoid = {sender, origin}
            self._activate(message_id, body, signature, travelled, fanout, avoid, members)
        self.delivered += 1
        return GossipMessage(message_id, origin, kind, payload, created, ttl - travelled, travelled)

    def _drop(self, offence: Offence, reason: str) -> Drop:
        self.dropped += 1
        return Drop(offence, reason)

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

    @property
    def remembered(self) -> int:
        """Message ids held for de-duplication."""
        return len(self._seen)

    def _activate(
        self,
        message_id: bytes,
        body: bytes,
        signature: bytes,
        hops: int,
        fanout: int,
        avoid: set[PeerId],
        members: int,
    ) -> None:
        rounds = self.rounds if self.rounds is not None else rounds_for(members, fanout)
        self._active[message_id] = _Active(body, signature, hops, fanout, rounds, avoid)

    def _push(self, message_id: bytes, active: _Active, pick: Pick) -> None:
        frame = cbor2.dumps([active.body, active.signature, active.hops])
        for peer in pick(active.fanout, active.avoid):
            self._outbox.append((peer, frame))
            self.sent += 1
        active.pushed = True
        active.rounds_left -= 1
        if active.rounds_left <= 0:
            del self._active[message_id]

    def _remember(self, message_id: bytes, created: int) -> None:
        self._seen[message_id] = created
        while len(self._seen) > self._remember_at_most:
            self._forget_oldest()

    def _expire(self, now: int) -> None:
        """Forget ids whose messages the window refuses anyway."""
        while self._seen and next(iter(self._seen.values())) < now - self.window:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        _, created = self._seen.popitem(last=False)
        # Whatever was created at or before a forgotten id can no longer be told
        # apart from a replay: refuse it from now on.
        self._low_water = max(self._low_water, created)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _message_id(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=16).digest()


__all__ = [
    "MAX_BROADCAST",
    "MAX_FANOUT",
    "MAX_SKEW_MS",
    "MAX_TTL",
    "WINDOW_MS",
    "Broadcaster",
    "Drop",
    "GossipMessage",
    "Pick",
    "rounds_for",
]
