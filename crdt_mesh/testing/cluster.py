"""Running meshes for tests: N replicas, each in a live :class:`~crdt_mesh.Mesh`, on any
transport, with waits on conditions instead of sleeps.

    async with cluster(tmp_path, 3) as nodes:          # mem:// by default
        nodes.write(0, "notes", {"k": "v"})
        await nodes.converged()
        assert nodes.replicas[2].document("notes").map("m")["k"] == "v"

Addresses come from ``address(i)`` (default: ``mem://`` names unique to the
cluster, served by the registry's in-process network), and each mesh dials the
addresses ``peers(i)`` gives (default: a star around node 0, as most meshes
bootstrap). ``transport(i)`` may hand node ``i`` a transport of its own (a
``MemoryNetwork``'s, with faults); by default each address finds its transport by
its scheme.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from ..identity import Identity
from ..mesh import Mesh
from ..replica.records import FeedKey, Head
from ..replica.replica import Replica
from ..runtime.transport import Transport
from ..store import Durability

_clusters = itertools.count()


class Cluster:
    """The meshes of :func:`cluster`, and waits on what they hold."""

    def __init__(self, meshes: list[Mesh]) -> None:
        self.meshes = meshes

    @property
    def replicas(self) -> list[Replica]:
        return [mesh.replica for mesh in self.meshes]

    def __len__(self) -> int:
        return len(self.meshes)

    def __getitem__(self, index: int) -> Mesh:
        return self.meshes[index]

    def write(self, index: int, document: str, values: dict[str, Any]) -> None:
        """One transaction on node ``index``: ``values`` into the map ``m`` of ``document``."""
        doc = self.replicas[index].document(document)
        with doc.transaction():
            for key, value in values.items():
                doc.map("m")[key] = value

    async def wait(self, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until ``condition()`` holds; TimeoutError after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            while not condition():
                await anyio.sleep(0.01)

    def heads(self) -> list[dict[FeedKey, Head]]:
        return [replica.heads() for replica in self.replicas]

    def in_step(self, among: Sequence[int] | None = None) -> bool:
        """Whether the nodes ``among`` (default: all) hold heads, and each pair the same
        heads of every feed each would offer the other (read policies decide: a team's
        memories are compared between its members only)."""
        chosen = [self.replicas[i] for i in (among if among is not None else range(len(self)))]
        heads = [replica.heads() for replica in chosen]
        if not heads[0]:
            return False
        for a, (ra, ha) in enumerate(zip(chosen, heads, strict=True)):
            for rb, hb in zip(chosen[a + 1 :], heads[a + 1 :], strict=True):
                for feed in ha.keys() | hb.keys():
                    if ha.get(feed) != hb.get(feed) and (
                        ra.readable_by(feed[0], rb.peer_id) and rb.readable_by(feed[0], ra.peer_id)
                    ):
                        return False
        return True

    async def converged(self, timeout: float = 15.0, among: Sequence[int] | None = None) -> None:
        """Wait until the nodes ``among`` (default: all) are in step (:meth:`in_step`)."""
        await self.wait(lambda: self.in_step(among), timeout)


def star(index: int, addresses: Sequence[str]) -> list[str]:
    """Everyone dials node 0 (the default topology)."""
    return [] if index == 0 else [addresses[0]]


def line(index: int, addresses: Sequence[str]) -> list[str]:
    """Each node dials the one before it."""
    return [] if index == 0 else [addresses[index - 1]]


def full(index: int, addresses: Sequence[str]) -> list[str]:
    """Each node dials every node before it."""
    return list(addresses[:index])


@asynccontextmanager
async def cluster(
    root: str | Path,
    size: int,
    *,
    address: Callable[[int], str] | None = None,
    transport: Callable[[int], Transport | None] | None = None,
    peers: Callable[[int, Sequence[str]], list[str]] = star,
    identities: Sequence[Identity] | None = None,
    durability: Durability = Durability.PROCESS,
    interval: float = 0.05,
    **mesh_options: Any,
) -> AsyncIterator[Cluster]:
    """``size`` running meshes, their replicas in ``root``; all closed on the way out.

    Args:
        root: a folder for the stores (``node-<i>`` each).
        size: how many nodes.
        address: where node ``i`` listens.
        transport: node ``i``'s transport (None: found by scheme).
        peers: whom node ``i`` dials, given every node's address (:func:`star`,
            :func:`line`, :func:`full`, or your own).
        identities: the nodes' identities (default: fresh ones).
        durability: of the stores (default: survives a crash of the process only).
        interval: seconds between anti-entropy rounds.
        mesh_options: passed to every :class:`~crdt_mesh.Mesh` (``config``, ``swim``, ...).
    """
    if size < 1:
        raise ValueError("a cluster has at least one node")
    name = next(_clusters)
    address = address or (lambda i: f"mem://cluster-{id(root)}-{name}-node-{i}")
    addresses = [address(i) for i in range(size)]
    async with AsyncExitStack() as stack:
        meshes = []
        for i in range(size):
            identity = identities[i] if identities is not None else Identity.generate()
            replica = stack.enter_context(
                Replica.open(Path(root) / f"node-{i}", identity, durability=durability)
            )
            mesh = Mesh(
                replica,
                transport(i) if transport is not None else None,
                listen=addresses[i],
                peers=peers(i, addresses),
                interval=interval,
                seed=i,
                **mesh_options,
            )
            meshes.append(await stack.enter_async_context(mesh))
        yield Cluster(meshes)


__all__ = ["Cluster", "cluster", "full", "line", "star"]
