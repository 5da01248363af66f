"""Federated memory benchmark: store rate, query latency, key rotation.

Run: ``python -m benchmarks.memory`` (10,000 and 100,000 memories; ``--quick``:
1,000 only; ``--plot FILE.png`` draws the query latency distributions).

Stores N public memories (a sentence of random words, 1-3 of 50 tags) on one
replica, then times queries by tags (filters), by text lexically (BM25), by
meaning (local embeddings) and hybrid, each beside the bare library on the same
texts: bm25s retrieving from a prebuilt index, numpy's exact cosine over a
prebuilt matrix. Then a channel's key rotation at 10 / 100 / 1,000 members: the
bytes of the lockbox entry and the time to seal it. Then federated queries over
50 simulated peers (real replicas and routers, virtual time) at 0, 5 and 20 % frame
loss: recall against a central index, latency to the last answer that brought
something, and the bytes all peers sent.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from crdt_mesh import Durability, Identity, Replica
from crdt_mesh.services.memory import MemoryBoard
from crdt_mesh.services.memory.rules import embed, lockbox_document, searchable_text
from crdt_mesh.testing.memory import SimulatedQueries, recall

from ._common import (
    Panel,
    Series,
    Target,
    plot,
    progress,
    progress_done,
    row,
    scratch,
    summary,
)

_VOCABULARY = (
    "deploy build test review merge schedule meeting morning evening user customer "
    "disk memory network latency failure retry timeout cache index query report "
    "invoice budget plan design api schema database backup restore alert page "
    "incident postmortem release branch feature bug fix patch rollback monitor log"
)
WORDS = tuple(_VOCABULARY.split())
TAGS = [f"tag{i}" for i in range(50)]
QUESTIONS = (
    "deploy failure after the morning release",
    "disk full on the database backup",
    "customer invoice budget plan",
    "when is the meeting with the user",
    "network latency alert paged the team",
)


#: Query times in seconds, sorted, by panel and by what was asked: what ``--plot`` draws.
Latencies = dict[str, dict[str, list[float]]]


def _times(run: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)


def _p50_p95(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def queries(n: int, repeats: int, rng: random.Random, latencies: Latencies) -> None:
    drawn = latencies.setdefault(f"{n:,} memories, one replica", {})
    with scratch("memory") as root:
        replica = Replica.open(root / "r", Identity.generate(), durability=Durability.PROCESS)
        board = MemoryBoard(replica)
        progress(f"{n:,} memories: storing")
        start = time.perf_counter()
        with replica.batch():
            for _ in range(n):
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12)))
                board.store(text, "public", tags=rng.sample(TAGS, rng.randint(1, 3)))
        rate = n / (time.perf_counter() - start)
        print(f"{n:,} memories")
        row("stored/s (one document each, batched)", f"{rate:,.0f}", "", None, "(higher is better)")
        shown = board.memories()
        texts = [m.content for m in shown]
        question = "deploy failure after the morning release"
        progress(f"{n:,} memories: the bare libraries")
        import bm25s
        import numpy as np

        index = bm25s.BM25()
        index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        tokens = bm25s.tokenize([question], stopwords="en", show_progress=False)
        drawn["bare bm25s"] = _times(
            lambda: index.retrieve(tokens, k=10, show_progress=False), repeats
        )
        bare_lexical = _p50_p95(drawn["bare bm25s"])
        matrix = embed(texts)
        vector = embed([question])[0]
        drawn["bare cosine"] = _times(lambda: np.argsort(-(matrix @ vector))[:10], repeats)
        bare_cosine = _p50_p95(drawn["bare cosine"])
        board.query(text=question, mode="hybrid")  # builds both indexes once (kept)
        board.query(tags=["tag1"])  # and the index of filter values
        cases = [
            ("filters (tags)", lambda: board.query(tags=["tag1", "tag2"]), None),
            ("lexical (BM25)", lambda: board.query(text=question, mode="lexical"), bare_lexical),
            ("semantic", lambda: board.query(text=question, mode="semantic"), bare_cosine),
            ("hybrid", lambda: board.query(text=question, mode="hybrid"), None),
        ]
        for label, call, bare in cases:
            progress(f"{n:,} memories: {label}")
            drawn[label] = _times(call, repeats)
            p50, p95 = _p50_p95(drawn[label])
            floor = f"bare p95 {bare[1] * 1000:,.1f} ms" if bare else ""
            target: Target | str = (
                Target("<", 10.0) if label == "hybrid" and n >= 100_000 else "(lower is better)"
            )
            row(
                f"query p50 / p95, {label}",
                f"{p50 * 1000:,.1f} / {p95 * 1000:,.1f} ms",
                floor,
                p95 / bare[1] if bare else None,
                target,
                measured=p95 * 1000,
            )
        overlaps = []
        indexed = embed([searchable_text(m) for m in shown])  # what the board embeds
        for asked in QUESTIONS:  # the two-stage semantic ranking against exact cosine
            exact = np.argsort(-(indexed @ embed([asked])[0]))[:10]
            found = {h.memory.ref for h in board.query(text=asked, mode="semantic", limit=10)}
            overlaps.append(len(found & {shown[i].ref for i in exact}) / 10)
        row(
            "semantic top 10 found by exact cosine too",
            f"{min(overlaps):.0%} (worst)",
            f"of {len(QUESTIONS)} questions",
            None,
            Target(">=", 0.9),
            measured=min(overlaps),
        )
        board.close()
        replica.close()
        progress_done()


def plot_latencies(path: str, latencies: Latencies) -> None:
    """One panel per setting: the distribution of each kind of query's time (a CDF)."""
    panels = []
    for title, drawn in latencies.items():
        lines = tuple(
            Series(
                label,
                tuple(t * 1000 for t in times),
                tuple((i + 1) / len(times) for i in range(len(times))),
                "--" if label.startswith("bare") else ".-",
            )
            for label, times in drawn.items()
        )
        panels.append(Panel(title, "query time (ms)", "share of queries", lines, logx=True))
    plot(path, "memory: query latency distributions (dashed: the bare libraries)", panels)


def rotation() -> None:
    print("key rotation (one lockbox entry: the key sealed to each member)")
    for members in (10, 100, 1000):
        with scratch("rotate") as root:
            replica = Replica.open(root / "r", Identity.generate(), durability=Durability.PROCESS)
            board = MemoryBoard(replica)
            peers = [Identity.generate().peer_id for _ in range(members)]
            board.create_channel("alpha", members=peers)
            lockbox = lockbox_document(replica.peer_id, "alpha")
            before = sum(len(e.encoded) for e in replica.export(lockbox))
            start = time.perf_counter()
            board.rotate("alpha")
            took = time.perf_counter() - start
            size = sum(len(e.encoded) for e in replica.export(lockbox)) - before
            row(
                f"{members:,} members: bytes of one rotation",
                f"{size:,} B",
                f"{took * 1000:,.1f} ms",
                None,
                Target("<", 100_000) if members == 1000 else "(lower is better)",
                measured=size,
            )
            board.close()
            replica.close()


def federated(queries: int, rng: random.Random, latencies: Latencies) -> None:
    """Federated queries over 50 simulated peers (virtual time: latencies of 1-10 ms a
    frame), each with 20 public memories; recall against a central index over the same
    readable memories of the peers within the query's 3 hops."""
    print("federated query, 50 simulated peers (1-10 ms a frame, 3 hops, tag filter, top 20)")
    drawn = latencies.setdefault("federated, 50 simulated peers (virtual time)", {})
    for loss in (0.0, 0.05, 0.2):
        with SimulatedQueries(50, degree=8, loss=loss, seed=rng.randrange(1 << 30)) as net:
            progress(f"federated: {loss:.0%} loss: storing")
            for board in net.boards:
                for _ in range(20):
                    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12)))
                    board.store(text, "public", tags=rng.sample(TAGS[:10], rng.randint(1, 2)))
            recalls, times, sizes = [], [], []
            for q in range(queries):
                progress(f"federated: {loss:.0%} loss: query {q + 1} of {queries}")
                asker = rng.randrange(50)
                spec: dict[str, Any] = {"tags": [rng.choice(TAGS[:10])], "limit": 20}
                expected = net.central(asker, within=3, **spec)
                run = net.ask(asker, hops=3, **spec)
                recalls.append(recall([hit.memory.ref for hit in run.hits], expected))
                times.append(run.latency)
                sizes.append(run.bytes)
            times.sort()
            drawn[f"{loss:.0%} frames lost"] = times
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            row(
                f"{loss:.0%} loss: recall (worst of {queries})",
                f"{min(recalls):.3f}",
                f"p50/p95 {statistics.median(times) * 1000:,.0f}/{p95 * 1000:,.0f} ms",
                None,
                Target(">=", 1.0) if loss <= 0.05 else "(higher is better)",
                measured=min(recalls),
            )
            row(
                f"{loss:.0%} loss: bytes of one query, all peers",
                f"{statistics.median(sizes) / 1024:,.0f} KiB",
                "",
                None,
                "(lower is better)",
            )
            progress_done()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 memories only (a smoke run)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plot", metavar="FILE.png", help="draw query latency distributions")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    print("federated memory benchmark (one replica; public memories)")
    print(f"  {'':<44} {'measured':>16} {'compared with':>18} {'ratio':>8}  target")
    latencies: Latencies = {}
    for n in [1000] if args.quick else [10_000, 100_000]:
        queries(n, 20 if args.quick else 40, rng, latencies)
    rotation()
    federated(3 if args.quick else 20, rng, latencies)
    if args.plot:
        plot_latencies(args.plot, latencies)
    summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
