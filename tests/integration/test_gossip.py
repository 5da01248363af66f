"""Membership as replicated state; discovery from bootstrap peers and records."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from crdt_mesh import FeatureDisabledError, Identity, Mesh, MeshConfig, P2PEvents, Replica
from crdt_mesh.services.gossip import PeerRecord, record_document
from tests.helpers import wait_for
from transports.memory import MemoryNetwork

pytestmark = pytest.mark.anyio

ON = MeshConfig(enabled=True, gossip=True, gossip_interval_ms=20, max_peers=4)


async def _star(
    stack: AsyncExitStack, root: Path, network: MemoryNetwork, count: int, config: MeshConfig
) -> list[Mesh]:
    """``count`` running meshes that know only node 0's address."""
    meshes = []
    for i in range(count):
        replica = stack.enter_context(Replica.open(root / f"n{i}", Identity.generate()))
        mesh = Mesh(
            replica,
            network.transport(f"mem://n{i}"),
            listen=f"mem://n{i}",
            peers=[] if i == 0 else ["mem://n0"],
            interval=0.05,
            config=config,
            seed=i,
        )
        meshes.append(await stack.enter_async_context(mesh))
    return meshes


async def test_gossip_calls_refuse_while_the_flag_is_off(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        for config in (MeshConfig(), MeshConfig(enabled=True)):
            mesh = Mesh(replica, MemoryNetwork().transport(), config=config)
            for call in (mesh.gossip.join, mesh.gossip.leave, mesh.gossip.peers):
                with pytest.raises(FeatureDisabledError, match="P2P_"):
                    call()


async def test_peers_joining_through_one_bootstrap_discover_each_other(tmp_path: Path) -> None:
    """Twelve peers know only node 0; records spread and each dials peers it learns of."""
    network = MemoryNetwork(seed=2)
    count = 12
    discovered: dict[int, set[str]] = {i: set() for i in range(count)}
    async with AsyncExitStack() as stack:
        meshes = await _star(stack, tmp_path, network, count, ON)
        for i, mesh in enumerate(meshes):
            mesh.events.on(P2PEvents.PEER_DISCOVERED, lambda r, i=i: discovered[i].add(str(r.peer)))
            mesh.gossip.join(capabilities=["code-review"] if i % 2 else ["typescript"])
        everyone = {str(m.replica.peer_id) for m in meshes}
        await wait_for(lambda: all(len(m.gossip.peers()) == count for m in meshes), timeout=30)
        await wait_for(
            lambda: all(
                discovered[i] == everyone - {str(m.replica.peer_id)} for i, m in enumerate(meshes)
            ),
            timeout=30,
        )
        # discovery dialled beyond the bootstrap peer, within the bounded active view
        await wait_for(lambda: sum(len(m.peers) for m in meshes[1:]) > 2 * (count - 1), timeout=30)
        assert all(len(m.peers) <= ON.max_peers for m in meshes)
        assert len(meshes[3].gossip.with_capabilities("code-review")) == count // 2

        # a peer that leaves on purpose says so: everyone sees it, and hears it once
        lost: list[PeerRecord] = []
        meshes[0].events.on(P2PEvents.PEER_LOST, lost.append)
        meshes[5].gossip.leave()
        await wait_for(lambda: all(len(m.gossip.peers()) == count - 1 for m in meshes), timeout=30)
        await wait_for(lambda: [r.peer for r in lost] == [meshes[5].replica.peer_id])
        assert meshes[0].gossip.record(meshes[5].replica.peer_id).left  # type: ignore[union-attr]


async def test_only_the_owner_writes_its_record(tmp_path: Path) -> None:
    network = MemoryNetwork()
    alice, mallory = Identity.generate(), Identity.generate()
    with Replica.open(tmp_path / "a", alice) as a, Replica.open(tmp_path / "m", mallory) as m:
        async with Mesh(a, network.transport(), listen="mem://a", config=ON) as mesh_a:
            mesh_a.gossip.join(capabilities=["honest"])
        m.ingest(a.missing_from({})).raise_first()
        from crdt_mesh import NotWritable

        document = m.document(record_document(alice.peer_id))
        with pytest.raises(NotWritable):
            document.transaction().__enter__()
        await anyio.sleep(0)


async def test_a_broadcast_reaches_every_peer_exactly_once(tmp_path: Path) -> None:
    from crdt_mesh import GossipMessageType

    network = MemoryNetwork(seed=4)
    count = 10
    stable = MeshConfig(enabled=True, gossip=True, gossip_interval_ms=500, max_peers=4)
    received: dict[int, list[object]] = {i: [] for i in range(count)}
    async with AsyncExitStack() as stack:
        meshes = await _star(stack, tmp_path, network, count, stable)
        for i, mesh in enumerate(meshes):
            mesh.gossip.join()
            mesh.gossip.on("message", lambda m, i=i: received[i].append(m.payload))
        await wait_for(lambda: all(len(m.gossip.peers()) == count for m in meshes), timeout=30)
        await wait_for(lambda: _connected(meshes), timeout=30)
        events: list[object] = []
        meshes[4].events.on(P2PEvents.MESSAGE_RECEIVED, events.append)
        # fanout above the active view's size floods it (as HyParView broadcasts do)
        message_id = meshes[0].gossip.propagate(
            GossipMessageType.TASK_ANNOUNCEMENT, {"task": "task-123"}, ttl=8, fanout=8
        )
        assert len(message_id) == 16
        await wait_for(lambda: all(received[i] for i in range(1, count)), timeout=30)
        await anyio.sleep(0.2)  # any duplicate would have arrived by now
        assert received[0] == []  # the origin does not hear itself
        assert all(received[i] == [{"task": "task-123"}] for i in range(1, count))
        assert len(events) == 1


def _connected(meshes: list[Mesh]) -> bool:
    """Whether the links form one connected overlay, each link up on both sides."""
    index = {m.replica.peer_id: m for m in meshes}

    def linked(a: Mesh, b: Mesh) -> bool:
        ours, theirs = a._connections.get(b.replica.peer_id), b._connections.get(a.replica.peer_id)
        return bool(ours and theirs and ours.peer.ready and theirs.peer.ready)

    seen, todo = {meshes[0].replica.peer_id}, [meshes[0]]
    while todo:
        mesh = todo.pop()
        for peer in mesh.peers:
            if peer in index and peer not in seen and linked(mesh, index[peer]):
                seen.add(peer)
                todo.append(index[peer])
    return len(seen) == len(meshes)


async def test_forged_and_malformed_broadcasts_are_dropped(tmp_path: Path) -> None:
    import cbor2

    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        async with Mesh(replica, MemoryNetwork().transport(), listen="mem://r", config=ON) as mesh:
            got: list[object] = []
            mesh.gossip.on("message", got.append)
            mallory, alice = Identity.generate(), Identity.generate()
            body = cbor2.dumps(
                [1, alice.peer_id.key, "heartbeat", None, 1, b"12345678"], canonical=True
            )
            forged = cbor2.dumps([body, mallory.sign(b"crdt_mesh/broadcast/v1\x00" + body), 3, 3])
            for data in (forged, b"garbage", cbor2.dumps([1, 2])):
                mesh.gossip.receive(mallory.peer_id, data)
            assert got == [] and mesh.gossip.dropped == 3
            with pytest.raises(ValueError):
                mesh.gossip.propagate("heartbeat", ttl=0)


async def test_a_mesh_with_gossip_off_ignores_broadcasts(tmp_path: Path) -> None:
    off = MeshConfig(enabled=True)  # P2P_GOSSIP is off
    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        async with Mesh(replica, MemoryNetwork().transport(), listen="mem://r", config=off) as mesh:
            sender = Identity.generate()
            for call in (
                lambda: mesh.gossip.on("message", print),
                lambda: mesh.gossip.propagate("heartbeat"),
            ):
                with pytest.raises(FeatureDisabledError, match="P2P_GOSSIP"):
                    call()
            mesh._on_broadcast(sender.peer_id, b"anything at all")
            assert mesh.gossip.delivered == 0 and mesh.gossip.dropped == 0
