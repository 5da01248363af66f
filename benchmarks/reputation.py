"""Reputation benchmark: the cost of scores, and what EigenTrust buys against attackers.

Run: ``python -m benchmarks.reputation`` (10,000 peers, 1,000,000 records;
``--quick``: 1,000 peers, 20,000 records; ``--plot FILE.png`` draws the threat
models as curves).

1. Scores from N records about P peers (outcomes with quality and timeliness,
   one domain), at one time: putting them into columns (done once, as records
   arrive), the Beta scores from the columns, the local trust graph and
   EigenTrust from two pre-trusted peers, and the scores again after one new
   record; and a challenge's jury (eligible peers at a cut, EigenTrust-weighted,
   then the draw); each the best of three. Target: scores under 1 s for
   1,000,000 records.
2. A Sybil ring: honest peers trade (90 % good outcomes); a ring of fresh
   identities praises its own and smears honest ones. The ring's best overall
   score with plain Beta and with EigenTrust weighting, side by side.
3. The threat models of the EigenTrust paper (Kamvar et al. 2003), A-D, on a
   simulated task market of 100 peers: the share of honest requesters' tasks with
   a bad outcome at 0-70 % malicious peers, choosing at random, by plain Beta and
   by EigenTrust-weighted scores. Target: under 5 % at 40 % malicious in model C.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from crdt_mesh import Identity, PeerId
from crdt_mesh.services.reputation import Outcome, Record, ReputationSettings
from crdt_mesh.services.reputation.disputes import cut_of, draw, eligible
from crdt_mesh.services.reputation.rules import RecordTable, local_trust, scores
from crdt_mesh.services.reputation.trust import eigentrust, eigentrust_edges, rater_weights

from ._common import (
    Panel,
    Series,
    Target,
    best_time,
    plot,
    progress,
    progress_done,
    row,
    summary,
)

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
    scored = table.scores(now, HALF_LIFE)
    took = best_time(lambda: table.scores(now, HALF_LIFE))
    row(
        "Beta scores of every peer, from the columns",
        f"{took:,.2f} s",
        f"{len(scored):,} peers",
        None,
        Target("<", 1.0) if records >= 1_000_000 else "(lower is better)",
        measured=took,
    )
    progress(f"{records:,} records: EigenTrust")
    roots = {ids[0]: 1.0, ids[1]: 1.0}
    peers_in_order, raters, subjects, values = table.trust_edges()
    trust = eigentrust_edges(peers_in_order, raters, subjects, values, roots, 0.15)
    took = best_time(lambda: eigentrust_edges(*table.trust_edges(), roots, 0.15))
    row("local trust + EigenTrust", f"{took:,.2f} s", f"{len(values):,} edges", None, "")
    weights = rater_weights(trust)
    took = best_time(lambda: table.scores(now, HALF_LIFE, weights))
    row("weighted Beta scores", f"{took:,.2f} s", "", None, "(lower is better)")
    start = time.perf_counter()
    table.add([_record(rng, records, ids[2], ids[3], good=0.8)])
    table.scores(now, HALF_LIFE)
    took = time.perf_counter() - start
    row("one new record: added, all scores again", f"{took:,.2f} s", "", None, "(lower is better)")
    progress(f"{records:,} records: a jury")
    settings = ReputationSettings(pretrusted=roots)
    cut = cut_of(now, settings.jury_cut)

    def a_jury() -> tuple[list[PeerId], tuple[PeerId, ...]]:
        edges = table.trust_edges(until=cut)
        at_cut = rater_weights(eigentrust_edges(*edges, roots, settings.teleport))
        pool = eligible(table.scores(cut, HALF_LIFE, at_cut, until=cut), settings)
        return pool, draw("00" * 16, pool, settings.jury_size)

    pool, jury = a_jury()
    took = best_time(a_jury)
    row(
        "a challenge's jury: eligible at its cut, drawn",
        f"{took:,.2f} s",
        f"{len(jury)} of {len(pool):,}",
        None,
        "(lower is better)",
    )
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


# -- the EigenTrust paper's threat models on a task market ---------------------------------

MODELS = {
    "A": "individual malicious: bad work, random ratings",
    "B": "malicious collective: bad work, praise each other, smear the honest",
    "C": "camouflaged collective: good work half the time, praise each other, truthful on others",
    "D": "spies: half do good work and praise the other half, who do bad work",
}


def market(model: str, malicious: float, policy: str, tasks: int, seed: int) -> tuple[float, float]:
    """One simulated market: (share of honest requesters' tasks awarded to malicious
    peers, share of them with a bad outcome) under ``policy`` (random, beta,
    eigentrust)."""
    rng = random.Random(seed)
    size = 100
    peers = [Identity.from_seed(rng.randbytes(32)).peer_id for _ in range(size)]
    bad_count = int(size * malicious)
    evil = set(peers[size - bad_count :])
    spies = set(sorted(evil, key=lambda p: p.key)[: len(evil) // 2]) if model == "D" else set()
    roots = {peer: 1.0 for peer in peers[:3]}  # pre-trusted: three honest peers
    table = RecordTable()
    scored: dict[PeerId, float] = {}
    to_malicious = bad_outcomes = honest_tasks = 0
    for task in range(tasks):
        if task % 10 == 0 and policy != "random":
            weights = None
            if policy == "eigentrust" and len(table):
                trust = eigentrust_edges(*table.trust_edges(), roots, 0.15)
                weights = rater_weights(trust)
            scored = {p: s.overall for p, s in table.scores(task, HALF_LIFE, weights).items()}
        requester = rng.choice(peers)
        candidates = rng.sample([p for p in peers if p != requester], 5)
        if policy == "random":
            provider = rng.choice(candidates)
        else:
            provider = max(candidates, key=lambda p: (scored.get(p, 0.5), rng.random()))
        good = provider not in evil or provider in spies or (model == "C" and rng.random() < 0.5)
        if requester not in evil:
            honest_tasks += 1
            to_malicious += provider in evil
            bad_outcomes += not good
            reported = good
        elif model == "A":
            reported = rng.random() < 0.5  # each on its own: ratings that mean nothing
        elif model == "D" and requester in spies:
            reported = (provider in evil and provider not in spies) or good
        elif model == "C":
            reported = True if provider in evil else good  # praise its own, camouflage
        else:
            reported = provider in evil  # the collective praises its own, smears the rest
        value = 0.9 if reported else 0.1
        outcome = Outcome.SUCCESS if reported else Outcome.FAILURE
        table.add(
            [
                Record(
                    "outcome",
                    f"task:{task}",
                    requester,
                    provider,
                    float(task),
                    outcome=outcome,
                    quality=value,
                    timeliness=value,
                )
            ]
        )
    return to_malicious / max(honest_tasks, 1), bad_outcomes / max(honest_tasks, 1)


POLICIES = {"random": "at random", "beta": "plain Beta", "eigentrust": "EigenTrust-weighted"}

#: Share of bad outcomes by model, then policy, then share of malicious peers.
Table = dict[str, dict[str, dict[float, float]]]


def threat_models(tasks: int, seed: int, fractions: tuple[float, ...]) -> Table:
    print(f"threat models (100 peers, {tasks:,} tasks, 5 candidates each, 3 pre-trusted):")
    print("  bad outcomes of honest requesters' tasks, by the share of malicious peers")
    table: Table = {}
    for model, what in MODELS.items():
        print(f"  model {model}: {what}")
        curves = table[model] = {policy: {} for policy in POLICIES}
        for malicious in fractions:
            cells = []
            for policy in POLICIES:
                progress(f"model {model}, {malicious:.0%} malicious, {policy}")
                _, bad = market(model, malicious, policy, tasks, seed)
                curves[policy][malicious] = bad
                cells.append(bad)
            label = f"    {malicious:.0%} malicious: random / Beta / EigenTrust"
            figures = " / ".join(f"{c:.1%}" for c in cells)
            target: Target | str = (
                Target("<", 0.05) if model == "C" and malicious == 0.4 else "(lower is better)"
            )
            row(label, figures, "", None, target, measured=cells[2])
    progress_done()
    return table


def plot_threat_models(path: str, table: Table) -> None:
    """One panel per threat model: bad outcomes against the share of malicious peers."""
    panels = []
    for model, curves in table.items():
        lines = tuple(
            Series(
                POLICIES[policy],
                tuple(share * 100 for share in points),
                tuple(bad * 100 for bad in points.values()),
            )
            for policy, points in curves.items()
        )
        title = f"model {model}: {MODELS[model].split(':')[0]}"
        panels.append(Panel(title, "malicious peers (%)", "bad outcomes (%)", lines))
    title = "reputation: honest requesters' bad outcomes (EigenTrust threat models)"
    plot(path, title, panels, columns=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 peers, 20,000 records")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plot", metavar="FILE.png", help="draw the threat models as curves")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    print("reputation benchmark")
    print(f"  {'':<44} {'measured':>16} {'compared with':>18} {'ratio':>8}  target")
    if args.quick:
        cost(1000, 20_000, rng)
    else:
        cost(10_000, 1_000_000, rng)
    sybil_ring(100 if args.quick else 1000, 30 if args.quick else 300, rng)
    fractions = (0.0, 0.2, 0.4, 0.7) if args.quick else (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    table = threat_models(300 if args.quick else 2000, args.seed, fractions)
    if args.plot:
        plot_threat_models(args.plot, table)
    summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
