"""`mesh.memory` on running meshes: events where a memory becomes readable, forgetting
applied by every member's service on its own, and the flag that turns it off."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt_mesh import FeatureDisabledError, Identity, Memory, Mesh, MeshConfig, P2PEvents, Replica
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


async def test_every_memory_call_refuses_while_its_flag_is_off(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        mesh = Mesh(replica, config=MeshConfig(enabled=True, gossip=True))
        with pytest.raises(FeatureDisabledError, match="P2P_FEDERATED_MEMORY"):
            await mesh.memory.store("x")
        with pytest.raises(FeatureDisabledError, match="P2P_FEDERATED_MEMORY"):
            await mesh.memory.query(tags=["x"])
