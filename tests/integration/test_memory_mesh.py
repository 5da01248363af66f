"""`mesh.memory` on running meshes: events where a memory becomes readable, forgetting
applied by every member's service on its own, and the flag that turns it off."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt_mesh import FeatureDisabledError, Identity, Memory, Mesh, MeshConfig, P2PEvents, Replica
from crdt_mesh.services.memory.rules import lockbox_document
from crdt_mesh.testing.cluster import cluster, full
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio

ON = MeshConfig(enabled=True, federated_memory=True)
MARKER = "mesh-forget-marker-91"


def _on_disk(root: Path, marker: str) -> bool:
    return any(marker.encode() in p.read_bytes() for p in root.rglob("*") if p.is_file())


async def test_a_team_memory_is_shared_with_members_and_forgotten_by_each(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, 3, peers=full, config=ON) as nodes:
        admin, member, outsider = nodes.meshes
        shared: dict[int, list[Memory]] = {i: [] for i in range(3)}
        for i, mesh in enumerate(nodes.meshes):
            mesh.events.on(P2PEvents.MEMORY_SHARED, shared[i].append)
        await admin.memory.create_channel("alpha", members=[member.replica.peer_id])
        await wait_for(lambda: any(c.name == "alpha" for c in member.memory.channels()))
        memory = await admin.memory.store(MARKER, "team", channel="alpha", tags=["ops"])
        await wait_for(lambda: [m.content for m in shared[1]] == [MARKER])
        hits = await member.memory.query(tags=["ops"], channels=["alpha"])
        assert [h.memory.ref for h in hits] == [memory.ref]
        assert shared[0] == [] and shared[2] == []  # its author; a non-member
        assert await outsider.memory.query(tags=["ops"]) == []
        await admin.memory.forget(memory.ref)
        member_root = tmp_path / "node-1"
        await wait_for(lambda: member.memory.get(memory.ref) is None)
        await wait_for(lambda: not _on_disk(member_root, MARKER))
        assert not _on_disk(tmp_path / "node-0", MARKER)
        assert not _on_disk(tmp_path / "node-2", MARKER)  # it never went there


async def test_public_memories_reach_the_peers_that_follow_them_only(tmp_path: Path) -> None:
    async with cluster(tmp_path, 3, peers=full, config=ON) as nodes:
        author, follower, other = nodes.meshes
        follower.memory.follow(tags=["ops"])
        first = await author.memory.store("disk full on node 7", "public", tags=["ops"])
        await wait_for(lambda: follower.memory.get(first.ref) is not None)
        follower.memory.unfollow(tags=["ops"])
        other.memory.follow(channels=["weather"])
        await wait_for(
            lambda: author.memory.board.interests.of_peer(follower.replica.peer_id) == frozenset()
        )
        second = await author.memory.store("disk full again", "public", tags=["ops"])
        topic = await author.memory.store("rain at noon", "public", channel="weather")
        await wait_for(lambda: other.memory.get(topic.ref) is not None)
        await nodes.converged()
        assert other.replica.has_document(first.ref.document) is False  # never asked for
        assert not follower.replica.has_document(second.ref.document)  # no longer follows
        assert follower.memory.get(first.ref) is not None  # what it received, it keeps
        hits = await other.memory.query(tags=["ops"], remote=True, timeout=0.5)
        assert {h.memory.ref for h in hits} == {first.ref, second.ref}  # unless it asks


async def test_an_admin_rotates_a_key_another_admin_left_sealed_to_old_members(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, 3, peers=full, config=ON) as nodes:
        creator, second, member = nodes.meshes
        await creator.memory.create_channel("alpha")
        await creator.memory.set_admin("alpha", second.replica.peer_id)
        lockbox = lockbox_document(creator.replica.peer_id, "alpha")
        await wait_for(lambda: second.replica.peer_id in second.replica.members(lockbox))
        # as a change made at the same time as a rotation elsewhere: no rotation with it
        second.memory.board.groups.change("channel", "alpha", add=[member.replica.peer_id])
        keys = creator.memory.board.keys

        def sealed_to_all() -> bool:
            channel = creator.memory.channels()[0]
            return member.replica.peer_id in channel.members and keys.sealed_to(
                channel.admin, "alpha", channel.members
            )

        await wait_for(sealed_to_all)  # the services reconciled on their own
        memory = await creator.memory.store("key fits all", "encrypted", channel="alpha")
        await wait_for(lambda: member.memory.get(memory.ref) is not None)


async def test_every_memory_call_refuses_while_its_flag_is_off(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        mesh = Mesh(replica, config=MeshConfig(enabled=True, gossip=True))
        with pytest.raises(FeatureDisabledError, match="P2P_FEDERATED_MEMORY"):
            await mesh.memory.store("x")
        with pytest.raises(FeatureDisabledError, match="P2P_FEDERATED_MEMORY"):
            await mesh.memory.query(tags=["x"])


async def test_a_federated_query_reaches_peers_hops_away_and_leaks_nothing(
    tmp_path: Path,
) -> None:
    """A line 0-1-2-3 where nothing syncs after the links come up (no push, rounds an
    hour apart): what node 0 learns of node 3's memories, it learns by asking."""
    from crdt_mesh import MemoryRequest
    from crdt_mesh.testing.cluster import line

    async with cluster(tmp_path, 4, peers=line, config=ON, interval=3600, push_fanout=0) as nodes:
        asker, relay, _, holder = nodes.meshes
        await wait_for(lambda: all(len(m.peers) >= 1 for m in nodes.meshes))
        requested: list[MemoryRequest] = []
        relay.events.on(P2PEvents.MEMORY_REQUESTED, requested.append)
        public = await holder.memory.store("deploy failed: disk full", "public", tags=["ops"])
        await holder.memory.create_channel("inner", members=[nodes.meshes[2].replica.peer_id])
        secret = await holder.memory.store(
            "team-only ops note", "team", channel="inner", tags=["ops"]
        )
        assert await asker.memory.query(tags=["ops"]) == []  # nothing synced
        hits = await asker.memory.query(tags=["ops"], remote=True, hops=3, timeout=1.0)
        assert [h.memory.ref for h in hits] == [public.ref]
        assert not asker.replica.has_document(secret.ref.document)  # never sent to it
        assert requested and requested[0].asker == asker.replica.peer_id
        near = await asker.memory.query(tags=["ops"], remote=True, hops=1, timeout=0.3)
        assert [h.memory.ref for h in near] == [public.ref]  # kept from the first answer


async def test_a_peers_query_is_answered_with_fifty_memories_at_most(tmp_path: Path) -> None:
    from crdt_mesh.services.memory.federation import MAX_REMOTE_HITS, answer_from

    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        mesh = Mesh(replica, config=ON)
        with replica.batch():
            for i in range(MAX_REMOTE_HITS + 10):
                mesh.memory.board.store(f"note {i}", "public", tags=["x"])
        asker = Identity.generate().peer_id
        entries = answer_from(mesh.memory.board, asker, {"tags": ["x"], "limit": 1000})
        assert len(entries) == MAX_REMOTE_HITS  # one entry per memory, fifty memories
