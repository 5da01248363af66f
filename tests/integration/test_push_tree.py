"""Eager push shaped into a tree (Plumtree's prune and graft) over the active view."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt_mesh import Mesh
from crdt_mesh.testing.cluster import cluster, full
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


def _write(mesh: Mesh, count: int, start: int = 0) -> None:
    document = mesh.replica.document("notes")
    for i in range(start, start + count):
        with document.transaction():
            document.map("writes")[str(i)] = i


def _held(mesh: Mesh) -> int:
    return len(mesh.replica.document("notes").map("writes"))


def _duplicates(meshes: list[Mesh]) -> int:
    return sum(c.peer.stats.duplicates for m in meshes for c in m.runtime._connections.values())


async def test_a_link_that_brings_only_copies_is_pruned_at_both_ends(tmp_path: Path) -> None:
    """A triangle, pushing to both neighbours, no anti-entropy rounds after the first:
    the first entries reach one peer twice, which prunes the link the copy came on
    (both ends agree it is lazy); from then on each entry reaches each peer once."""
    async with cluster(tmp_path, 3, peers=full, interval=3600, push_fanout=2) as nodes:
        meshes = nodes.meshes
        writer = meshes[0]
        await wait_for(lambda: all(len(m.peers) == 2 for m in meshes))
        _write(writer, 3)
        await wait_for(lambda: all(_held(m) == 3 for m in meshes))
        await wait_for(lambda: sum(len(m.runtime.lazy_peers) for m in meshes) == 2)
        lazy = {(m.replica.peer_id, p) for m in meshes for p in m.runtime.lazy_peers}
        assert {(q, p) for p, q in lazy} == lazy  # one link, lazy at both ends
        before = _duplicates(meshes)
        _write(writer, 20, start=3)
        await wait_for(lambda: all(_held(m) == 23 for m in meshes))
        assert _duplicates(meshes) == before  # a tree: one copy each


async def test_a_lazy_link_that_brings_news_is_grafted_at_both_ends(tmp_path: Path) -> None:
    """Two peers, no eager push at all: a link pruned, then a round on it brings an
    entry the other lacked: it is eager again at both ends."""
    async with cluster(tmp_path, 2, peers=full, interval=3600, push_fanout=0) as nodes:
        x, y = nodes.meshes
        await wait_for(lambda: len(x.peers) == len(y.peers) == 1)
        x.runtime._shape(x.runtime._connections[y.replica.peer_id], eager=False)
        await wait_for(lambda: x.replica.peer_id in y.runtime.lazy_peers)
        _write(x, 1)
        for mesh in (x, y):
            await mesh.runtime.sync_now()  # (the dialler's round runs)
        await wait_for(lambda: _held(y) == 1)
        await wait_for(lambda: not x.runtime.lazy_peers and not y.runtime.lazy_peers)
