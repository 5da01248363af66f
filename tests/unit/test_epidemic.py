"""The broadcast core by hand: delivery once, TTL hop by hop, rounds, forgeries, windows."""

from __future__ import annotations

import random
from collections.abc import Collection

import cbor2

from crdt_mesh.identity import Identity, PeerId
from crdt_mesh.runtime.penalty import Offence
from crdt_mesh.services.gossip.epidemic import (
    MAX_SKEW_MS,
    WINDOW_MS,
    Broadcaster,
    Drop,
    GossipMessage,
    rounds_for,
)

ORIGIN, RELAY = Identity.from_seed(b"o" * 32), Identity.from_seed(b"r" * 32)
OTHERS = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(10)]
NOW = 1_700_000_000_000  # ms since the epoch


def _pick(members: list[PeerId]):  # type: ignore[no-untyped-def]
    rng = random.Random(0)

    def pick(count: int, avoid: Collection[PeerId]) -> list[PeerId]:
        pool = [m for m in members if m not in avoid]
        return rng.sample(pool, min(count, len(pool)))

    return pick


def _one_frame(origin: Broadcaster, ttl: int = 3, fanout: int = 1, created: int = NOW) -> bytes:
    origin.originate(
        "x", 1, ttl=ttl, fanout=fanout, created_at=created, pick=_pick(OTHERS), members=10
    )
    frames = origin.outbox()
    assert len(frames) == fanout
    return frames[0][1]


def test_a_message_is_delivered_once_and_pushed_for_its_rounds() -> None:
    origin, relay = Broadcaster(ORIGIN, now=NOW), Broadcaster(RELAY, rounds=3, now=NOW)
    pick = _pick(OTHERS)
    origin.originate("heartbeat", {"n": 1}, ttl=5, fanout=2, created_at=NOW, pick=pick, members=10)
    frames = origin.outbox()
    assert len(frames) == 2
    message = relay.receive(ORIGIN.peer_id, frames[0][1], members=10, now=NOW)
    assert isinstance(message, GossipMessage)
    assert message.payload == {"n": 1} and message.ttl == 4 and message.hops == 1
    assert relay.receive(ORIGIN.peer_id, frames[1][1], members=10, now=NOW) is None  # a duplicate
    relay.pump(pick)
    sent = [len(relay.outbox())]
    for _ in range(4):
        relay.tick(pick)
        sent.append(len(relay.outbox()))
    assert sent == [2, 2, 2, 0, 0]  # three rounds of two pushes, then quiet
    assert relay.delivered == 1 and relay.active == 0


def test_a_message_whose_ttl_is_spent_is_delivered_but_not_forwarded() -> None:
    origin, relay = Broadcaster(ORIGIN, now=NOW), Broadcaster(RELAY, now=NOW)
    frame = _one_frame(origin, ttl=1)
    assert isinstance(relay.receive(ORIGIN.peer_id, frame, members=10, now=NOW), GossipMessage)
    relay.pump(_pick(OTHERS))
    assert relay.outbox() == [] and relay.active == 0


def test_a_message_followed_hop_by_hop_travels_exactly_its_ttl() -> None:
    """TTL 3: three hops deliver it, each relay forwards with one hop more, the third
    hop forwards nothing."""
    chain = [Identity.from_seed(bytes([100 + i]) * 32) for i in range(4)]
    members = [Broadcaster(identity, rounds=1, now=NOW) for identity in chain]
    frame = _one_frame(Broadcaster(ORIGIN, now=NOW), ttl=3)
    seen = []
    sender = ORIGIN.peer_id
    for identity, member in zip(chain, members, strict=True):
        if frame is None:
            break
        message = member.receive(sender, frame, members=10, now=NOW)
        assert isinstance(message, GossipMessage)
        seen.append((message.hops, message.ttl, cbor2.loads(frame)[2]))
        member.pump(_pick(OTHERS))
        out = member.outbox()
        frame = out[0][1] if out else None
        sender = identity.peer_id
    assert seen == [(1, 2, 0), (2, 1, 1), (3, 0, 2)]  # (hops, ttl left, hops on the wire)
    assert frame is None  # the third hop does not forward


def test_a_relay_cannot_raise_the_signed_limits() -> None:
    """Issue 10, hole 5: TTL and fanout were outside the signature, so any relay could
    raise them to the maximum. Now the origin signs them; a hop count past the ceiling
    is refused (and costs the relay), and a relay pushes to the signed fanout only."""
    origin, relay = Broadcaster(ORIGIN, now=NOW), Broadcaster(RELAY, rounds=1, now=NOW)
    frame = _one_frame(origin, ttl=2, fanout=1)
    body, signature, _hops = cbor2.loads(frame)
    past = relay.receive(OTHERS[0], cbor2.dumps([body, signature, 2]), members=10, now=NOW)
    assert isinstance(past, Drop) and past.offence is Offence.HOP_LIMIT
    assert relay.delivered == 0
    # no field of the frame can change the fanout: the body is signed as a whole
    raised = bytearray(body)
    raised[-1] = 8  # the fanout, last in the body
    forged = relay.receive(
        OTHERS[0], cbor2.dumps([bytes(raised), signature, 0]), members=10, now=NOW
    )
    assert isinstance(forged, Drop) and forged.offence is Offence.JUNK
    assert isinstance(relay.receive(ORIGIN.peer_id, frame, members=10, now=NOW), GossipMessage)
    relay.pump(_pick(OTHERS))
    assert len(relay.outbox()) == 1  # the signed fanout


def test_a_forged_copy_is_dropped_and_does_not_block_the_genuine_one() -> None:
    origin, relay = Broadcaster(ORIGIN, now=NOW), Broadcaster(RELAY, now=NOW)
    frame = _one_frame(origin)
    body, _signature, hops = cbor2.loads(frame)
    forged = cbor2.dumps([body, bytes(64), hops])
    dropped = relay.receive(RELAY.peer_id, forged, members=10, now=NOW)
    assert isinstance(dropped, Drop) and dropped.offence is Offence.JUNK and relay.dropped == 1
    accepted = relay.receive(ORIGIN.peer_id, frame, members=10, now=NOW)
    assert isinstance(accepted, GossipMessage)  # the forgery did not block the genuine one


def test_only_messages_within_the_window_are_accepted() -> None:
    relay = Broadcaster(RELAY, now=NOW - 10 * WINDOW_MS)
    origin = Broadcaster(ORIGIN, now=NOW - 10 * WINDOW_MS)
    old = _one_frame(origin, created=NOW - WINDOW_MS - 1)
    future = _one_frame(origin, created=NOW + MAX_SKEW_MS + 1)
    fine = _one_frame(origin, created=NOW - WINDOW_MS + 1000)
    for frame in (old, future):
        dropped = relay.receive(ORIGIN.peer_id, frame, members=10, now=NOW)
        assert isinstance(dropped, Drop) and dropped.offence is Offence.STALE
    assert isinstance(relay.receive(ORIGIN.peer_id, fine, members=10, now=NOW), GossipMessage)


def test_an_old_message_is_never_delivered_twice_when_ids_are_forgotten() -> None:
    """The de-duplication cache is bounded; what it forgets can no longer come back."""
    origin = Broadcaster(ORIGIN, now=NOW)
    relay = Broadcaster(RELAY, now=NOW, remember=5)
    first = _one_frame(origin, created=NOW + 1)
    assert isinstance(relay.receive(ORIGIN.peer_id, first, members=10, now=NOW + 10), GossipMessage)
    for i in range(10):  # ten newer messages push the first one's id out
        frame = _one_frame(origin, created=NOW + 2 + i)
        assert isinstance(
            relay.receive(ORIGIN.peer_id, frame, members=10, now=NOW + 20), GossipMessage
        )
    assert relay.remembered == 5
    replay = relay.receive(OTHERS[0], first, members=10, now=NOW + 30)
    assert isinstance(replay, Drop) and replay.offence is Offence.STALE


def test_a_restarted_broadcaster_refuses_what_came_before_it() -> None:
    origin = Broadcaster(ORIGIN, now=NOW)
    frame = _one_frame(origin, created=NOW + 5)
    before = Broadcaster(RELAY, now=NOW)
    assert isinstance(before.receive(ORIGIN.peer_id, frame, members=10, now=NOW + 6), GossipMessage)
    after_restart = Broadcaster(RELAY, now=NOW + 1000)  # nothing remembered, same window
    replay = after_restart.receive(OTHERS[0], frame, members=10, now=NOW + 1001)
    assert isinstance(replay, Drop) and replay.offence is Offence.STALE


def test_rounds_grow_with_the_mesh_and_shrink_with_fanout() -> None:
    assert rounds_for(100, 3) < rounds_for(10_000, 3)
    assert rounds_for(1_000, 8) < rounds_for(1_000, 2)
    assert rounds_for(0, 3) >= 1
