"""Each privacy level is a promise, checked by scanning every frame and every file.

Five replicas on the simulated network (real replicas, real sync, every frame seen
with its sender and receiver). Markers: 0 occurrences where they must not be,
present where they must (the positive controls: a scan that finds nothing
anywhere proves nothing).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from crdt_mesh.services.memory import FederatedMemoryError, MemoryBoard, MemoryPrivacyLevel
from crdt_mesh.testing import SimulatedMesh

TEAM, ORG, PUBLIC, PRIVATE = "team-marker-a1", "org-marker-b2", "public-marker-c3", "private-d4"
TOPIC = "topic-marker-j10"
AFTER_REMOVAL, FORGOTTEN = "after-removal-e5", "forgotten-marker-f6"


class World:
    def __init__(self, root: Path) -> None:
        self.received: dict[int, bytearray] = defaultdict(bytearray)
        self.sim = SimulatedMesh(5, seed=7, root=root, wiretap=self._wiretap)
        self.boards = [MemoryBoard(self.sim.replica(i)) for i in range(5)]
        self.ids = [b.me for b in self.boards]

    def _wiretap(self, sender: int, receiver: int, frame: bytes) -> None:
        self.received[receiver] += frame

    def run(self, rounds: int = 12) -> None:
        for _ in range(rounds):
            self.tell_interests()
            self.sim.step()
        for board in self.boards:
            board.settle()

    def tell_interests(self) -> None:
        """What the service's announcements do over links: each learns what the others follow."""
        for board in self.boards:
            for other in self.boards:
                if other is not board:
                    board.interests.learn(other.me, other.announcement())

    def heard(self, index: int, marker: str) -> bool:
        return marker.encode() in self.received[index]

    def on_disk(self, index: int, marker: str) -> bool:
        self.sim.replica(index).store.sync()
        folder = self.sim.root / f"replica-{index}"
        needle = marker.encode()
        return any(needle in p.read_bytes() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.sim.close()


def test_each_level_reaches_exactly_whom_it_may(world: World) -> None:
    admin, b1, b2, b3, _b4 = world.boards
    admin.create_channel("alpha", members=[world.ids[1], world.ids[2]])
    admin.create_organization("acme", members=[world.ids[3]])
    b1.follow(tags=["news"])
    b2.follow(everything=True)
    b3.follow(channels=["daily"])  # _b4 follows nothing: no public memory reaches it
    world.run(4)
    admin.store(TEAM, "team", channel="alpha", tags=["scheduling"])
    admin.store(ORG, "organization", organization="acme")
    admin.store(PUBLIC, "public", tags=["news"])
    admin.store(TOPIC, "public", channel="daily", tags=["weather"])
    admin.store(PRIVATE, "private")
    world.run()

    readers = {TEAM: {1, 2}, ORG: {3}, PUBLIC: {1, 2}, TOPIC: {2, 3}, PRIVATE: set()}
    for marker, allowed in readers.items():
        for i in range(1, 5):
            assert world.heard(i, marker) == (i in allowed), (marker, i)
            assert world.on_disk(i, marker) == (i in allowed), (marker, i)
            shows = {m.content for m in world.boards[i].memories()}
            assert (marker in shows) == (i in allowed), (marker, i)
    assert world.sim.converged()  # both ends of each link agree on what they offer
    assert not world.on_disk(0, PRIVATE)  # sealed at rest, even in its own store
    assert {m.content for m in admin.memories()} == {TEAM, ORG, PUBLIC, TOPIC, PRIVATE}
    assert b3.query(tags=["scheduling"]) == []  # a query never shows what it may not read
    assert [h.memory.content for h in b1.query(tags=["scheduling"])] == [TEAM]
    assert b2.get(b1.memories()[0].ref) is not None


def test_a_removed_member_gets_nothing_written_after_and_loses_the_view(world: World) -> None:
    admin, b1, b2, *_ = world.boards
    admin.create_channel("alpha", members=[world.ids[1], world.ids[2]])
    world.run(4)
    b1.store(TEAM, "team", channel="alpha")
    world.run()
    assert any(m.content == TEAM for m in b2.memories())
    admin.remove_member("channel", "alpha", world.ids[2])
    world.run(4)
    b1.store(AFTER_REMOVAL, "team", channel="alpha")
    world.run()
    assert world.heard(0, AFTER_REMOVAL) and world.on_disk(0, AFTER_REMOVAL)  # control
    assert not world.heard(2, AFTER_REMOVAL) and not world.on_disk(2, AFTER_REMOVAL)
    assert b2.memories() == [] and b2.query(tags=None) == []


def test_forgetting_leaves_no_plaintext_in_any_store_that_held_it(world: World) -> None:
    admin, b1, *_ = world.boards
    admin.create_channel("alpha", members=[world.ids[1], world.ids[2]])
    world.run(4)
    memory = b1.store(FORGOTTEN, "team", channel="alpha", tags=["x"])
    kept = b1.store(TEAM, "team", channel="alpha")
    world.run()
    assert all(world.on_disk(i, FORGOTTEN) for i in (0, 1, 2))  # control
    b1.forget(memory.ref)
    world.run()
    for i in (0, 1, 2):
        assert not world.on_disk(i, FORGOTTEN), i
        assert world.on_disk(i, TEAM), i  # the rest is kept
        assert world.boards[i].get(memory.ref) is None
        assert world.boards[i].get(kept.ref) is not None
    heads = [world.sim.replica(i).heads() for i in (0, 1, 2)]
    key = (memory.ref.document, world.ids[1])
    assert heads[0][key] == heads[1][key] == heads[2][key]  # all purged at one point
    with pytest.raises(Exception, match="unknown or forgotten"):
        b1.update(memory.ref, content="back")


def test_a_private_memory_is_sealed_at_rest_and_forgotten_locally(world: World) -> None:
    admin = world.boards[0]
    memory = admin.store(PRIVATE, MemoryPrivacyLevel.PRIVATE, tags=["mine"])
    assert admin.get(memory.ref) is not None and not world.on_disk(0, PRIVATE)
    admin.forget(memory.ref)
    assert admin.get(memory.ref) is None and admin.memories() == []


ENCRYPTED, ROTATED, CHOSEN = "encrypted-marker-g7", "rotated-marker-h8", "chosen-marker-i9"


def test_encrypted_memories_travel_anywhere_and_open_for_key_holders_only(world: World) -> None:
    admin, b1, b2, b3, b4 = world.boards
    admin.create_channel("alpha", members=[world.ids[1], world.ids[2]])
    b3.follow(channels=["alpha"])  # a relay that carries the channel's ciphertext
    world.run(4)
    memory = b1.store(ENCRYPTED, "encrypted", channel="alpha", tags=["secret"])
    world.run()
    for i in range(5):  # ciphertext anyone may carry: held by whoever follows the channel
        carries = world.sim.replica(i).has_document(memory.ref.document)
        assert carries == (i != 4), i  # members follow their channel without asking
        assert not world.heard(i, ENCRYPTED) and not world.on_disk(i, ENCRYPTED), i
    for i, board in enumerate(world.boards):  # only the channel's key holders open it
        opened = board.get(memory.ref)
        assert (opened is not None and opened.content == ENCRYPTED) == (i in (0, 1, 2)), i
    assert [h.memory.ref for h in b2.query(tags=["secret"])] == [memory.ref]
    assert b3.query(tags=["secret"]) == []

    admin.remove_member("channel", "alpha", world.ids[2])  # rotates the key
    world.run(4)
    later = b1.store(ROTATED, "encrypted", channel="alpha")
    world.run()
    assert world.sim.replica(3).has_document(later.ref.document)  # the relay carries it
    b2.follow(channels=["alpha"])  # the removed member asks for the ciphertext ...
    world.run()
    assert world.sim.replica(2).has_document(later.ref.document)  # ... and carries it ...
    assert b2.get(later.ref) is None  # ... but holds no key written after its removal
    assert admin.get(later.ref) is not None and b1.get(later.ref) is not None
    assert b2.get(memory.ref) is not None  # what it could read before, it keeps

    chosen = admin.store(CHOSEN, "encrypted", readers=[world.ids[4]])
    world.run()
    assert b4.get(chosen.ref) is not None and admin.get(chosen.ref) is not None
    assert all(world.boards[i].get(chosen.ref) is None for i in (1, 2, 3))
    assert not any(world.heard(i, CHOSEN) or world.on_disk(i, CHOSEN) for i in range(5))


def test_a_channel_key_rotates_after_a_hundred_memories(world: World) -> None:
    admin = world.boards[0]
    admin.create_channel("alpha", members=[world.ids[1]])
    epochs = set()
    for i in range(101):
        memory = admin.store(f"note {i}", "encrypted", channel="alpha")
        stored = world.sim.replica(0).document(memory.ref.document).map("memory").get("encrypted")
        epochs.add(stored["epoch"])
    mine = admin.me.key.hex()
    assert epochs == {f"1:{mine}", f"2:{mine}"}


SPANNING, AFTER_DROP = "spanning-marker-k11", "after-drop-marker-l12"


def test_an_organization_of_channels_reaches_their_members_and_nobody_else(world: World) -> None:
    admin, b1, _b2, b3, b4 = world.boards
    admin.create_channel("alpha", members=[world.ids[1], world.ids[2]])
    admin.create_organization("acme", members=[world.ids[3]])
    org = admin.add_channel("acme", "alpha")
    assert org.members == {world.ids[i] for i in range(4)} and org.channels == {(admin.me, "alpha")}
    world.run(4)
    b1.store(SPANNING, "organization", organization="acme")  # a channel member writes
    world.run()
    for i in range(5):
        assert world.heard(i, SPANNING) == (i in (0, 2, 3)), i  # (1 wrote it)
        shows = {m.content for m in world.boards[i].memories()}
        assert (SPANNING in shows) == (i in (0, 1, 2, 3)), i
    assert [m.organization for m in b3.memories()] == ["acme"]
    assert b4.memories() == [] and not world.on_disk(4, SPANNING)

    admin.remove_channel("acme", "alpha")
    world.run(4)
    admin.store(AFTER_DROP, "organization", organization="acme")
    world.run()
    assert world.heard(3, AFTER_DROP)  # control: the organization's own member
    assert not any(world.heard(i, AFTER_DROP) for i in (1, 2, 4))
    assert b1.organizations()[0].members == {admin.me, world.ids[3]}  # it learnt it


def test_a_second_admin_changes_members_and_rotates_the_key(world: World) -> None:
    admin, b1, b2, _b3, b4 = world.boards
    admin.create_channel("alpha", members=[world.ids[2]])
    channel = admin.set_admin("channel", "alpha", world.ids[1])
    assert channel.admins == {admin.me, b1.me} and b1.me in channel.members
    world.run(4)
    b1.add_member("channel", "alpha", world.ids[4])
    b1.remove_member("channel", "alpha", world.ids[2])
    world.run(4)
    memory = admin.store(ROTATED, "encrypted", channel="alpha")
    world.run()
    assert b4.get(memory.ref) is not None and b2.get(memory.ref) is None
    with pytest.raises(FederatedMemoryError, match="only its creator removes it"):
        b1.remove_member("channel", "alpha", admin.me)
    with pytest.raises(FederatedMemoryError, match="only an admin"):
        b4.add_member("channel", "alpha", world.ids[3])
    with pytest.raises(FederatedMemoryError, match="only the creator"):
        b1.set_admin("channel", "alpha", world.ids[4])
