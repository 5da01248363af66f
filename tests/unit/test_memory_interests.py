"""What a peer follows, and what a hostile peer cannot make of it."""

from __future__ import annotations

import cbor2
import pytest

from crdt_mesh import Identity
from crdt_mesh.services.memory import MemoryBoard
from crdt_mesh.services.memory.interests import (
    MAX_KEYS,
    decode_announcement,
    encode_announcement,
    reader_key,
)
from crdt_mesh.services.memory.model import MemoryPrivacyLevel
from crdt_mesh.services.memory.rules import memory_document, new_memory_id
from tests.conftest import ReplicaFactory


@pytest.mark.parametrize(
    "frame",
    [
        b"\xff",
        cbor2.dumps(["q", ["tag:x"]]),
        cbor2.dumps(["i", "tag:x"]),
        cbor2.dumps(["i", [f"tag:{i}" for i in range(MAX_KEYS + 1)]]),
        cbor2.dumps(["i", ["author:" + "00" * 32]]),  # implicit keys are not announced
        cbor2.dumps(["i", ["tag:has space"]]),
        cbor2.dumps(["i", ["tag:" + "x" * 30_000]]),
    ],
)
def test_a_malformed_announcement_is_refused(frame: bytes) -> None:
    assert decode_announcement(frame) is None


def test_an_announcement_round_trips() -> None:
    keys = frozenset({"tag:ops", "channel:weather", "*"})
    assert decode_announcement(encode_announcement(keys)) == keys


def test_an_author_cannot_make_its_memory_reach_a_peer_that_follows_nothing_it_names(
    make_replica: ReplicaFactory,
) -> None:
    spammer = MemoryBoard(make_replica())
    victim = Identity.generate().peer_id
    follower = Identity.generate().peer_id
    spammer.interests.learn(follower, frozenset({"tag:ops"}))
    document = memory_document(spammer.me, MemoryPrivacyLevel.PUBLIC, new_memory_id())
    doc = spammer.replica.document(document)
    with doc.transaction():
        doc.map("memory")["record"] = {
            "content": "buy now",
            "tags": ["ops"],
            "metadata": {},
            "created_at": 0.0,
            "updated_at": 0.0,
            "interest": ["*", reader_key(victim), "tag:ops"],
        }
    assert not spammer.replica.readable_by(document, victim)
    assert spammer.replica.readable_by(document, follower)  # control


def test_following_is_kept_and_changes_what_peers_are_offered(
    make_replica: ReplicaFactory,
) -> None:
    replica = make_replica()
    board = MemoryBoard(replica)
    peer = Identity.generate().peer_id
    memory = board.store("note", "public", tags=["ops"])
    assert not replica.readable_by(memory.ref.document, peer)  # it said nothing yet
    board.interests.learn(peer, frozenset({"tag:ops"}))
    assert replica.readable_by(memory.ref.document, peer)
    board.interests.learn(peer, frozenset({"channel:weather"}))
    assert not replica.readable_by(memory.ref.document, peer)
    assert board.follow(tags=["ops"], everything=True) == {"tag:ops", "*"}
    board.unfollow(everything=True)
    board.close()
    assert MemoryBoard(replica).interests.following == {"tag:ops"}  # kept, locally
