"""Meshes over the memory transport converge, on asyncio and on trio."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import cbor2
import pytest

from crdt_mesh import Identity, Replica
from crdt_mesh.errors import LinkClosed
from crdt_mesh.mesh import Mesh
from crdt_mesh.sync.messages import MAX_FRAME, PROTOCOL_VERSION, Hello, encode
from crdt_mesh.testing import Faults
from crdt_mesh.testing.cluster import cluster, full
from tests.helpers import feed, wait_for
from transports.memory import MemoryNetwork

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def mesh_of(
    tmp_path: Path, count: int, network: MemoryNetwork, interval: float = 0.05, **options: Any
) -> AsyncIterator[list[Mesh]]:
    """``count`` meshes on ``network``, each dialling the ones before it."""
    async with cluster(
        tmp_path,
        count,
        address=lambda i: f"mem://node-{i}",
        transport=lambda i: network.transport(f"mem://node-{i}"),
        peers=full,
        interval=interval,
        **options,
    ) as nodes:
        yield nodes.meshes


def converged(meshes: list[Mesh]) -> bool:
    heads = [m.replica.heads() for m in meshes]
    return all(h == heads[0] for h in heads) and bool(heads[0])


async def test_meshes_converge(tmp_path: Path) -> None:
    network = MemoryNetwork(seed=1)
    async with mesh_of(tmp_path, 4, network) as meshes:
        for i, mesh in enumerate(meshes):
            notes = mesh.replica.document("notes")
            with notes.transaction():
                notes.map("m")[f"k{i}"] = i
        await wait_for(lambda: converged(meshes))
        contents = [m.replica.document("notes").map("m").to_py() for m in meshes]
        assert all(c == {f"k{i}": float(i) for i in range(4)} for c in contents)


async def test_meshes_converge_through_loss_duplication_and_reordering(tmp_path: Path) -> None:
    network = MemoryNetwork(seed=3, faults=Faults(loss=0.1, duplication=0.1, reorder=0.1))
    async with mesh_of(tmp_path, 3, network) as meshes:
        for round_ in range(5):
            for i, mesh in enumerate(meshes):
                notes = mesh.replica.document("notes")
                with notes.transaction():
                    notes.map("m")[f"{i}-{round_}"] = round_
        await wait_for(lambda: converged(meshes) and len(meshes[0].replica.heads()) == 3)
        assert all(m.replica.summary().entries == 15 for m in meshes)


async def test_partition_heals(tmp_path: Path) -> None:
    network = MemoryNetwork(seed=5)
    async with mesh_of(tmp_path, 3, network) as meshes:
        await wait_for(lambda: all(len(m.peers) == 2 for m in meshes))
        network.partition(["mem://node-0"], ["mem://node-1", "mem://node-2"])
        cut = network.cut_frames
        for i, mesh in enumerate(meshes):
            notes = mesh.replica.document("notes")
            with notes.transaction():
                notes.map("m")[f"k{i}"] = i
        await wait_for(lambda: meshes[1].replica.heads() == meshes[2].replica.heads())
        # Proof that the window passed: pushes and a few rounds of frames across the cut
        # were sent, and dropped by it (not a sleep that hopes they were).
        await wait_for(lambda: network.cut_frames >= cut + 12)
        assert len(meshes[0].replica.heads()) == 1  # cut off
        network.heal()
        await wait_for(lambda: converged(meshes))


async def test_a_bad_peer_is_dropped_and_honest_sync_goes_on(tmp_path: Path) -> None:
    network = MemoryNetwork(seed=9)
    async with mesh_of(tmp_path, 2, network) as meshes:
        honest, other = meshes
        mallory = Identity.generate()
        forged = [e.encoded[:-1] + bytes([e.encoded[-1] ^ 1]) for e in feed(mallory, 3)]
        hello = encode(Hello(PROTOCOL_VERSION, MAX_FRAME))
        attacks: list[list[bytes]] = [
            [b"garbage"],
            [hello, b"\x9f\xff" * 10],  # truncated nonsense after hello
            [hello, b"\x00" * (MAX_FRAME + 1)],  # oversized
            [hello, cbor2.dumps([1, 1, 0, [[1, b"", b"", [], True]]])],  # a bad opener
            [hello, cbor2.dumps([2, forged, True])],  # bad signatures
            [hello, *[cbor2.dumps([1, 1, 5, []]) for _ in range(200)]],  # flood
        ]
        for frames in attacks:
            before = honest.dropped_links + honest.rejected_inputs
            # a fresh key each time: the same key would be refused after two of them
            link = await network.transport().dial("mem://node-0", Identity.generate())
            for frame in frames:
                try:
                    await link.send(frame)
                except LinkClosed:
                    break
            # each attack ends in a dropped link or refused input, with a logged reason
            await wait_for(lambda b=before: honest.dropped_links + honest.rejected_inputs > b)
            await link.aclose()
        assert honest.dropped_links == 5 and honest.rejected_inputs == 3
        # what an operator sees of it (the metrics a Prometheus scrapes)
        rejected = honest.metrics.family("crdt_mesh_entries_rejected_total")
        assert rejected.value(reason="InvalidSignature") == 3
        closed = honest.metrics.family("crdt_mesh_links_closed_total")
        assert closed.value(why="breach") == 5
        assert honest.metrics.family("crdt_mesh_offences_total").value(kind="bad_signature") > 0
        scores = honest.metrics.family("crdt_mesh_peer_penalty_score").samples
        assert 0 < len(scores) <= 10 and all(s.value > 0 for s in scores)
        assert [s.value for s in scores] == sorted((s.value for s in scores), reverse=True)
        # one key doing it again and again ends up refused, its links closed at once
        for _ in range(2):
            dropped = honest.dropped_links
            link = await network.transport().dial("mem://node-0", mallory)
            await link.send(b"garbage")
            await wait_for(lambda d=dropped: honest.dropped_links > d)
            await link.aclose()
        await wait_for(lambda: honest.penalties.refused(mallory.peer_id, anyio.current_time()))
        refused_before = honest.refused_peers
        link = await network.transport().dial("mem://node-0", mallory)
        await wait_for(lambda: honest.refused_peers > refused_before)
        await link.aclose()
        notes = other.replica.document("notes")
        with notes.transaction():
            notes.map("m")["after"] = "attack"
        await wait_for(lambda: converged(meshes))
        assert not any(d.text != "open:notes" for d in honest.replica.documents())


async def test_links_that_die_mid_batch_are_redialled(tmp_path: Path) -> None:
    network = MemoryNetwork(seed=11, faults=Faults(die_after=3))
    async with mesh_of(tmp_path, 3, network) as meshes:
        for i, mesh in enumerate(meshes):
            notes = mesh.replica.document("notes")
            for j in range(20):
                with notes.transaction():
                    notes.map("m")[f"{i}-{j}"] = "x" * 2000
        await wait_for(lambda: converged(meshes) and len(meshes[0].replica.heads()) == 3)
        assert all(m.replica.summary().entries == 60 for m in meshes)


async def test_shutdown_loses_nothing_committed(tmp_path: Path) -> None:
    network = MemoryNetwork(seed=13)
    identities = [Identity.generate(), Identity.generate()]
    replicas = [Replica.open(tmp_path / f"s{i}", identities[i]) for i in range(2)]
    try:
        async with (
            Mesh(replicas[0], network.transport(), listen="mem://a", interval=0.05) as first,
            Mesh(replicas[1], network.transport(), peers=["mem://a"], interval=0.05) as second,
        ):
            notes = second.replica.document("notes")
            for j in range(10):
                with notes.transaction():
                    notes.map("m")[str(j)] = j
            await wait_for(lambda: first.replica.heads() == second.replica.heads())
        expected = [r.heads() for r in replicas]
    finally:
        for replica in replicas:
            replica.close()
    for i, identity in enumerate(identities):
        with Replica.open(tmp_path / f"s{i}", identity) as again:
            assert again.heads() == expected[i]
            assert len(again.document("notes").map("m")) == 10


async def test_connect_outside_the_running_mesh_is_a_typed_error(tmp_path: Path) -> None:
    from crdt_mesh import ClosedError

    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        mesh = Mesh(replica, MemoryNetwork().transport())
        with pytest.raises(ClosedError):
            await mesh.connect("mem://nowhere")


async def test_a_cluster_by_default_finds_its_transport_by_scheme(tmp_path: Path) -> None:
    """crdt_mesh.testing.cluster with no transport given: mem:// addresses, served by
    the registry's in-process network; a line topology still converges."""
    from crdt_mesh.testing.cluster import line

    async with cluster(tmp_path, 3, peers=line) as nodes:
        for i in range(3):
            nodes.write(i, "notes", {f"k{i}": i})
        await nodes.converged()
        assert nodes.replicas[0].document("notes").map("m").to_py() == {
            "k0": 0.0,
            "k1": 1.0,
            "k2": 2.0,
        }


class _Mine(ValueError):
    """An exception of the user's own."""


async def test_an_exception_in_the_body_comes_out_as_itself(tmp_path: Path) -> None:
    """Not wrapped in (nested) ExceptionGroups: ``except ValueError`` still catches it."""
    network = MemoryNetwork(seed=1)
    with (
        Replica.open(tmp_path / "a", Identity.generate()) as a,
        Replica.open(tmp_path / "b", Identity.generate()) as b,
    ):
        with pytest.raises(_Mine) as raised:
            async with (
                Mesh(a, network.transport(), listen="mem://outer"),
                Mesh(b, network.transport(), peers=["mem://outer"]) as inner,
            ):  # one mesh inside another
                await wait_for(lambda: bool(inner.peers))
                raise _Mine("the user's own")
        assert raised.type is _Mine and str(raised.value) == "the user's own"
        with pytest.raises(SystemExit) as exited:
            async with Mesh(a, network.transport(), listen="mem://outer-2"):
                raise SystemExit(3)
        assert exited.value.code == 3


async def test_an_unreachable_peer_is_warned_about_once_per_episode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    network = MemoryNetwork(seed=1)
    with Replica.open(tmp_path / "a", Identity.generate()) as a:
        with caplog.at_level(logging.DEBUG, logger="crdt_mesh"):
            async with Mesh(a, network.transport(), peers=["mem://nobody"], interval=0.05) as m:
                await wait_for(lambda: m.failed_dials >= 8)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "mem://nobody" in warnings[0].getMessage()


async def test_rounds_finish_against_a_peer_slower_than_the_interval(tmp_path: Path) -> None:
    """Frames take up to 0.2 s; a round starts every 0.05 s, and nothing is pushed: only
    rounds carry the entries. A round still moving is let finish: abandoned at every
    tick, as it was, no round with a difference finished against a peer that slow (a
    busy one: the bootstrap node of a 20-node test), and nothing converged."""
    network = MemoryNetwork(seed=5, faults=Faults(delay=0.2))
    async with cluster(
        tmp_path,
        2,
        address=lambda i: f"mem://slow-{i}",
        transport=lambda i: network.transport(f"mem://slow-{i}"),
        peers=full,
        interval=0.05,
        push_fanout=0,
    ) as nodes:
        meshes = nodes.meshes
        notes = meshes[0].replica.document("notes")
        for i in range(20):
            with notes.transaction():
                notes.map("m")[str(i)] = i
        await wait_for(lambda: converged(meshes), timeout=30)


async def test_rounds_on_a_quiet_link_thin_out_and_news_brings_them_back(tmp_path: Path) -> None:
    """Two meshes in step, nothing pushed: the dialling side's timer rounds every 1, 2,
    4 intervals (at most 4) while nothing changes; what the other side writes still
    arrives within that; what this side commits goes at the next tick."""
    network = MemoryNetwork(seed=3)
    async with mesh_of(tmp_path, 2, network, interval=0.1, push_fanout=0) as (a, b):
        dialler = b.runtime  # b dialled a
        await wait_for(lambda: a.replica.peer_id in b.peers and _link(b, a).peer.in_step)
        stats = _link(b, a).peer.stats
        ticks, rounds = dialler.ticks, stats.rounds
        await wait_for(lambda: dialler.ticks >= ticks + 12, timeout=30)
        assert stats.rounds - rounds <= 7  # ticks 1, 2, 4, 8, 12 (and one under way)

        ticks = dialler.ticks
        write(a, "from-a")  # the other side's news: no push, only a round brings it
        await wait_for(lambda: "from-a" in b.replica.document("notes").map("m"), timeout=30)
        assert dialler.ticks - ticks <= 4 + 1

        await wait_for(lambda: dialler.ticks >= ticks + 12, timeout=30)  # quiet again
        rounds = stats.rounds
        await wait_for(lambda: stats.rounds > rounds, timeout=30)  # the next is 4 ticks off
        ticks = dialler.ticks
        write(b, "from-b")
        await wait_for(lambda: "from-b" in a.replica.document("notes").map("m"), timeout=30)
        assert dialler.ticks - ticks <= 1 + 1


def _link(mesh: Mesh, other: Mesh) -> Any:
    return mesh.runtime._connections[other.replica.peer_id]


def write(mesh: Mesh, key: str) -> None:
    notes = mesh.replica.document("notes")
    with notes.transaction():
        notes.map("m")[key] = 1


async def test_a_late_hello_keeps_its_link_and_a_missing_one_closes_it(tmp_path: Path) -> None:
    """Rounds every 50 ms: a peer whose hello comes 0.3 s late (a busy machine) keeps
    its link; one that never says hello is closed after two seconds, not held."""
    network = MemoryNetwork(seed=12)
    async with mesh_of(tmp_path, 1, network) as (mesh,):
        late_identity = Identity.generate()
        late_peer = late_identity.peer_id
        late = await network.transport().dial("mem://node-0", late_identity)
        silent = await network.transport().dial("mem://node-0", Identity.generate())
        ticks = mesh.runtime.ticks
        await wait_for(lambda: mesh.runtime.ticks >= ticks + 6)  # 0.3 s: six intervals
        await late.send(encode(Hello(PROTOCOL_VERSION, MAX_FRAME)))
        await wait_for(lambda: mesh.runtime.silent_links == 1, timeout=10)
        await wait_for(lambda: len(mesh.runtime._connections) == 1)
        assert late.remote == mesh.replica.peer_id
        assert list(mesh.runtime._connections) == [late_peer]  # the late one, kept
        with pytest.raises(LinkClosed), anyio.fail_after(10):
            while True:  # the node's hello, then the end of the link
                await silent.recv()
        await silent.aclose()
        await late.aclose()
