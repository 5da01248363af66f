"""Task negotiation benchmark: announcement to award with 10, 100 and 1,000 bidders.

Run: ``python -m benchmarks.tasks`` (``--quick``: 10 bidders only).

In the simulated mesh (real replicas, real signatures; fanout 3 anti-entropy
per round): one announcer, N bidders that bid as soon as the announcement
reaches them; first with open bids (every replica gets every bid), then with
private bids (``private_bids``: each bid is carried to the announcer on a link
dialled for it, and no other replica gets it; target at 1,000 bidders: at most
10 KB per bidder). Printed: rounds until every bidder has the announcement, until
the announcer holds every bid, and until every replica holds the award; bytes
on the wire; and the announcer's CPU time per bid (ingesting the bids and
closing, replayed on a fresh replica) beside the floor of one bare Ed25519
verification.
"""

from __future__ import annotations

import argparse
import sys
import time

import nacl.signing

from crdt_mesh import Durability, Replica
from crdt_mesh.services.tasks import TaskBoard
from crdt_mesh.testing.sim import SimulatedMesh

from ._common import Target, best_rate, progress, progress_done, row, scratch, summary


def run(bidders: int, seed: int, private: bool) -> None:
    now = [1_000.0]
    with SimulatedMesh(bidders + 1, seed=seed) as sim:
        boards = [TaskBoard(sim.replica(i), clock=lambda: now[0]) for i in range(bidders + 1)]
        announcer = boards[0]
        ann = announcer.announce(
            "bench", {"capabilities": []},
            negotiation={"bid_timeout": 3600, "min_bidders": 1, "selection_criteria": ["price"],
                         "private_bids": private},
        )  # fmt: skip
        bid: set[int] = set()
        start_bytes = sim.bytes
        rounds = {"announced": 0, "bids": 0, "award": 0}
        while len(bid) < bidders:
            sim.step()
            rounds["announced"] += 1
            for i in range(1, bidders + 1):
                if i not in bid and sim.replica(i).has_document(ann.ref.section(announcer.me)):
                    boards[i].bid(ann.ref, price=float(1 + (i * 7919) % 1000), eta=60.0)
                    bid.add(i)
                    if private:  # the courier: a link dialled to the announcer for it
                        sim.exchange(i, 0)
            if rounds["announced"] > 200:
                raise RuntimeError("the announcement did not spread")
        while True:
            view = announcer.view(ann.ref)
            assert view is not None
            if len(view.bids) == bidders:
                break
            sim.step()
            rounds["bids"] += 1
        announcer.close(ann.ref)
        award_at = sim.round
        sim.run_until_converged(max_rounds=200)
        rounds["award"] = sim.round - award_at
        wire = sim.bytes - start_bytes
        bid_entries = [
            e for e in announcer.replica.missing_from({}) if e.document.owner != announcer.me
        ]
        announcement = [
            e
            for e in announcer.replica.missing_from({})
            if e.document == ann.ref.section(announcer.me)
        ][:1]
        identity = announcer.replica.identity

    with scratch("tasks") as root:
        replays = iter(range(1_000))

        def replay() -> float:
            """Seconds the announcer spends ingesting every bid and closing."""
            path = root / f"replay-{next(replays)}"
            with Replica.open(
                path, identity, durability=Durability.PROCESS, verify_processes=0
            ) as replica:
                replica.ingest(announcement)
                started = time.perf_counter()
                replica.ingest(bid_entries)
                TaskBoard(replica, clock=lambda: now[0]).close(ann.ref)
                return time.perf_counter() - started

        per_bid = min(replay() for _ in range(3)) / bidders

    key = nacl.signing.SigningKey.generate()
    signed = key.sign(b"x" * 200)
    verify = key.verify_key
    floor = 1 / best_rate(lambda: sum(1 for _ in range(2000) if verify.verify(signed)))

    print(f"{bidders:,} bidders, {'private' if private else 'open'} bids")
    total = rounds["announced"] + rounds["bids"] + rounds["award"]
    row("rounds: announcement reaches every bidder", f"{rounds['announced']}", "", None)
    row("rounds: then every bid reaches the announcer", f"{rounds['bids']}", "", None)
    row("rounds: then the award reaches every replica", f"{rounds['award']}", "", None)
    row(
        "rounds, announcement to award everywhere",
        f"{total}",
        "",
        None,
        Target("<=", 10),
        measured=total,
    )
    row("bytes on the wire", f"{wire / 1e6:.2f} MB", "", None)
    row(
        "bytes per bidder",
        f"{wire / bidders:,.0f} B",
        "",
        None,
        Target("<=", 10_000) if private and bidders >= 1000 else "(lower is better)",
        measured=wire / bidders,
    )
    row(
        "announcer CPU per bid (ingest + close)",
        f"{per_bid * 1e6:.0f} us",
        f"verify {floor * 1e6:.0f} us",
        per_bid / floor,
        Target("<=", 10),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 bidders only (a smoke run)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--bids", nargs="+", choices=["open", "private"], default=["open", "private"]
    )
    args = parser.parse_args(argv)
    sizes = [10] if args.quick else [10, 100, 1000]
    print("task negotiation benchmark (simulated mesh, fanout 3; real replicas)")
    print(f"  {'':<44} {'measured':>16} {'compared with':>18} {'ratio':>8}")
    for private in [mode == "private" for mode in args.bids]:
        for n in sizes:
            started = time.perf_counter()
            progress(f"{n:,} bidders")
            run(n, args.seed, private)
            progress_done()
            print(f"  ({time.perf_counter() - started:.0f} s)")
    summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
