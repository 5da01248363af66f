"""What a replica tells an operator: entries committed and refused, what waits,
and how far behind their authors the entries that arrive are."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..ledger import Entry
from ..metrics import Kind, Metrics
from .replica import Replica

#: Upper bounds of the replication lag buckets, in seconds: 10 ms to 10 minutes.
LAG_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)


def declare_replica_metrics(metrics: Metrics, replica: Replica) -> Callable[[], None]:
    """Declare ``replica``'s metrics in ``metrics``; the lag is recorded at each commit
    until the function returned is called."""
    committed = metrics.counter(
        "crdt_mesh_entries_committed_total",
        "Entries committed here: written here (local) or arrived from peers (remote).",
        ("origin",),
    )
    lag = metrics.histogram(
        "crdt_mesh_replication_lag_seconds",
        "From an arriving entry's own timestamp (its author's clock) to its commit here.",
        LAG_SECONDS,
    )
    me = replica.peer_id

    def on_commit(entries: list[Entry]) -> None:
        now_ms = time.time() * 1000
        local = 0
        for entry in entries:
            if entry.author == me:
                local += 1
            else:
                lag.observe(max(0.0, now_ms - entry.timestamp) / 1000)
        if local:
            committed.inc("local", by=local)
        if len(entries) > local:
            committed.inc("remote", by=len(entries) - local)

    unsubscribe = replica.on_commit(on_commit)
    metrics.observe(
        "crdt_mesh_entries_rejected_total",
        "Inputs refused at ingest, by the error's type (nothing of them was kept).",
        Kind.COUNTER,
        lambda: [((reason,), n) for reason, n in sorted(replica.rejections.items())],
        ("reason",),
    )
    metrics.observe(
        "crdt_mesh_entries_duplicate_total",
        "Inputs that were entries held already (copies: pushes that crossed, resends).",
        Kind.COUNTER,
        lambda: replica.duplicates,
    )
    metrics.observe(
        "crdt_mesh_pending_entries",
        "Entries waiting for the entries before them (bounded per peer).",
        Kind.GAUGE,
        lambda: 0 if replica.closed else replica.summary().pending,
    )
    metrics.observe(
        "crdt_mesh_pending_bytes",
        "Bytes of the entries waiting for the entries before them.",
        Kind.GAUGE,
        lambda: 0 if replica.closed else replica.pending_bytes,
    )
    metrics.observe(
        "crdt_mesh_feeds",
        "Feeds (a document and an author) held here.",
        Kind.GAUGE,
        lambda: 0 if replica.closed else replica.summary().feeds,
    )
    return unsubscribe
