"""What the runtime tells an operator: links, dials, rounds, bytes and penalties.

Every value here is counted already where it happens; these callbacks read them
when the metrics are collected (nothing on the hot path), in the event loop's
thread (``crdt_mesh.prometheus`` serves them from the loop)."""

from __future__ import annotations

import anyio

from ..metrics import Kind, Metrics
from .penalty import key_text
from .runtime import Runtime

#: Peers whose penalty scores are shown (the highest): a label per peer, so a few.
PENALISED_SHOWN = 10


def declare_runtime_metrics(metrics: Metrics, runtime: Runtime) -> None:
    """Declare ``runtime``'s metrics in ``metrics``."""

    def totals(field: str) -> float:
        return float(getattr(runtime.link_totals(), field))

    observe = metrics.observe
    observe(
        "crdt_mesh_links",
        "Open links: in the active view, or served one round (past the view's limit, or "
        "carrying ephemeral frames).",
        Kind.GAUGE,
        lambda: [(("active",), len(runtime.peers)), (("transient",), runtime.transient_links)],
        ("state",),
    )
    observe(
        "crdt_mesh_links_served_total",
        "Links served since start (dialled or accepted, kept or for one round).",
        Kind.COUNTER,
        lambda: runtime.links_served,
    )
    observe(
        "crdt_mesh_dials_failed_total",
        "Dials of bootstrap peers that failed (each episode is logged once).",
        Kind.COUNTER,
        lambda: runtime.failed_dials,
    )
    observe(
        "crdt_mesh_links_closed_total",
        "Links closed at once, by why: the peer broke the protocol (breach), it is refused "
        "(refused), or this side was full (full).",
        Kind.COUNTER,
        lambda: [
            (("breach",), runtime.dropped_links),
            (("refused",), runtime.refused_peers),
            (("full",), runtime.refused_links),
        ],
        ("why",),
    )
    observe(
        "crdt_mesh_sync_rounds_total",
        "Anti-entropy rounds this side started and finished, by whether both ends were "
        "in step already.",
        Kind.COUNTER,
        lambda: [
            (("in_step",), totals("rounds_in_step")),
            (("differed",), totals("rounds") - totals("rounds_in_step")),
        ],
        ("result",),
    )
    observe(
        "crdt_mesh_sync_rounds_answered_total",
        "Anti-entropy rounds peers opened and this side answered.",
        Kind.COUNTER,
        lambda: totals("rounds_opened"),
    )

    def by_kind() -> list[tuple[tuple[str, str], float]]:
        links = runtime.link_totals()
        return [
            ((direction, kind), float(n))
            for direction, counts in (("in", links.received_by_kind), ("out", links.sent_by_kind))
            for kind, n in sorted(counts.items())
        ]

    observe(
        "crdt_mesh_sync_bytes_total",
        "Bytes of frames on links, by direction and the kind of message: hello, "
        "reconcile (rounds), entries, broadcast (ephemeral frames of the services).",
        Kind.COUNTER,
        by_kind,
        ("direction", "kind"),
    )
    observe(
        "crdt_mesh_sync_round_frames_total",
        "Reconcile frames of the rounds this side finished, both ways: divided by the "
        "rounds, twice the round trips a round takes (2 frames for a round in step).",
        Kind.COUNTER,
        lambda: totals("round_frames"),
    )
    observe(
        "crdt_mesh_sync_entries_total",
        "Entries carried by sync frames, by direction (copies included).",
        Kind.COUNTER,
        lambda: [(("in",), totals("entries_received")), (("out",), totals("entries_sent"))],
        ("direction",),
    )
    observe(
        "crdt_mesh_offences_total",
        "Offences counted against peers (or hosts), by kind: each weighs on a score that "
        "refuses the peer past its threshold.",
        Kind.COUNTER,
        lambda: [((o.value,), n) for o, n in runtime.penalties.offences.items()],
        ("kind",),
    )
    observe(
        "crdt_mesh_peer_penalty_score",
        f"Penalty scores of the {PENALISED_SHOWN} peers (or hosts: host:<address>) scored "
        "highest now; past the threshold (100) a peer is refused, and its score starts over.",
        Kind.GAUGE,
        lambda: [
            ((key_text(key, short=False),), score)
            for key, score in runtime.penalties.worst(anyio.current_time(), PENALISED_SHOWN)
        ],
        ("peer",),
    )
    observe(
        "crdt_mesh_refused_peers",
        "Peers and hosts refused now for their offences.",
        Kind.GAUGE,
        lambda: runtime.penalties.refused_count(anyio.current_time()),
    )
    observe(
        "crdt_mesh_sync_ticks_total",
        "Anti-entropy intervals the timer counted.",
        Kind.COUNTER,
        lambda: runtime.ticks,
    )
