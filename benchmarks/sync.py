"""Sync benchmark: bytes in step, catch-up overhead, and mesh-wide convergence.

Run: ``python -m benchmarks.sync`` (``--quick`` skips the 1,000-replica mesh).

Every figure is measured in this run and printed beside what it is compared
with: the bytes of the entries a replica was missing, and the rounds that
push and push-pull gossip need in theory.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from crdt_mesh import Durability, Identity, Replica
from crdt_mesh.runtime.peer import PeerSync
from crdt_mesh.testing.sim import SimulatedMesh

from ._common import Target, row, scratch, summary

_RECONCILE = 1


def _open(path: Path) -> Replica:
    return Replica.open(
        path,
        Identity.generate(),
        durability=Durability.PROCESS,
        map_size=1 << 30,
        verify_processes=0,
    )


def _pump(a: PeerSync, b: PeerSync) -> tuple[int, int]:
    """Move frames until quiet; (bytes moved, reconcile frames sent by the dialler)."""
    moved = round_trips = 0
    while True:
        frames_a, frames_b = a.frames(), b.frames()
        if not frames_a and not frames_b:
            return moved, round_trips
        for frame in frames_a:
            moved += len(frame)
            round_trips += frame[1:2] == bytes([_RECONCILE])
            b.receive(frame)
        for frame in frames_b:
            moved += len(frame)
            a.receive(frame)


def _linked(a: Replica, b: Replica) -> tuple[PeerSync, PeerSync]:
    left, right = PeerSync(a, b.peer_id, initiator=True), PeerSync(b, a.peer_id, initiator=False)
    _pump(left, right)
    return left, right


def _fill(replica: Replica, documents: int, entries_per_doc: int = 1, size: int = 40) -> None:
    with replica.batch():
        for d in range(documents):
            document = replica.document(f"doc-{d}")
            for i in range(entries_per_doc):
                with document.transaction():
                    document.map("m")[str(i)] = "x" * size


def in_step_bytes(root: Path, documents: int) -> tuple[int, int]:
    """Bytes of one round between two replicas that hold the same ``documents``."""
    a, b = _open(root / "a"), _open(root / "b")
    try:
        _fill(a, documents)
        b.ingest(a.missing_from({}))
        left, right = _linked(a, b)
        left.start_round()
        return _pump(left, right)
    finally:
        a.close()
        b.close()


def catch_up(root: Path, feeds: int, missing_feeds: int, missing: int) -> tuple[float, int, int]:
    """A replica lacks ``missing`` entries in ``missing_feeds`` of ``feeds`` feeds.

    Returns (bytes on the wire / bytes of the missing entries, round trips, wire bytes).
    """
    a, b = _open(root / "a"), _open(root / "b")
    try:
        _fill(a, feeds)
        b.ingest(a.missing_from({}))
        per_feed = missing // missing_feeds
        with a.batch():
            for d in range(missing_feeds):
                document = a.document(f"doc-{d * (feeds // missing_feeds)}")
                for i in range(per_feed):
                    with document.transaction():
                        document.map("m")[f"new-{i}"] = "y" * 40
        lacking = a.missing_from(b.heads())
        lacking_bytes = sum(len(e.encoded) for e in lacking if hasattr(e, "encoded"))
        left, right = _linked(a, b)
        left.start_round()
        wire, round_trips = _pump(left, right)
        assert a.heads() == b.heads(), "catch-up did not converge"
        return wire / lacking_bytes, round_trips, wire
    finally:
        a.close()
        b.close()


def mesh_rounds(size: int, seed: int = 1) -> tuple[int, int, float]:
    with SimulatedMesh(size, seed=seed, fanout=3) as sim:
        for i in range(size):
            sim.write(i, "notes", {f"k{i}": i})
        start = time.perf_counter()
        result = sim.run_until_converged(max_rounds=60)
        return result.rounds, result.bytes, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 1,000-replica mesh")
    args = parser.parse_args(argv)
    print(f"crdt_mesh sync benchmark (python {sys.version.split()[0]})")

    print("  two replicas already in step: bytes of one anti-entropy round (both ways)")
    figures = []
    for documents in (1, 100, 10_000):
        with scratch("step") as root:
            wire, _ = in_step_bytes(root, documents)
        figures.append(wire)
        row(f"{documents:,} documents", f"{wire} bytes", "", None, Target("<", 200), measured=wire)
    spread = max(figures) / min(figures)
    row("largest / smallest", f"{spread:.2f}x", "", spread, Target("<=", 2.0))

    print("  catch-up: wire bytes over the bytes of the missing entries, and round trips")
    for feeds, missing_feeds, missing in ((1_000, 10, 1_000), (1_000, 100, 10_000)):
        with scratch("catch") as root:
            ratio, trips, wire = catch_up(root, feeds, missing_feeds, missing)
        label = f"E={missing:,} entries in K={missing_feeds} of F={feeds:,} feeds"
        log_bound = missing_feeds * math.log2(feeds)
        row(
            label,
            f"{ratio:.3f}x",
            f"{trips} round trips",
            ratio,
            Target("<=", 1.10),
        )
        print(f"    (round trips compared with K·log2 F = {log_bound:.0f})")

    print("  simulated mesh, each replica writes once, fanout 3: rounds to converge")
    for size in (100,) if args.quick else (100, 1_000):
        rounds, wire, seconds = mesh_rounds(size)
        push = math.log2(size) + math.log(size)
        push_pull = math.log(size, 3)
        row(
            f"{size:,} replicas",
            f"{rounds} rounds",
            f"{wire / 1e6:,.1f} MB",
            None,
            f"push {push:.1f}, push-pull {push_pull:.1f} rounds ({seconds:.0f} s; fewer is better)",
        )
    summary()


if __name__ == "__main__":
    main()
