"""Penalties in running meshes: honest peers on a bad network never cross the threshold;
a hostile peer's frames, whatever they are, end in typed drops and never stop the node."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_mesh import Durability, Identity, Mesh, MeshConfig, Replica
from crdt_mesh.errors import LinkClosed
from crdt_mesh.testing import Faults
from crdt_mesh.testing.strategies import sync_frames
from tests.helpers import feed, wait_for
from transports.memory import MemoryNetwork

GOSSIP = MeshConfig(enabled=True, gossip=True, gossip_interval_ms=50, max_peers=8)


@pytest.mark.anyio
@pytest.mark.parametrize("seed", [3, 4, 5, 6])
async def test_honest_peers_on_a_lossy_network_are_never_penalised(
    tmp_path: Path, seed: int
) -> None:
    """15% loss, duplication, reordering; writes, broadcasts and failure detection
    throughout. Every peer converges, and no table holds a refusal or a breach."""
    faults = Faults(loss=0.15, duplication=0.05, reorder=0.1)
    network = MemoryNetwork(seed=seed, faults=faults)
    async with AsyncExitStack() as stack:
        meshes = []
        for i in range(4):
            replica = stack.enter_context(
                Replica.open(tmp_path / f"r{i}", Identity.generate(), durability=Durability.PROCESS)
            )
            mesh = Mesh(
                replica,
                network.transport(f"mem://n{i}"),
                listen=f"mem://n{i}",
                peers=[f"mem://n{j}" for j in range(i)],
                interval=0.05,
                config=GOSSIP,
                seed=i,
            )
            meshes.append(await stack.enter_async_context(mesh))
            mesh.gossip.join(capabilities=["x"])
        for step in range(40):
            for i, mesh in enumerate(meshes):
                notes = mesh.replica.document("notes")
                with notes.transaction():
                    notes.map("m")[f"{i}-{step}"] = "y" * 300
                if step % 10 == 0:
                    mesh.gossip.propagate("note", step)
            await anyio.sleep(0.03)
        heads = lambda: [m.replica.heads() for m in meshes]  # noqa: E731
        await wait_for(lambda: all(h == heads()[0] for h in heads()) and len(heads()[0]) >= 8, 60)
        for mesh in meshes:
            penalties = mesh.penalties
            assert penalties.episodes == 0, penalties.offences
            assert (
                penalties.offences[
                    next(o for o in penalties.offences if o.value == "protocol_breach")
                ]
                == 0
            )
            now = anyio.current_time()
            assert all(penalties.score(m.replica.peer_id, now) < 50 for m in meshes)


@contextmanager
def live_node() -> Iterator[
    tuple[anyio.from_thread.BlockingPortal, Mesh, MemoryNetwork, list[bytes]]
]:
    """A node serving in a thread of its own, with a peer's entries to replay at it."""
    network = MemoryNetwork(seed=5)
    with tempfile.TemporaryDirectory() as root, anyio.from_thread.start_blocking_portal() as portal:
        replica = Replica.open(
            Path(root) / "node", Identity.generate(), durability=Durability.PROCESS
        )
        document = replica.document("notes")
        for i in range(20):
            with document.transaction():
                document.map("m")[str(i)] = i
        mesh = Mesh(replica, network.transport("mem://node"), listen="mem://node", interval=0.05)
        entries = [e.encoded for e in feed(Identity.generate(), 4)]
        try:
            with portal.wrap_async_context_manager(mesh):
                yield portal, mesh, network, entries
        finally:
            replica.close()


def test_a_hostile_peer_against_a_live_node_changes_nothing_it_may_not() -> None:
    """Random but well-formed frames of every message type, with and without a hello,
    each example on a fresh link with a fresh key: the node keeps serving, holds a
    bounded amount for it, and an honest peer still syncs with it afterwards."""
    with live_node() as (portal, mesh, network, entries):
        before = mesh.replica.summary().entries

        async def send(frames: list[bytes], identity: Identity) -> None:
            link = await network.transport().dial("mem://node", identity)
            try:
                for frame in frames:
                    await link.send(frame)
                with anyio.move_on_after(0.05):
                    async for _ in link:
                        pass
            except LinkClosed:
                pass
            finally:
                await link.aclose()

        @settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(
            hello=st.booleans(),
            frames=st.lists(sync_frames(entries), max_size=12),
        )
        def attack(hello: bool, frames: list[bytes]) -> None:
            from crdt_mesh.sync.messages import PROTOCOL_VERSION, Hello, encode

            prefix = [encode(Hello(PROTOCOL_VERSION, 1 << 20))] if hello else []
            portal.call(send, prefix + frames, Identity.generate())
            replica = mesh.replica
            assert replica.pending_bytes <= 4 * 1024 * 1024
            assert all(
                c.peer.session.wants <= len(replica.heads())
                for c in mesh.runtime._connections.values()
            )

        attack()

        async def honest_sync() -> None:
            with (
                tempfile.TemporaryDirectory() as root,
                Replica.open(Path(root) / "h", Identity.generate()) as honest,
            ):
                async with Mesh(honest, network.transport(), peers=["mem://node"], interval=0.05):
                    await wait_for(lambda: honest.summary().entries >= before, 30)

        portal.call(honest_sync)
        assert mesh.replica.summary().entries >= before
