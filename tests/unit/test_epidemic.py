"""The broadcast core by hand: delivery once, TTL, rounds of pushing, forgeries."""

from __future__ import annotations

import random
from collections.abc import Collection

import cbor2

from crdt_mesh.epidemic import Broadcaster, rounds_for
from crdt_mesh.identity import Identity, PeerId

ORIGIN, RELAY = Identity.from_seed(b"o" * 32), Identity.from_seed(b"r" * 32)
OTHERS = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(10)]


def _pick(members: list[PeerId]):  # type: ignore[no-untyped-def]
    rng = random.Random(0)

    def pick(count: int, avoid: Collection[PeerId]) -> list[PeerId]:
        pool = [m for m in members if m not in avoid]
        return rng.sample(pool, min(count, len(pool)))

    return pick


def test_a_message_is_delivered_once_and_pushed_for_its_rounds() -> None:
    origin, relay = Broadcaster(ORIGIN), Broadcaster(RELAY, rounds=3)
    pick = _pick(OTHERS)
    origin.originate("heartbeat", {"n": 1}, ttl=5, fanout=2, created_at=1, pick=pick, members=10)
    frames = origin.outbox()
    assert len(frames) == 2
    message = relay.receive(ORIGIN.peer_id, frames[0][1], members=10)
    assert message is not None and message.payload == {"n": 1} and message.ttl == 4
    assert relay.receive(ORIGIN.peer_id, frames[1][1], members=10) is None  # a duplicate
    relay.pump(pick)
    sent = [len(relay.outbox())]
    for _ in range(4):
        relay.tick(pick)
        sent.append(len(relay.outbox()))
    assert sent == [2, 2, 2, 0, 0]  # three rounds of two pushes, then quiet
    assert relay.delivered == 1 and relay.active == 0


def test_a_message_whose_ttl_is_spent_is_delivered_but_not_forwarded() -> None:
    origin, relay = Broadcaster(ORIGIN), Broadcaster(RELAY)
    origin.originate("x", None, ttl=1, fanout=1, created_at=1, pick=_pick(OTHERS), members=10)
    ((_, frame),) = origin.outbox()
    assert relay.receive(ORIGIN.peer_id, frame, members=10) is not None
    relay.pump(_pick(OTHERS))
    assert relay.outbox() == [] and relay.active == 0


def test_a_forged_copy_is_dropped_and_does_not_block_the_genuine_one() -> None:
    origin, relay = Broadcaster(ORIGIN), Broadcaster(RELAY)
    origin.originate("x", 1, ttl=3, fanout=1, created_at=1, pick=_pick(OTHERS), members=10)
    ((_, frame),) = origin.outbox()
    body, _signature, ttl, fanout, hops = cbor2.loads(frame)
    forged = cbor2.dumps([body, bytes(64), ttl, fanout, hops])
    assert relay.receive(RELAY.peer_id, forged, members=10) is None and relay.dropped == 1
    assert relay.receive(ORIGIN.peer_id, frame, members=10) is not None  # still accepted


def test_rounds_grow_with_the_mesh_and_shrink_with_fanout() -> None:
    assert rounds_for(100, 3) < rounds_for(10_000, 3)
    assert rounds_for(1_000, 8) < rounds_for(1_000, 2)
    assert rounds_for(0, 3) >= 1
