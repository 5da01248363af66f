"""Scale benchmark: N ``crdt-mesh node`` processes on loopback, gossip on.

Run: ``python -m benchmarks.scale`` (10, 20 and 40 nodes, over TCP and then through
one nats-server; ``--nodes 10 80`` for others, ``--transport tcp`` for one;
``--quick``: 5 nodes, the smoke run CI makes).

Each node bootstraps from three seeds and runs anti-entropy every second with
gossip every 500 ms, as issue 16 measured it. Once every node knows every other
(and two seconds more: the views' first steps after the join), every node is
told at once (SIGUSR1, ``crdt-mesh node --writes-on-signal``) to write W entries
(``--writes``), each signed on its own. Printed per N: the time until every node
holds every node's writes (each node's status line counts them), from that
signal (the time the mesh took to form from the first start is printed beside
it: starting 40 Pythons on 2 cores takes 10 s or more, and is not convergence);
the CPU all processes (the nodes and their signature-checking helpers) spent
meanwhile per delivered entry, divided by the CPU of ingesting one entry
measured in the same run, once before any node starts (a fresh replica
ingesting as many entries as the largest N delivers to a node, each signed on
its own, in one batch); then, idle, each node's CPU share, links and the
offences it counted (an honest run counts none); last, the largest N again at
the node's default intervals, idle for 30 s (once four gossip steps passed
after the join: a seed sheds the links joiners left it over its first steps);
then simulated meshes of 1,000 and 10,000 members (``--simulated``), the rounds
a broadcast takes to reach all and the bytes a member sends at idle, which must
not grow with N. Targets on 2 cores (issue 16): 40 nodes converge in at most
5 s; CPU per delivered entry at most 2x ingest; idle CPU per node at most 1 %
at the default intervals. Linux only for the CPU figures (they read ``/proc``)
and the signal.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crdt_mesh import Identity, Replica
from crdt_mesh.cli import records
from crdt_mesh.services.gossip.service import active_size
from crdt_mesh.testing.gossip import SimulatedGossip
from crdt_mesh.testing.natsd import NatsServer

from ._common import Panel, Series, Target, plot, progress, progress_done, row, scratch, summary

SEEDS = 3
#: Seconds the mesh is left, once every node knows every other, before the writes
#: begin: the views' first steps after the join (seeds let go the links joiners left).
SETTLE = 2.0
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Node:
    """One node process and the last status line it printed."""

    def __init__(
        self,
        root: Path,
        index: int,
        listen: str,
        seeds: list[str],
        writes: int,
        *,
        defaults: bool = False,
    ) -> None:
        key = root / f"n{index}.key"
        env = {
            **os.environ,
            "P2P_ENABLED": "1",
            "P2P_GOSSIP": "1",
        }
        if not defaults:  # the intervals issue 16 measured with (else the node's own)
            env["P2P_GOSSIP_INTERVAL"] = "500"
        command = [
            sys.executable,
            "-m",
            "crdt_mesh",
            "node",
            "--store",
            str(root / f"n{index}"),
            "--key",
            str(key),
            "--listen",
            listen,
            *(() if defaults else ("--interval", "1")),
            "--writes",
            str(writes),
            "--writes-on-signal",
            "--status-interval",
            "1" if defaults else "0.2",
            *(arg for seed in seeds for arg in ("--peer", seed)),
        ]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.status: dict[str, Any] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for record in records(self.process.stdout):
            if record.get("event") == "status":
                self.status = record

    def write(self) -> None:
        """Make the node write its ``writes`` entries now."""
        self.process.send_signal(signal.SIGUSR1)

    def cpu(self) -> float:
        """Seconds of CPU this process and its helper processes (signature checks)
        have used (0 where /proc is missing)."""
        return _tree_cpu(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants, from ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / _TICK
    return own + sum(_tree_cpu(int(child)) for child in children)


def _idle_row(idle: list[float], *, target: bool = True) -> None:
    """Each node's CPU share at idle: the mean, and the most (the target's, which is
    set at the default intervals only)."""
    mean = sum(idle) / len(idle)
    row(
        "idle CPU per node, mean / max",
        f"{mean:.1%} / {max(idle):.1%}",
        "",
        None,
        Target("<=", 0.01) if target else "(lower is better)",
        measured=max(idle),
    )


def plan(root: Path, nodes: int, server: NatsServer | None) -> list[tuple[str, list[str]]]:
    """Each node's key (written under ``root``), listen address and seeds: the first
    three nodes, itself left out; through ``server`` if one is given, else over TCP."""
    peers = []
    for index in range(nodes):
        identity = Identity.generate()
        identity.save(root / f"n{index}.key")
        peers.append(identity.peer_id)
    if server is not None:
        listens = [server.url] * nodes
        addresses = [f"nats://{peer}@127.0.0.1:{server.port}" for peer in peers]
    else:
        ports = _free_ports(nodes)
        listens = [f"tcp://127.0.0.1:{port}" for port in ports]
        addresses = [
            f"tcp://{peer}@127.0.0.1:{port}" for peer, port in zip(peers, ports, strict=True)
        ]
    seeds = addresses[:SEEDS]
    return [(listens[i], [s for s in seeds if s != addresses[i]]) for i in range(nodes)]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def ingest_cost(root: Path, entries: int) -> float:
    """CPU seconds to ingest one entry, each signed on its own, into a fresh replica,
    all in one batch verified in this process (the best of five: the run least
    disturbed by the rest of the machine). CPU, as the mesh's side of the ratio is:
    timing the batch by the clock while helper processes verify it in parallel would
    set CPU against wall time (on 2 cores, a floor about 1.4x too low)."""
    with Replica.open(root / "writer", Identity.generate()) as writer:
        document = writer.document("demo")
        for i in range(entries):
            with document.transaction():
                document.map("writes")[str(i)] = i
        made = writer.export("demo")
    best = float("inf")
    for attempt in range(5):
        with Replica.open(root / f"reader{attempt}", Identity.generate(), verify_processes=0) as r:
            start = time.process_time()
            r.ingest(made)
            best = min(best, time.process_time() - start)
    return best / len(made)


def run(
    nodes: int,
    writes: int,
    timeout: float,
    idle_for: float,
    server: NatsServer | None,
    per_entry: float,
) -> tuple[float, float]:
    """Run N nodes and print their rows; (seconds to converge, CPU per delivered entry
    / ingest), NaN for what was not measured."""
    with scratch("scale") as root:
        progress(f"{nodes} nodes: starting")
        fleet: list[Node] = []
        try:
            nodes_plan = plan(root, nodes, server)
            fleet = [Node(root, i, at, seeds, writes) for i, (at, seeds) in enumerate(nodes_plan)]
            started = time.perf_counter()
            formed = _wait_until(
                lambda: all((n.status.get("known") or 0) >= nodes for n in fleet),
                timeout,
                f"{nodes} nodes: joining",
            )
            joined = time.perf_counter() - started
            progress(f"{nodes} nodes: settling for {SETTLE:.0f} s")
            time.sleep(SETTLE)
            before = [n.cpu() for n in fleet]
            server_cpu = server.cpu() if server is not None else 0.0
            began = time.perf_counter()
            for node in fleet:
                node.write()
            want = nodes * writes
            done = formed and _wait_until(
                lambda: all((n.status.get("writes") or 0) >= want for n in fleet),
                timeout,
                f"{nodes} nodes: {want * nodes:,} entries to hold",
            )
            converged = time.perf_counter() - began
            cpu_converged = sum(n.cpu() - b for n, b in zip(fleet, before, strict=True))
            if server is not None:  # the broker's work is the mesh's too
                cpu_converged += server.cpu() - server_cpu
            held = [n.status.get("writes") or 0 for n in fleet]
            progress(f"{nodes} nodes: idle for {idle_for:.0f} s")
            before = [n.cpu() for n in fleet]
            time.sleep(idle_for)
            idle = [(n.cpu() - b) / idle_for for n, b in zip(fleet, before, strict=True)]
            links = [n.status.get("peers") or 0 for n in fleet]
            kinds: dict[str, int] = {}
            for node in fleet:
                for kind, count in (node.status.get("offences") or {}).items():
                    kinds[kind] = kinds.get(kind, 0) + count
            offences = sum(kinds.values())
        finally:
            for node in fleet:
                node.stop()
        progress_done()
        delivered = sum(max(0, h - writes) for h in held)  # (what reached each from others)
        over = "through one nats-server (its CPU counted)" if server is not None else "over TCP"
        print(f"{nodes} nodes {over}, {writes} writes each ({delivered:,} entries delivered)")
        row(
            "converged after every node began its writes",
            f"{converged:,.1f} s" if done else f"not in {timeout:.0f} s",
            f"meshed {joined:,.1f} s from start" if formed else "never meshed",
            None,
            Target("<=", 5.0) if nodes == 40 else "(lower is better)",
            measured=converged if done else float("inf"),
        )
        if cpu_converged and delivered:
            spent = cpu_converged / delivered
            row(
                "CPU per delivered entry / ingest of one",
                f"{spent * 1000:,.2f} ms",
                f"{per_entry * 1000:,.3f} ms",
                spent / per_entry,
                Target("<=", 2.0),
                measured=spent / per_entry,
            )
            _idle_row(idle, target=False)
        row("links per node, mean / max", f"{sum(links) / nodes:.1f} / {max(links)}", "", None, "")
        row(
            "offences counted (every node honest)",
            f"{offences}",
            ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
            None,
            Target("<=", 0),
            measured=offences,
        )
        ratio = cpu_converged / delivered / per_entry if cpu_converged and delivered else math.nan
        return (converged if done else math.nan), ratio


def _wait_until(condition: Callable[[], bool], timeout: float, doing: str) -> bool:
    """Poll ``condition`` (status lines arrive on their own threads) for ``timeout``
    seconds; whether it came true."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            return False
        progress(doing)
        time.sleep(0.05)
    return True


def idle_at_defaults(nodes: int, idle_for: float, timeout: float, settle: float) -> None:
    """N nodes at the node's default intervals (5 s anti-entropy, 5 s gossip), no
    writes: once every node knows every other and ``settle`` seconds more have passed
    (the views' steps after the join: the steady state is what is measured), each
    node's CPU share at idle."""
    with scratch("scale-idle") as root:
        fleet: list[Node] = []
        try:
            fleet = [
                Node(root, i, at, seeds, 0, defaults=True)
                for i, (at, seeds) in enumerate(plan(root, nodes, None))
            ]
            started = time.perf_counter()
            while time.perf_counter() - started < timeout:
                if all((n.status.get("known") or 0) >= nodes for n in fleet):
                    break
                progress(f"{nodes} nodes at default intervals: joining")
                time.sleep(0.2)
            progress(f"{nodes} nodes at default intervals: settling for {settle:.0f} s")
            time.sleep(settle)
            progress(f"{nodes} nodes at default intervals: idle for {idle_for:.0f} s")
            before = [n.cpu() for n in fleet]
            time.sleep(idle_for)
            idle = [(n.cpu() - b) / idle_for for n, b in zip(fleet, before, strict=True)]
        finally:
            for node in fleet:
                node.stop()
        progress_done()
    print(f"{nodes} nodes at the default intervals (anti-entropy 5 s, gossip 5 s), idle")
    if any(idle):
        _idle_row(idle)


def simulated(sizes: list[int], seed: int = 1) -> None:
    """Meshes too large for processes: the real failure-detection and broadcast cores
    (real signatures) on a simulated network with a virtual clock
    (:class:`~crdt_mesh.testing.gossip.SimulatedGossip`), each member linked as a node's
    active view would be (``active_size``). Per N: a member's bytes per second at
    idle (probes and acks, updates riding on them) and the rounds a broadcast (an
    entry's eager push) takes to reach every member, against push gossip's
    log2 N + ln N. Replicas' anti-entropy is not simulated here."""
    idle: dict[int, float] = {}
    for n in sizes:
        progress(f"simulated {n:,} members: joining")
        view = active_size(n, 50)
        sim = SimulatedGossip(n, seed=seed, overlay=view)
        sim.run_for(3)
        before = sim.bytes["swim"]
        progress(f"simulated {n:,} members: idle")
        sim.run_for(10)
        idle[n] = (sim.bytes["swim"] - before) / n / 10
        progress(f"simulated {n:,} members: a broadcast")
        sent = sim.bytes["broadcast"]
        message = sim.broadcast(0, fanout=3)
        sim.run_for(20)
        reach = sim.reach(message, 0)
        per_member = (sim.bytes["broadcast"] - sent) / n
        progress_done()
        print(f"simulated mesh of {n:,} members, {view} links each (1 s protocol period)")
        reference = math.log2(n) + math.log(n)
        rounds = reach.rounds_to_all
        row(
            "rounds for a broadcast to reach every member",
            f"{rounds}" if rounds is not None else f"{reach.fraction:.1%} reached",
            f"{reference:.1f} push",
            rounds / reference if rounds is not None else None,
            Target("<=", 1.0),
            measured=rounds / reference if rounds is not None else float("inf"),
        )
        row("bytes per member for one broadcast", f"{per_member:,.0f} B", "", None, "")
        smallest = min(idle)
        row(
            "idle bytes per member per second",
            f"{idle[n]:,.0f} B/s",
            f"{idle[smallest]:,.0f} B/s at {smallest:,}",
            idle[n] / idle[smallest],
            Target("<=", 1.5),
            measured=idle[n] / idle[smallest],
        )


def plot_scale(path: str, measured: dict[str, dict[int, tuple[float, float]]], writes: int) -> None:
    """Convergence time, and CPU per delivered entry against ingest, by N."""

    def line(over: str, pick: int) -> Series:
        points = sorted(measured[over].items())
        return Series(over, tuple(n for n, _ in points), tuple(v[pick] for _, v in points))

    panels = [
        Panel(
            f"converged after the writes began ({writes} writes a node)",
            "nodes",
            "seconds",
            tuple(line(over, 0) for over in measured),
        ),
        Panel(
            "CPU per delivered entry / ingest of one (target <= 2)",
            "nodes",
            "ratio",
            tuple(line(over, 1) for over in measured),
        ),
    ]
    plot(path, "scale: node processes on 2 cores", panels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per N")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle measured")
    parser.add_argument("--transport", nargs="+", choices=["tcp", "nats"], default=["tcp", "nats"])
    parser.add_argument(
        "--simulated", type=int, nargs="*", default=[1_000, 10_000], help="members (0: none)"
    )
    parser.add_argument("--quick", action="store_true", help="5 nodes, 10 writes: a smoke run")
    parser.add_argument("--plot", metavar="FILE.png", help="draw convergence and CPU by N")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.writes, args.timeout, args.idle = [5], 10, 60.0, 2.0
        args.simulated = [100, 200]
    print("scale benchmark: node processes on loopback, gossip on")
    # One floor for every N, measured before any node runs (a quiet machine), on as
    # many entries as the largest N delivers to each node.
    with scratch("scale-floor") as root:
        progress("the ingest floor")
        per_entry = ingest_cost(root, max(args.nodes) * args.writes)
    print(f"{'':55}{'measured':>10}  {'compared with':>15}  {'ratio':>6}  target")
    measured: dict[str, dict[int, tuple[float, float]]] = {}
    if "tcp" in args.transport:
        measured["TCP"] = {
            n: run(n, args.writes, args.timeout, args.idle, None, per_entry) for n in args.nodes
        }
    if "nats" in args.transport:
        server = NatsServer()
        server.start()
        try:
            measured["NATS"] = {
                n: run(n, args.writes, args.timeout, args.idle, server, per_entry)
                for n in args.nodes
            }
        finally:
            server.stop()
    if args.plot:
        plot_scale(args.plot, measured, args.writes)
    idle_at_defaults(
        max(args.nodes),
        max(args.idle, 30.0 if not args.quick else 2.0),
        120.0,
        settle=20.0 if not args.quick else 1.0,  # four gossip steps at the defaults
    )
    simulated([n for n in args.simulated if n > 0])
    summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
