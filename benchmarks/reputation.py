"""Reputation benchmark: the cost of scores, and what EigenTrust buys against a Sybil ring.

Run: ``python -m benchmarks.reputation`` (10,000 peers, 1,000,000 records;
``--quick``: 1,000 peers, 20,000 records).

1. Scores from N records about P peers (outcomes with quality and timeliness,
   one domain), at one time: putting them into columns (done once, as records
   arrive), the Beta scores from the columns, the local trust graph and
   EigenTrust from two pre-trusted peers, and the scores again after one new
   record. Target: scores under 1 s for 1,000,000 records.
2. A Sybil ring: honest peers trade (90 % good outcomes); a ring of fresh
   identities praises its own and smears honest ones. The ring's best overall
   score with plain Beta and with EigenTrust weighting, side by side.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from crdt_mesh import Identity, PeerId
from crdt_mesh.services.reputation import Outcome, Record
from crdt_mesh.services.reputation.rules import RecordTable, local_trust, scores
from crdt_mesh.services.reputation.trust import eigentrust, eigentrust_edges, rater_weights

from ._common import Target, progress, progress_done, row, summary

DAY = 24 * 3600.0
HALF_LIFE = 30 * DAY


def _record(rng: random.Random, task: int, rater: PeerId, subject: PeerId, good: float) -> Record:
    value = good if rng.random() < 0.5 else max(0.0, min(1.0, rng.gauss(good, 0.1)))
    return Record(
        "outcome",
        f"task:{task}",
        rater,
        subject,
        rng.uniform(0, 90 * DAY),
        outcome=Outcome.SUCCESS if value >= 0.5 else Outcome.FAILURE,
        quality=value,
        timeliness=value,
        domains=("code-review",),
    )


def cost(peers: int, records: int, rng: random.Random) -> None:
    progress(f"{records:,} records: making them")
    ids = [Identity.from_seed(rng.randbytes(32)).peer_id for _ in range(peers)]
    pairs = (rng.sample(ids, 2) for _ in range(records))
    made = [_record(rng, t, rater, subject, good=0.8) for t, (rater, subject) in enumerate(pairs)]
    now = 90 * DAY
    print(f"{peers:,} peers, {records:,} records")
    progress(f"{records:,} records: into the table")
    start = time.perf_counter()
    table = RecordTable(made)
    took = time.perf_counter() - start
    row("records into columns (once, as they arrive)", f"{took:,.2f} s", "", None, "")
    progress(f"{records:,} records: scores")
    start = time.perf_counter()
    scored = table.scores(now, HALF_LIFE)
    took = time.perf_counter() - start
    row(
        "Beta scores of every peer, from the columns",
        f"{took:,.2f} s",
        f"{len(scored):,} peers",
        None,
        Target("<", 1.0) if records >= 1_000_000 else "(lower is better)",
        measured=took,
    )
    progress(f"{records:,} records: EigenTrust")
    start = time.perf_counter()
    peers_in_order, raters, subjects, values = table.trust_edges()
    roots = {ids[0]: 1.0, ids[1]: 1.0}
    trust = eigentrust_edges(peers_in_order, raters, subjects, values, roots, 0.15)
    took = time.perf_counter() - start
    row("local trust + EigenTrust", f"{took:,.2f} s", f"{len(values):,} edges", None, "")
    start = time.perf_counter()
    table.scores(now, HALF_LIFE, rater_weights(trust))
    took = time.perf_counter() - start
    row("weighted Beta scores", f"{took:,.2f} s", "", None, "(lower is better)")
    start = time.perf_counter()
    table.add([_record(rng, records, ids[2], ids[3], good=0.8)])
    table.scores(now, HALF_LIFE)
    took = time.perf_counter() - start
    row("one new record: added, all scores again", f"{took:,.2f} s", "", None, "(lower is better)")
    progress_done()


def sybil_ring(honest_count: int, ring_count: int, rng: random.Random) -> None:
    print(f"a Sybil ring of {ring_count} among {honest_count} honest peers")
    honest = [Identity.from_seed(rng.randbytes(32)).peer_id for _ in range(honest_count)]
    ring = [Identity.from_seed(rng.randbytes(32)).peer_id for _ in range(ring_count)]
    made = []
    task = 0
    for _ in range(honest_count * 10):
        task += 1
        rater, subject = rng.sample(honest, 2)
        made.append(_record(rng, task, rater, subject, good=0.9 if rng.random() < 0.9 else 0.1))
    for sybil in ring:
        for other in rng.sample(ring, min(5, ring_count)):
            if other != sybil:
                task += 1
                made.append(_record(rng, task, sybil, other, good=1.0))
        task += 1
        made.append(_record(rng, task, sybil, rng.choice(honest), good=0.0))
    now = 90 * DAY
    plain = scores(made, now, HALF_LIFE)
    trust = eigentrust(local_trust(made), {honest[0]: 1.0, honest[1]: 1.0}, 0.15)
    weighed = scores(made, now, HALF_LIFE, rater_weights(trust))
    best_plain = max(plain[s].overall for s in ring if s in plain)
    best_weighed = max(weighed[s].overall for s in ring if s in weighed)
    honest_median = sorted(weighed[h].overall for h in honest if h in weighed)[honest_count // 2]
    row("ring's best overall, plain Beta", f"{best_plain:.3f}", "", None, "(lower is better)")
    row(
        "ring's best overall, EigenTrust",
        f"{best_weighed:.3f}",
        f"honest median {honest_median:.3f}",
        None,
        Target("<=", 0.5),
        measured=best_weighed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 peers, 20,000 records")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    print("reputation benchmark")
    print(f"  {'':<44} {'measured':>16} {'compared with':>18} {'ratio':>8}  target")
    if args.quick:
        cost(1000, 20_000, rng)
    else:
        cost(10_000, 1_000_000, rng)
    sybil_ring(100 if args.quick else 1000, 30 if args.quick else 300, rng)
    print("  the EigenTrust paper's threat models A-D on a task market: not measured yet")
    summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
