"""Each service's metrics count what happened in it, on the replicas that saw it."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt_mesh.testing.cluster import cluster
from tests.helpers import wait_for

pytestmark = pytest.mark.anyio


async def test_service_metrics_follow_tasks_memories_and_challenges(tmp_path: Path) -> None:
    async with cluster(tmp_path, 2) as nodes:
        a, b = nodes.meshes
        announced = await a.tasks.announce("translate", {"lang": "fr"})
        await wait_for(lambda: b.metrics.family("crdt_mesh_tasks").value(state="announced") == 1)
        tasks = a.metrics.family("crdt_mesh_tasks")
        assert sum(s.value for s in tasks.samples) == 1 and tasks.value(state="announced") == 1
        await b.tasks.bid(announced.ref, price=3)
        await wait_for(lambda: a.metrics.family("crdt_mesh_task_bids_total").value() == 1)
        assert a.metrics.family("crdt_mesh_tasks").value(state="bidding") == 1
        assert a.metrics.family("crdt_mesh_task_audits_failed").value() == 0
        # the announcement went out as entries; the bid came in as entries
        sync = a.metrics.family("crdt_mesh_sync_bytes_total")
        assert sync.value(direction="out", kind="entries") > 0
        assert sync.value(direction="in", kind="entries") > 0
        assert sync.value(direction="in", kind="hello") > 0

        memory = await a.memory.store("the cat sat", "public", tags=["cats"])
        assert len(await a.memory.query(tags=["cats"])) == 1
        await a.memory.forget(memory.ref)
        operations = a.metrics.family("crdt_mesh_memory_operations_total")
        assert [operations.value(operation=o) for o in ("stored", "queried", "forgotten")] == [
            1,
            1,
            1,
        ]
        assert operations.value(operation="updated") == 0
        (latency,) = a.metrics.family("crdt_mesh_memory_query_seconds").samples
        assert latency.count == 1
        assert b.metrics.family("crdt_mesh_memory_operations_total").value(operation="stored") == 0

        assert a.metrics.family("crdt_mesh_reputation_records").value() == 0
        challenges = a.metrics.family("crdt_mesh_reputation_challenges")
        assert {dict(s.labels)["status"] for s in challenges.samples} == {
            "open",
            "upheld",
            "rejected",
            "lapsed",
        }
