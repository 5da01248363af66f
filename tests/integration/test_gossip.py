"""Membership as replicated state; discovery from bootstrap peers and records."""

from __future__ import annotations

import math
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus

from crdt_mesh import (
    FeatureDisabledError,
    Identity,
    Mesh,
    MeshConfig,
    P2PEvents,
    Replica,
    TransportError,
)
from crdt_mesh.identity import Domain
from crdt_mesh.runtime.host import LinkEnd, link_ceiling
from crdt_mesh.services.gossip import PeerRecord, record_document
from crdt_mesh.services.gossip import service as gossip_service
from crdt_mesh.services.gossip.board import write_record
from crdt_mesh.services.gossip.service import active_size
from crdt_mesh.services.gossip.swim import Status, SwimSettings
from crdt_mesh.testing.cluster import cluster, star
from tests.helpers import wait_for
from transports.memory import MemoryNetwork

pytestmark = pytest.mark.anyio

ON = MeshConfig(enabled=True, gossip=True, gossip_interval_ms=20, max_peers=4)


#: Probing every 20 ms in a process that runs a dozen meshes is what loses peers
#: falsely; these tests probe at a pace the event loop keeps up with.
CALM = SwimSettings(period=0.3, probe_timeout=0.15)


def _mesh(
    root: Path, network: MemoryNetwork, i: int, config: MeshConfig, identity: Identity
) -> tuple[Replica, Mesh]:
    replica = Replica.open(root / f"n{i}", identity)
    mesh = Mesh(
        replica,
        network.transport(f"mem://n{i}"),
        listen=f"mem://n{i}",
        peers=[] if i == 0 else ["mem://n0"],
        interval=0.05,
        config=config,
        seed=i,
        swim=CALM,
    )
    return replica, mesh


def _star(root: Path, network: MemoryNetwork, count: int, config: MeshConfig) -> Any:
    """``count`` running meshes that know only node 0's address."""
    return cluster(
        root,
        count,
        address=lambda i: f"mem://n{i}",
        transport=lambda i: network.transport(f"mem://n{i}"),
        peers=star,
        config=config,
        swim=CALM,
    )


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
    async with _star(tmp_path, network, count, ON) as nodes:
        meshes = nodes.meshes
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


async def test_active_views_stay_small_and_the_bootstrap_peer_is_not_a_hub(
    tmp_path: Path,
) -> None:
    """Twenty peers know only node 0 (max_peers 50): each links to about log2(20) + 1
    others, never past half that again, node 0 included; every entry still reaches
    every peer over the sparse overlay."""
    network = MemoryNetwork(seed=4)
    count = 20
    config = MeshConfig(enabled=True, gossip=True, gossip_interval_ms=100, max_peers=50)
    size = active_size(count, config.max_peers)
    async with _star(tmp_path, network, count, config) as nodes:
        meshes = nodes.meshes
        for i, mesh in enumerate(meshes):
            mesh.gossip.join()
            with mesh.replica.document("notes").transaction() as doc:
                doc.map("writes")[str(i)] = i
        await wait_for(lambda: all(len(m.gossip.present()) == count for m in meshes), 30)
        await wait_for(
            lambda: all(len(m.replica.document("notes").map("writes")) == count for m in meshes),
            30,
        )
        ceiling = link_ceiling(size, config.max_peers)
        # a peer whose only link is let go by the other end is alone for the moment it
        # takes to dial one from its passive view (HyParView's disconnect): wait for
        # every view to be within bounds, not for one snapshot to catch them all so
        await wait_for(lambda: all(1 <= len(m.peers) <= ceiling for m in meshes), 30)
        links = [len(m.peers) for m in meshes]
        assert sum(links) / count <= 1.5 * size, links
        assert len(meshes[0].peers) <= ceiling  # the bootstrap peer is not everyone's


async def test_a_mesh_at_rest_keeps_its_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sixteen peers, nothing written: once every view is full, no link is let go on
    purpose (swaps aside: off here) for 40 steps. A link past the view's size, up to
    the ceiling, is kept; one let go now and then made its other end dial another,
    who let one go in turn: idle churn, a handshake and a first round per link while
    nothing happened. (A peer still short may dial one whose view is full, and be
    turned away: that link was never the view's. A link lost on an overloaded
    machine is the failure detector's matter, not this test's.)"""
    monkeypatch.setattr(gossip_service, "SHUFFLE_SECONDS", math.inf)
    network = MemoryNetwork(seed=9)
    count = 16
    config = MeshConfig(enabled=True, gossip=True, gossip_interval_ms=50, max_peers=50)
    size = active_size(count, config.max_peers)
    async with _star(tmp_path, network, count, config) as nodes:
        meshes = nodes.meshes
        for mesh in meshes:
            mesh.gossip.join()
        await wait_for(lambda: all(len(m.gossip.present()) == count for m in meshes), 30)
        await wait_for(lambda: all(len(m.peers) >= size for m in meshes), 30)
        let_go: list[LinkEnd] = []
        for mesh in meshes:
            mesh.runtime.on_link_closed(
                lambda _, how: let_go.append(how) if how is LinkEnd.PARTED else None
            )
        start = max(m.gossip.steps for m in meshes)
        await wait_for(lambda: min(m.gossip.steps for m in meshes) >= start + 40, 30)
        assert let_go == []


async def test_a_bootstrap_peer_lets_the_links_past_its_limit_go_at_its_next_step(
    tmp_path: Path,
) -> None:
    """Twelve peers dial node 0 at once, before its first maintenance step (a minute
    away): it serves them all (joiners learn the records), but its next step lets
    every link past its ceiling go at once, not one per ten steps."""
    network = MemoryNetwork(seed=6)
    count = 13
    config = MeshConfig(enabled=True, gossip=True, gossip_interval_ms=60_000, max_peers=50)
    async with _star(tmp_path, network, count, config) as nodes:
        seed = nodes.meshes[0]
        for mesh in nodes.meshes:
            mesh.gossip.join()

        def limit() -> int:
            return link_ceiling(active_size(len(seed.gossip.present()), 50), 50)

        await wait_for(lambda: len(seed.gossip.present()) == count and len(seed.peers) > limit())
        await seed.gossip.maintain()
        assert len(seed.peers) <= limit()


async def test_a_link_closed_on_purpose_raises_no_suspicion(tmp_path: Path) -> None:
    """A peer that lets a link go (a shuffle, a full view) says so before closing it:
    the other end does not take it for a crash, and neither end suspects the other."""
    network = MemoryNetwork(seed=8)
    config = MeshConfig(enabled=True, gossip=True, gossip_interval_ms=50, max_peers=8)
    async with _star(tmp_path, network, 2, config) as nodes:
        a, b = nodes.meshes  # b knows a's address alone
        for mesh in nodes.meshes:
            mesh.gossip.join()
        await wait_for(lambda: all(len(m.gossip.present()) == 2 for m in nodes.meshes), 30)
        await wait_for(lambda: a.replica.peer_id in b.peers and b.replica.peer_id in a.peers, 30)
        ended = (a.gossip.links_ended, b.gossip.links_ended)
        await a.runtime.disconnect(b.replica.peer_id)
        assert a.gossip.links_ended == ended[0] + 1  # (it left a's view at once)
        await wait_for(lambda: b.gossip.links_ended > ended[1], 10)  # (b then dials a again)
        assert a.gossip.links_lost == b.gossip.links_lost == 0
        for mesh, other in ((a, b), (b, a)):
            assert mesh.gossip.status(other.replica.peer_id) is Status.ALIVE


async def test_a_full_peer_says_so_and_is_not_dialled_again_at_once(tmp_path: Path) -> None:
    """A peer at its link ceiling serves a newcomer one round and closes with the
    word "full": the newcomer does not suspect it, and its next steps dial others,
    not the same full peer every interval."""
    network = MemoryNetwork(seed=10)
    config = MeshConfig(enabled=True, gossip=True, gossip_interval_ms=60_000, max_peers=1)
    async with _star(tmp_path, network, 3, config) as nodes:
        for mesh in nodes.meshes:
            mesh.gossip.join()
        # node 0 keeps one of the other two; the other has a round with it now and then
        await wait_for(lambda: any(m.gossip.links_ended for m in nodes.meshes[1:]))
        late = next(m for m in nodes.meshes[1:] if m.gossip.links_ended)
        await wait_for(lambda: len(late.gossip.present()) == 3)
        assert late.gossip.links_lost == 0
        dialled: list[str] = []

        async def connect(address: str) -> Any:
            dialled.append(address)
            raise TransportError("not in this test")

        late.runtime.connect = connect  # type: ignore[method-assign]
        for peer in late.peers:
            await late.runtime.disconnect(peer)  # short of links: each step dials
        for _ in range(10):
            await late.gossip.maintain()
        assert dialled and "mem://n0" not in dialled  # the full peer is left alone


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
    async with _star(tmp_path, network, count, stable) as nodes:
        meshes = nodes.meshes
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
        # Proof that no copy is still on its way, rather than a sleep: every peer stopped
        # pushing it; then a second message, sent after that, reached everyone too.
        await wait_for(lambda: all(m.gossip._broadcaster.active == 0 for m in meshes), 30)
        meshes[0].gossip.propagate(GossipMessageType.TASK_ANNOUNCEMENT, "marker", ttl=8, fanout=8)
        await wait_for(lambda: all(len(received[i]) >= 2 for i in range(1, count)), timeout=30)
        assert received[0] == []  # the origin does not hear itself
        assert all(received[i] == [{"task": "task-123"}, "marker"] for i in range(1, count))
        assert len(events) == 2


def _connected(meshes: list[Mesh]) -> bool:
    """Whether the links form one connected overlay, each link up on both sides."""
    index = {m.replica.peer_id: m for m in meshes}

    def linked(a: Mesh, b: Mesh) -> bool:
        ours, theirs = (
            a.runtime._connections.get(b.replica.peer_id),
            b.runtime._connections.get(a.replica.peer_id),
        )
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
            now = int(time.time() * 1000)
            body = cbor2.dumps(
                [2, alice.peer_id.key, "heartbeat", None, now, b"12345678", 3, 3], canonical=True
            )
            signature = mallory.sign(Domain.BROADCAST, body)  # claims to be alice's
            forged = b"B" + cbor2.dumps([body, signature, 0])
            for data in (forged, b"Bgarbage", b"B" + cbor2.dumps([1, 2]), b"?unknown"):
                mesh.runtime.receive_ephemeral(mallory.peer_id, data)
            assert got == [] and mesh.gossip.dropped == 3  # forged, garbage, malformed
            assert mesh.runtime.unrouted_frames == 1  # a channel nobody here owns
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
            mesh.runtime.receive_ephemeral(sender.peer_id, b"Banything at all")
            assert mesh.gossip.delivered == 0 and mesh.gossip.dropped == 0
            assert mesh.runtime.unrouted_frames == 1  # gossip off owns no channel


async def _run_until(
    mesh: Mesh, replica: Replica, stop: anyio.Event, *, task_status: TaskStatus[Mesh]
) -> None:
    """Run ``mesh`` in a task of its own until ``stop`` is set (then it just stops)."""
    with replica:
        async with mesh:
            task_status.started(mesh)
            await stop.wait()


async def test_a_crashed_peer_is_lost_and_a_restarted_one_found_again(tmp_path: Path) -> None:
    """SWIM over real links: the others declare a silent peer lost; it comes back."""
    network = MemoryNetwork(seed=9)
    config = MeshConfig(enabled=True, gossip=True, gossip_interval_ms=100, max_peers=8)
    count, victim = 5, 3
    identities = [Identity.generate() for _ in range(count)]
    lost: dict[int, list[PeerRecord]] = {i: [] for i in range(count)}
    found: dict[int, list[PeerRecord]] = {i: [] for i in range(count)}
    crash = anyio.Event()
    async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
        meshes: list[Mesh] = []
        for i in range(count):
            replica, mesh = _mesh(tmp_path, network, i, config, identities[i])
            if i == victim:
                await tg.start(_run_until, mesh, replica, crash)
            else:
                stack.enter_context(replica)
                await stack.enter_async_context(mesh)
            meshes.append(mesh)
            mesh.events.on(P2PEvents.PEER_LOST, lost[i].append)
            mesh.events.on(P2PEvents.PEER_DISCOVERED, found[i].append)
            mesh.gossip.join()
        others = [i for i in range(count) if i != victim]
        gone = identities[victim].peer_id
        await wait_for(lambda: all(len(meshes[i].gossip.present()) == count for i in others), 30)

        dials_before = sum(meshes[i].runtime.ephemeral_dials for i in others)
        lost_before = {i: meshes[i].gossip.links_lost for i in others}
        crash.set()  # no leave(): the peer just stops answering
        # a neighbour suspects it as the link ends (not later, when a dial of it fails)
        await wait_for(lambda: any(meshes[i].gossip.links_lost > lost_before[i] for i in others))
        for i in others:
            if meshes[i].gossip.links_lost > lost_before[i]:
                assert meshes[i].gossip.status(gone) is not Status.ALIVE
        await wait_for(
            lambda: all(meshes[i].gossip.status(gone) is Status.DEAD for i in others), 30
        )
        # its neighbours suspected it as their links ended, without a word; no link
        # was dialled to probe it (Runtime.ephemeral_dials counts such links)
        assert sum(meshes[i].gossip.links_lost for i in others) >= 1
        assert sum(meshes[i].runtime.ephemeral_dials for i in others) == dials_before

        await wait_for(lambda: all([r.peer for r in lost[i]] == [gone] for i in others), 10)
        assert all(len(meshes[i].gossip.peers()) == count for i in others)  # records remain
        assert all(len(meshes[i].gossip.present()) == count - 1 for i in others)

        replica, mesh = _mesh(tmp_path, network, victim, config, identities[victim])
        stop = anyio.Event()
        await tg.start(_run_until, mesh, replica, stop)
        await wait_for(
            lambda: all(meshes[i].gossip.status(gone) is Status.ALIVE for i in others), 30
        )
        await wait_for(lambda: all(gone in [r.peer for r in found[i]] for i in others), 10)
        assert all(len(meshes[i].gossip.present()) == count for i in others)
        stop.set()


async def test_a_peer_known_by_its_record_alone_and_unreachable_is_declared_dead(
    tmp_path: Path,
) -> None:
    """Probes run over links, so a peer that crashed while linked to nobody (its record
    spread, its dials all failed) was never probed and stayed alive in every view. A
    dial of it that fails at every address it lists now has it probed, through the
    dialler's neighbours; nobody reaches it, and every peer declares it dead."""
    network = MemoryNetwork(seed=12)
    config = MeshConfig(enabled=True, gossip=True, gossip_interval_ms=100, max_peers=8)
    ghost = Identity.generate()
    with Replica.open(tmp_path / "ghost", ghost) as ghost_replica:
        write_record(ghost_replica, [], ["mem://nobody-listens-here"])
        async with _star(tmp_path / "mesh", network, 3, config) as nodes:
            for mesh in nodes.meshes:
                mesh.gossip.join()
            first = nodes.meshes[0].replica
            first.ingest(ghost_replica.missing_from(first.heads())).raise_first()
            await wait_for(
                lambda: all(m.gossip.status(ghost.peer_id) is Status.DEAD for m in nodes.meshes),
                30,
            )
