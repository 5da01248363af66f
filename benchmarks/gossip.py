"""Gossip benchmark: broadcast reach, failure detection, false "lost" under loss.

Run: ``python -m benchmarks.gossip`` (``--quick`` stops at 1,000 peers).

Everything runs in :class:`~crdt_mesh.testing.gossip.SimulatedGossip`: the
real SWIM/Lifeguard and broadcast cores (real Ed25519 signatures on every
frame) on a simulated network with a virtual clock. One round = one protocol
period = one gossip interval. Printed beside each figure: the reference it is
compared with (push gossip's log2 N + ln N rounds; the serf/memberlist
convergence model; Lifeguard's reported > 50x fewer false positives than SWIM,
measured here side by side with the same seeds).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from crdt_mesh.services.gossip.swim import SwimSettings
from crdt_mesh.testing.gossip import Reach, SimulatedGossip

from ._common import Panel, Series, Target, plot, progress, progress_done, row, summary

FANOUT = 3


def broadcast(n: int, seed: int) -> Reach:
    sim = SimulatedGossip(n, seed=seed)
    sim.run_for(2)
    before = sim.frames["broadcast"]
    start_round = sim.round
    message_id = sim.broadcast(0, fanout=FANOUT)
    sim.run_for(20)
    reach = sim.reach(message_id, 0)
    frames = sim.frames["broadcast"] - before
    active_rounds = max(1, sim.round - start_round)
    reference = math.log2(n) + math.log(n)
    print(f"N = {n:,}: broadcast (fanout {FANOUT})")
    row("reach", f"{reach.fraction:.2%}", "", None, f"duplicates delivered: {reach.duplicates}")
    row(
        "rounds to 99% of peers",
        f"{reach.rounds_to_99}",
        f"log2N+lnN {reference:.1f}",
        (reach.rounds_to_99 or 0) / reference,
    )
    rounds_to_all = reach.rounds_to_all if reach.rounds_to_all is not None else math.inf
    row(
        "rounds to 100% of peers",
        f"{reach.rounds_to_all}",
        f"log2N+lnN {reference:.1f}",
        (reach.rounds_to_all or 0) / reference,
        Target("<=", 10) if n <= 1000 else "(fewer is better)",
        measured=rounds_to_all,
    )
    if n == 1000:
        row("  serf/memberlist model: 99.99% in", "", "~11 rounds", None)
    per_peer = frames / n
    row("broadcast frames per peer, in all", f"{per_peer:.1f}", "", None)
    row(
        "broadcast frames per peer per round",
        f"{per_peer / max(1, reach.rounds_to_all or active_rounds):.2f}",
        "",
        None,
        "(while the message is still being pushed)",
    )
    return reach


def model(n: int, fanout: int, rounds: int, *, pull: bool) -> tuple[float, ...]:
    """The fraction of N reached after each round by push gossip (each informed member
    pushes to ``fanout`` random others), or push-pull (each uninformed one also pulls
    from one random member): the mean-field recurrences of Karp et al. (FOCS 2000)."""
    informed, out = 1 / n, [1 / n]
    for _ in range(rounds):
        missed = (1 - informed) * math.exp(-fanout * informed)
        informed = 1 - missed * ((1 - informed) if pull else 1)
        out.append(informed)
    return tuple(out)


def plot_reach(path: str, reaches: dict[int, Reach]) -> None:
    """Broadcast reach by round for each N, against the push and push-pull models."""
    lines = [
        Series(
            f"measured, N = {n:,}",
            tuple(range(len(r.by_round))),
            tuple(k / r.members for k in r.by_round),
        )
        for n, r in reaches.items()
    ]
    largest = max(reaches)
    rounds = max(len(r.by_round) for r in reaches.values()) + 2
    for pull in (False, True):
        curve = model(largest, FANOUT, rounds, pull=pull)
        name = "push-pull" if pull else "push"
        lines.append(
            Series(f"{name} model, N = {largest:,}", tuple(range(len(curve))), curve, "--")
        )
    panel = Panel(
        f"a broadcast (fanout {FANOUT}) on the overlay-free simulation",
        "round",
        "fraction of members reached",
        tuple(lines),
    )
    plot(path, "gossip: broadcast reach by round", [panel])


def failure_detection(n: int, seed: int) -> None:
    sim = SimulatedGossip(n, seed=seed)
    sim.run_for(2)
    swim_before, now_before = sim.frames["swim"], sim.now
    sim.run_for(5)
    per_round = (sim.frames["swim"] - swim_before) / n / (sim.now - now_before)
    victim = n // 2
    sim.crash(victim)
    took = sim.run_until(lambda: sim.declared_lost_by_all(victim), timeout=400)
    print(f"N = {n:,}: failure detection")
    row("SWIM frames per peer per round", f"{per_round:.2f}", "", None, "(probe, ack, indirect)")
    settings = sim.settings
    low = settings.suspicion_mult * max(1.0, math.log10(n))
    row(
        "rounds until a crash is declared by all",
        f"{took / settings.period:.1f}",
        f"min timeout {low:.1f}",
        took / settings.period / low,
        "(Lifeguard: from 6x that, shrinking)",
    )


def false_positives(n: int, seed: int, rounds: int) -> None:
    print(f"N = {n:,}: false 'lost' declarations per 1,000 peer-rounds ({rounds} rounds)")
    for loss in (0.0, 0.1, 0.3):
        counts = {}
        for lifeguard in (True, False):
            sim = SimulatedGossip(
                n, seed=seed, loss=loss, settings=SwimSettings(lifeguard=lifeguard)
            )
            sim.run_for(rounds)
            counts[lifeguard] = len(sim.false_lost) / (n * rounds) * 1000
        ratio = counts[False] / counts[True] if counts[True] else None
        label = f"loss {loss:.0%}: Lifeguard vs plain SWIM"
        if loss <= 0.1:  # the target: none at all
            row(
                label,
                f"{counts[True]:.2f}",
                f"SWIM {counts[False]:.2f}",
                ratio,
                Target("<=", 0),
                measured=counts[True],
            )
        elif ratio is not None:  # Lifeguard reports far fewer than plain SWIM
            row(label, f"{counts[True]:.2f}", f"SWIM {counts[False]:.2f}", ratio, Target(">=", 50))
        else:
            row(
                label,
                f"{counts[True]:.2f}",
                f"SWIM {counts[False]:.2f}",
                None,
                "(Lifeguard none at all; fewer is better)",
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 peers only (a smoke run)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30, help="rounds for false positives")
    parser.add_argument("--plot", metavar="FILE.png", help="draw broadcast reach by round")
    args = parser.parse_args(argv)
    sizes = [100] if args.quick else [100, 1000, 10_000]
    started = time.perf_counter()
    print("gossip benchmark (simulated network, virtual time; real signatures)")
    print(f"  {'':<44} {'measured':>16} {'compared with':>18} {'ratio':>8}")
    reaches = {}
    for n in sizes:
        progress(f"N = {n:,}: broadcast")
        reaches[n] = broadcast(n, args.seed)
        progress(f"N = {n:,}: failure detection")
        failure_detection(n, args.seed)
        if n <= 1000:
            progress(f"N = {n:,}: false positives ({args.rounds} rounds at 0/10/30% loss)")
            false_positives(n, args.seed, args.rounds)
    progress_done()
    print(f"(took {time.perf_counter() - started:.0f} s of CPU-bound simulation)")
    if args.plot:
        plot_reach(args.plot, reaches)
    summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
