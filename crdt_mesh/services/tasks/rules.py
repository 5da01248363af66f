"""Task negotiation's rules: pure functions of values, no replica, no clock.

Selection (:func:`select`) is what every replica recomputes to audit an award;
the sealed-bid crypto binds a bid to its bidder and task; the codecs turn what a
document holds into values and back.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import cbor2

from ...commitment import Purpose, commitment, pad, unpad
from ...commitment import opening_matches as matches
from ...identity import PeerId
from ...ledger import DocumentId
from .model import (
    Announcement,
    Bid,
    NegotiationError,
    ReputationProvider,
    TaskPriority,
    TaskRef,
)

#: Why a close refuses the acceptable bids it was not asked to select from.
LEFT_OUT = "not among the bids selected from"


def neutral_reputation(peer: PeerId) -> float:
    """The reputation every peer has until a reputation service says otherwise."""
    return 0.5


def clamp_score(score: float) -> float:
    """A provider's score as selection uses it: a float in [0, 1].

    Raises:
        NegotiationError: the provider gave something that is not a finite number.
    """
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise NegotiationError(f"a reputation score is a finite number, not {score!r}")
    return min(1.0, max(0.0, float(score)))


def select(
    bids: Sequence[Bid], criteria: Sequence[str], reputation: ReputationProvider | None = None
) -> Bid | None:
    """The winning bid under ``criteria`` (earlier criteria weigh more); None if no bids.

    Each criterion maps a bid to [0, 1] (reputation as given; price and eta as the
    best offered over this one; availability as offered), weighted 1, 1/2, 1/4 ...
    in the order given. Ties go to the smaller bidder key. Deterministic: every
    replica with the same bids and provider picks the same winner.
    """
    if not bids:
        return None
    score_of = reputation or neutral_reputation
    best_price = min(b.price for b in bids)
    best_eta = min(b.eta for b in bids)

    def value(bid: Bid, criterion: str) -> float:
        if criterion == "price":
            return best_price / bid.price if bid.price > 0 else 1.0
        if criterion == "eta":
            return best_eta / bid.eta if bid.eta > 0 else 1.0
        if criterion == "availability":
            return bid.availability
        if criterion == "reputation":
            return min(1.0, max(0.0, float(score_of(bid.bidder))))
        raise NegotiationError(f"unknown selection criterion {criterion!r}")

    def score(bid: Bid) -> float:
        return sum(0.5**i * value(bid, c) for i, c in enumerate(criteria))

    return min(bids, key=lambda b: (-score(b), b.bidder.key))


_SNAKE = re.compile(r"[a-z][a-z0-9_]*")


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def check_requirements(requirements: Mapping[str, Any] | None) -> dict[str, Any]:
    """A task's requirements, checked: snake_case keys, and the known keys well formed.

    Known keys: ``capabilities`` (a list of non-empty strings), ``estimated_duration``
    (seconds, a number >= 0), ``priority`` (a :class:`TaskPriority` value). Other
    snake_case keys are the application's own and are kept as plain values.

    Raises:
        NegotiationError: a key or value is malformed; the message names the key.
    """
    if requirements is None:
        return {}
    if not isinstance(requirements, Mapping):
        raise NegotiationError(f"requirements: a mapping, not {type(requirements).__name__}")
    checked: dict[str, Any] = {}
    for key, value in requirements.items():
        if not isinstance(key, str) or not _SNAKE.fullmatch(key):
            hint = f" ({_snake(key)!r}?)" if isinstance(key, str) and key.isidentifier() else ""
            raise NegotiationError(f"requirements[{key!r}]: keys are snake_case{hint}")
        checked[key] = plain_value(value)
    capabilities = checked.get("capabilities", [])
    if not isinstance(capabilities, list) or not all(
        isinstance(c, str) and c for c in capabilities
    ):
        raise NegotiationError("requirements['capabilities']: a list of non-empty strings")
    duration = requirements.get("estimated_duration")
    if duration is not None and (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not math.isfinite(duration)
        or duration < 0
    ):
        raise NegotiationError(
            f"requirements['estimated_duration']: seconds, a number >= 0, not {duration!r}"
        )
    priority = checked.get("priority")
    if priority is not None and priority not in {p.value for p in TaskPriority}:
        known = [p.value for p in TaskPriority]
        raise NegotiationError(f"requirements['priority']: one of {known}, not {priority!r}")
    return checked


def plain_value(value: Any) -> Any:
    """A value as the document will hold it (numbers as floats), or ValueError."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise NegotiationError("numbers in a task are finite")
        return number
    if isinstance(value, list | tuple):
        return [plain_value(v) for v in value]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise NegotiationError("keys in a task are strings")
        return {k: plain_value(v) for k, v in value.items()}
    raise NegotiationError(
        f"a task holds plain values (str, number, bool, list, dict), not {value!r}"
    )


def encode_value(value: Any) -> bytes:
    return cbor2.dumps(plain_value(value), canonical=True)


def sealed_commitment(ref: TaskRef, bidder: PeerId, plain: bytes, nonce: bytes) -> str:
    """The hash a sealed bid commits to: its offer, nonce, bidder and task."""
    return commitment(Purpose.SEALED_BID, ref.document_name, bidder, plain, nonce)


def seal_content(ref: TaskRef, bidder: PeerId, plain: bytes, nonce: bytes) -> bytes:
    """What goes in the sealed box: the task, the bidder, the offer and its nonce, padded."""
    return pad(cbor2.dumps([2, ref.document_name, bidder.key, plain, nonce], canonical=True))


def open_content(box: bytes) -> tuple[str, bytes, bytes, bytes] | None:
    """(task, bidder key, offer, nonce) of an opened box, or None if malformed."""
    content = unpad(box)
    try:
        version, task, bidder, plain, nonce = cbor2.loads(content or b"")
    except (ValueError, TypeError, cbor2.CBORDecodeError):
        return None
    if version != 2 or not isinstance(task, str):
        return None
    if not all(isinstance(v, bytes) for v in (bidder, plain, nonce)):
        return None
    return task, bidder, plain, nonce


def opening_matches(ref: TaskRef, bidder: PeerId, opening: Any, committed: str) -> bool:
    return matches(Purpose.SEALED_BID, ref.document_name, bidder, opening, committed)


def peer_of_key(key: Any) -> PeerId | None:
    try:
        return PeerId(key)
    except (ValueError, TypeError):
        return None


def offer_digest(offer: Mapping[str, Any]) -> str:
    return hashlib.blake2b(encode_value(offer), digest_size=16).hexdigest()


def close_digest(details: Mapping[str, Any]) -> str:
    """What a private close publishes of its details (as a replica reads them back)."""
    return hashlib.blake2b(encode_value(dict(details)), digest_size=16).hexdigest()


def may_read_offers(
    document: DocumentId,
    peer: PeerId,
    announcement: Announcement | None,
    followers: AbstractSet[PeerId] = frozenset(),
) -> bool | None:
    """Whether ``peer`` may be offered a task's offers document (a read policy: None
    when ``document`` is not one). Open bids: anyone. Private bids: the bidder, the
    announcer, the coordinator, the auditors the announcement names and the peers
    that asked this replica to follow the task (``followers``); before the
    announcement is here, the bidder and the announcer only."""
    ref = TaskRef.from_offers(document)
    if ref is None:
        return None
    if announcement is None:
        return peer in (document.owner, ref.announcer)
    negotiation = announcement.negotiation
    if not negotiation.private_bids:
        return True
    return (
        peer in (document.owner, ref.announcer, announcement.coordinator)
        or peer in negotiation.auditors
        or peer in followers
    )


def parse_bid(ref: TaskRef, bidder: PeerId, offer: Any) -> Bid | None:
    if not isinstance(offer, dict):
        return None
    try:
        price, availability, eta = (float(offer[k]) for k in ("price", "availability", "eta"))
        caps = tuple(str(c) for c in offer.get("capabilities", []))
        at = float(offer.get("at", 0.0))
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(price) and price >= 0 and math.isfinite(eta) and eta >= 0):
        return None
    if not 0.0 <= availability <= 1.0:
        return None
    return Bid(ref, bidder, price, availability, eta, caps, at, offer_digest(offer))


def parse_peer(text: Any) -> PeerId | None:
    if not isinstance(text, str):
        return None
    try:
        return PeerId.parse(text)
    except ValueError:
        return None
