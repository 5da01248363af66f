"""Decaying per-peer penalties that end in refusal. Sans-IO: time is passed in.

In the spirit of gossipsub v1.1's behaviour penalty (Vyzovitis et al., "GossipSub:
Attack-Resilient Message Propagation in the Filecoin and ETH2.0 Networks", 2020):
each offence adds its weight to a score that halves every ``half_life`` seconds;
a score at or over ``threshold`` refuses the offender for a back-off that doubles
with each repeat episode (up to ``max_ban``), and the episode count is forgotten
after ``forgive_after`` seconds of good conduct. Weights are chosen so that what an
honest peer can cause on a lossy network (a late frame, a duplicate, a fork made by
someone else) costs nothing or next to nothing, and what only a hostile or broken
peer sends (bad signatures, protocol breaches, junk) crosses the threshold fast.

Keys are any hashable: a :class:`~crdt_mesh.identity.PeerId` for authenticated
misbehaviour, a host string for what happens before a handshake proves who is
there. The table is bounded: the lowest scores that are not refused are forgotten
first when it is full.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

from ..identity import PeerId


class Offence(enum.Enum):
    """What a peer did. Its weight is in :data:`WEIGHTS` (the threshold is 100)."""

    #: a frame that breaks the sync protocol: malformed, out of order, an answer to
    #: nothing asked, overlapping ranges, a flood of frames that answer nothing
    PROTOCOL_BREACH = "protocol_breach"
    #: an entry whose signature does not verify (an honest relay checked it first)
    BAD_SIGNATURE = "bad_signature"
    #: an entry that breaks its document's policy or client-id binding, or is not an entry
    INVALID_ENTRY = "invalid_entry"
    #: a forged or malformed ephemeral frame (broadcast, failure detector)
    JUNK = "junk"
    #: a broadcast relayed past the hop limit its origin signed
    HOP_LIMIT = "hop_limit"
    #: a rate or budget overrun (frames, bytes, rounds)
    BUDGET = "budget"
    #: entries sent ahead of a gap that the sender, who holds what precedes them,
    #: left unfilled for many rounds (weighted per feed)
    GAP = "gap"
    #: a handshake that failed or timed out (keyed by host: nobody is proven yet)
    HANDSHAKE = "handshake"
    #: a provably dishonest record in a service (a copied sealed bid, ...): refused at once
    DISHONEST = "dishonest"
    #: a broadcast outside the time window: also what clock skew looks like
    STALE = "stale"


#: The default weight of each offence.
WEIGHTS: dict[Offence, float] = {
    Offence.PROTOCOL_BREACH: 60.0,
    Offence.BAD_SIGNATURE: 25.0,
    Offence.INVALID_ENTRY: 10.0,
    Offence.JUNK: 10.0,
    Offence.HOP_LIMIT: 10.0,
    Offence.BUDGET: 20.0,
    Offence.GAP: 20.0,
    Offence.HANDSHAKE: 10.0,
    Offence.DISHONEST: 100.0,
    Offence.STALE: 1.0,
}


@dataclass(frozen=True, slots=True)
class PenaltySettings:
    """How penalties add up and how long refusals last (seconds)."""

    threshold: float = 100.0
    half_life: float = 60.0
    ban: float = 30.0
    max_ban: float = 3600.0
    forgive_after: float = 3600.0
    max_tracked: int = 100_000
    weights: Mapping[Offence, float] = field(default_factory=lambda: dict(WEIGHTS))

    def __post_init__(self) -> None:
        if not (self.threshold > 0 and self.half_life > 0 and 0 < self.ban <= self.max_ban):
            raise ValueError("threshold, half_life and ban are positive; ban <= max_ban")
        if self.forgive_after < 0 or self.max_tracked < 1:
            raise ValueError("forgive_after >= 0 and max_tracked >= 1")
        missing = set(Offence) - set(self.weights)
        if missing:
            raise ValueError(f"no weight for {sorted(o.name for o in missing)}")


@dataclass(slots=True)
class _Record:
    score: float
    stamp: float
    banned_until: float = -math.inf
    episodes: int = 0
    last_episode: float = -math.inf


@dataclass(frozen=True, slots=True)
class Refusal:
    """A key crossed the threshold: refused until ``until`` (episode number ``episode``)."""

    key: Hashable
    until: float
    episode: int
    offence: Offence


def key_text(key: Hashable, *, short: bool = True) -> str:
    """A penalty key as logs and metrics show it: a peer's id (short, or whole), or
    ``host:<address>`` for a host not proven to be anyone yet."""
    if isinstance(key, PeerId):
        return key.short if short else str(key)
    if isinstance(key, tuple) and len(key) == 2:
        return f"host:{key[1]}"
    return str(key)


class Penalties:
    """The penalty table of one node. See the module doc."""

    def __init__(self, settings: PenaltySettings | None = None) -> None:
        self.settings = settings or PenaltySettings()
        self._records: dict[Hashable, _Record] = {}
        #: offences counted, by kind (whatever their weight)
        self.offences: dict[Offence, int] = dict.fromkeys(Offence, 0)
        #: episodes of refusal started
        self.episodes = 0

    def _decayed(self, record: _Record, now: float) -> float:
        elapsed = max(0.0, now - record.stamp)
        return float(record.score * 0.5 ** (elapsed / self.settings.half_life))

    def add(
        self, key: Hashable, offence: Offence, now: float, *, weight: float | None = None
    ) -> Refusal | None:
        """Count ``offence`` against ``key``; a :class:`Refusal` if this starts an episode.

        While ``key`` is refused, further offences add to its score but start no new
        episode: the caller logs an episode once, not once per frame.
        """
        self.offences[offence] += 1
        amount = self.settings.weights[offence] if weight is None else weight
        if amount <= 0:
            return None
        record = self._records.get(key)
        if record is None:
            self._make_room(now)
            record = self._records[key] = _Record(0.0, now)
        record.score = self._decayed(record, now) + amount
        record.stamp = now
        if record.score < self.settings.threshold or now < record.banned_until:
            return None
        if now - record.last_episode > self.settings.forgive_after:
            record.episodes = 0
        record.episodes += 1
        record.last_episode = now
        ban = min(self.settings.max_ban, self.settings.ban * 2 ** (record.episodes - 1))
        record.banned_until = now + ban
        record.score = 0.0  # the refusal is the sentence; the score starts over after it
        self.episodes += 1
        return Refusal(key, record.banned_until, record.episodes, offence)

    def refused(self, key: Hashable, now: float) -> bool:
        """Whether ``key`` is refused at ``now``."""
        record = self._records.get(key)
        return record is not None and now < record.banned_until

    def refused_until(self, key: Hashable) -> float | None:
        """When the current refusal of ``key`` ends (None if it was never refused)."""
        record = self._records.get(key)
        return None if record is None or record.banned_until == -math.inf else record.banned_until

    def score(self, key: Hashable, now: float) -> float:
        """``key``'s decayed score at ``now`` (0 for a key never penalised)."""
        record = self._records.get(key)
        return 0.0 if record is None else self._decayed(record, now)

    def refused_count(self, now: float) -> int:
        """Keys refused at ``now`` (for status lines)."""
        return sum(1 for r in self._records.values() if now < r.banned_until)

    def worst(self, now: float, count: int) -> list[tuple[Hashable, float]]:
        """The ``count`` keys with the highest scores at ``now`` (above 0), highest first."""
        scored = [(self._decayed(r, now), k) for k, r in self._records.items()]
        best = sorted((p for p in scored if p[0] > 0), key=lambda p: p[0], reverse=True)
        return [(key, score) for score, key in best[:count]]

    def refused_keys(self, now: float) -> list[Hashable]:
        """The keys refused at ``now``."""
        return [k for k, r in self._records.items() if now < r.banned_until]

    def __len__(self) -> int:
        return len(self._records)

    def _make_room(self, now: float) -> None:
        if len(self._records) < self.settings.max_tracked:
            return
        for key in [k for k, r in self._records.items() if self._forgettable(r, now)]:
            del self._records[key]
        if len(self._records) >= self.settings.max_tracked:
            # Still full (a flood of fresh keys): forget the mildest that are not refused.
            free = [(self._decayed(r, now), k) for k, r in self._records.items()]
            free = [(s, k) for s, k in free if not now < self._records[k].banned_until]
            free.sort(key=lambda pair: pair[0])
            for _, key in free[: max(1, len(self._records) // 10)]:
                del self._records[key]

    def _forgettable(self, record: _Record, now: float) -> bool:
        return (
            now >= record.banned_until
            and now - record.last_episode > self.settings.forgive_after
            and self._decayed(record, now) < 1.0
        )


__all__ = ["WEIGHTS", "Offence", "Penalties", "PenaltySettings", "Refusal"]
