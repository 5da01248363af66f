"""The ``crdt-mesh`` command: keys, a node as a process, store inspection, a demo.

    crdt-mesh keygen node.key
    crdt-mesh node --store node.mesh --key node.key --listen <scheme>://127.0.0.1:9000 \\
                   --peer <scheme>://127.0.0.1:9001
    crdt-mesh inspect node.mesh
    crdt-mesh demo

``node`` reads the mission's variables where they apply: ``P2P_LISTEN_PORT``
(listen on ``<P2P_TRANSPORT>://0.0.0.0:<port>`` when ``--listen`` is not given),
``P2P_BOOTSTRAP_PEERS`` (comma-separated ``host:port``, added to ``--peer``) and
``P2P_MAX_PEERS``. A malformed variable is an error at start-up. With
``P2P_ENABLED`` and ``P2P_GOSSIP`` on, it also publishes its peer record (with
``--capability``), discovers peers from the records it learns, and probes them
(``P2P_GOSSIP_INTERVAL``); its status lines then say how many peers it knows (``known``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio

from . import prometheus
from . import status as status_view
from .config import Feature, MeshConfig
from .errors import LocalError, MeshError
from .identity import Identity
from .mesh import Mesh
from .metrics import Metrics
from .replica.document import Document
from .replica.replica import Replica
from .runtime.penalty import Penalties, key_text
from .runtime.registry import Transports

log = logging.getLogger("crdt_mesh.node")


def _load_identity(path: str) -> Identity:
    passphrase = os.environ.get("CRDT_MESH_PASSPHRASE")
    return Identity.load(path, passphrase=passphrase)


# -- commands ------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists (use --force to replace it)", file=sys.stderr)
        return 2
    identity = Identity.generate()
    identity.save(path, passphrase=os.environ.get("CRDT_MESH_PASSPHRASE"))
    print(identity.peer_id)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    if not (Path(args.store) / "data.mdb").is_file():  # never make an empty store to show it
        print(f"crdt-mesh inspect: error: {args.store} is not a crdt_mesh store", file=sys.stderr)
        return 2
    with Replica.open(args.store, Identity.generate()) as replica:  # reads only
        summary = replica.summary()
        out: dict[str, Any] = {
            "documents": [],
            "summary": {
                "documents": summary.documents,
                "feeds": summary.feeds,
                "entries": summary.entries,
                "fork_proofs": summary.fork_proofs,
                "bytes_on_disk": summary.bytes_on_disk,
            },
        }
        heads = replica.heads(include_local=True)
        for doc in replica.documents():
            feeds = [
                {
                    "author": str(author),
                    "seq": head.seq,
                    "head": head.id.hex(),
                    "frozen": head.frozen,
                }
                for (d, author), head in sorted(heads.items(), key=lambda kv: str(kv[0][1]))
                if d == doc
            ]
            out["documents"].append({"id": doc.text, "policy": doc.policy.value, "feeds": feeds})
        out["fork_proofs"] = [
            {"document": p.document.text, "author": str(p.author), "seq": p.seq}
            for p in replica.fork_proofs()
        ]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    s = out["summary"]
    print(
        f"{args.store}: {s['documents']} documents, {s['feeds']} feeds, {s['entries']} entries, "
        f"{s['fork_proofs']} fork proofs, {s['bytes_on_disk']:,} bytes"
    )
    for doc in out["documents"]:
        print(f"  {doc['id']}")
        for feed in doc["feeds"]:
            frozen = "  FROZEN" if feed["frozen"] else ""
            print(
                f"    {feed['author'][:12]}  seq {feed['seq']:<6} head {feed['head'][:16]}{frozen}"
            )
    for proof in out["fork_proofs"]:
        print(f"  fork: {proof['document']} by {proof['author'][:12]} at seq {proof['seq']}")
    return 0


def cmd_node(args: argparse.Namespace, env: dict[str, str] | None = None) -> int:
    env = dict(os.environ) if env is None else env
    config = MeshConfig.from_env(env)  # strict: a malformed variable stops us here
    penalties = Penalties()  # one table: hosts that fail handshakes, peers that misbehave
    listen = args.listen if args.listen is not None else config.listen_address()
    peers = [_with_scheme(p, config.transport) for p in args.peer] + list(config.bootstrap_peers)
    max_peers = args.max_peers or config.max_peers
    identity = _load_identity(args.key)
    gossip = config.enables(Feature.GOSSIP)
    if args.writes_on_signal and not hasattr(signal, "SIGUSR1"):
        raise LocalError("--writes-on-signal needs SIGUSR1, which this platform lacks")
    if args.metrics is not None:
        prometheus.exposition(Metrics())  # the extra is installed
        prometheus.parse_address(args.metrics)

    async def run() -> None:
        with Replica.open(args.store, identity) as replica:
            async with Mesh(
                replica,
                Transports(penalties=penalties),  # each address's scheme finds its transport
                listen=listen,
                peers=peers,
                interval=args.interval,
                max_peers=max_peers,
                penalties=penalties,
                # The node syncs whatever P2P_ENABLED says (it was asked to); the
                # config also governs the services when gossip is on.
                config=config if gossip else None,
                metrics=args.metrics is not None,  # kept only where they are served
            ) as mesh:
                if gossip:
                    mesh.gossip.join(capabilities=args.capability, listen_address=mesh.address)
                server = None
                if args.metrics is not None:
                    try:
                        server = await prometheus.MetricsServer.bind(mesh.metrics, args.metrics)
                    except OSError as exc:
                        raise LocalError(f"--metrics {args.metrics}: {exc}") from None
                metrics = server.url if server is not None else None
                async with anyio.create_task_group() as tg:
                    if server is not None:
                        tg.start_soon(server.serve)
                    log.info(
                        "node %s store %s listening %s peers %s metrics %s",
                        identity.peer_id.short,
                        args.store,
                        mesh.address,
                        peers,
                        metrics,
                    )
                    ready = {"event": "ready", "peer": str(identity.peer_id)}
                    _emit({**ready, "address": mesh.address, "metrics": metrics})
                    demo = replica.document(args.document)
                    written = 0 if args.writes_on_signal else _write(demo, identity, 0, args.writes)
                    stops = (signal.SIGINT, signal.SIGTERM)
                    held = (signal.SIGUSR1,) if args.writes_on_signal else ()
                    tg.start_soon(_report, mesh, args.status_interval, gossip, demo)
                    with anyio.open_signal_receiver(*stops, *held) as signals:
                        async for signum in signals:
                            if signum in held:
                                written = _write(demo, identity, written, args.writes)
                                _emit({"event": "wrote", "writes": written})
                                continue
                            log.info("stopping on %s", signal.Signals(signum).name)
                            break
                    tg.cancel_scope.cancel()
        _emit({"event": "stopped"})

    anyio.run(run)
    return 0


def _write(document: Document, identity: Identity, done: int, count: int) -> int:
    """Write ``count`` entries (one transaction each) after the ``done`` made before;
    the number made in all."""
    for i in range(done, done + count):
        with document.transaction():
            document.map("writes")[f"{identity.peer_id.short}-{i}"] = i
    return done + count


def _with_scheme(address: str, scheme: str) -> str:
    """``host:port`` as ``scheme://host:port`` (as ``P2P_BOOTSTRAP_PEERS`` reads it)."""
    return address if "://" in address else f"{scheme}://{address}"


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def records(lines: Iterable[str | bytes]) -> Iterator[dict[str, Any]]:
    """What ``node`` prints on stdout, read back: one JSON record a line (a line that
    is not one, such as a stray print, is skipped)."""
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


async def _report(mesh: Mesh, interval: float, gossip: bool, watched: Document) -> None:
    while True:
        _emit(status_record(mesh, gossip, watched))
        await anyio.sleep(interval)


def status_record(
    mesh: Mesh, gossip: bool = False, watched: Document | None = None
) -> dict[str, Any]:
    """The node's status line: what it holds, its links, and what peers cost it
    (``writes``: the keys of the ``writes`` map of ``watched``, the document
    ``--writes`` writes to, from every node that reached this one)."""
    summary = mesh.replica.summary()
    penalties = mesh.penalties
    now = anyio.current_time()
    return {
        "event": "status",
        "entries": summary.entries,
        "feeds": summary.feeds,
        "peers": len(mesh.peers),
        "rejected": mesh.rejected_inputs,
        "pending": summary.pending,
        "pending_bytes": mesh.replica.pending_bytes,
        "dropped_links": mesh.dropped_links,
        "refused_links": mesh.refused_peers,
        # keys (peers, hosts) refused now, and offences counted by kind since start
        "refusing": penalties.refused_count(now),
        "refusing_keys": sorted(key_text(k) for k in penalties.refused_keys(now))[:20],
        "offences": {o.value: n for o, n in penalties.offences.items() if n},
        # peers present in the mesh by their records (gossip on), this one included
        "known": len(mesh.gossip.present()) if gossip else None,
        "writes": len(watched.map("writes")) if watched is not None else None,
    }


def cmd_status(args: argparse.Namespace) -> int:
    url = status_view.metrics_url(args.address)
    once = args.once or not sys.stdout.isatty()
    before = status_view.scrape(url, time.monotonic())
    try:
        while True:
            time.sleep(args.interval)
            now = status_view.scrape(url, time.monotonic())
            screen = status_view.render(url, now, before)
            if once:
                print(screen)
                return 0
            print("\x1b[H\x1b[2J" + screen + "\n\n(Ctrl-C to stop)", flush=True)
            before = now
    except KeyboardInterrupt:
        return 0


def cmd_demo(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="crdt_mesh-demo-"))
    count, writes = args.nodes, args.writes

    async def run() -> None:
        transport = Transports()
        local = f"{args.transport}://127.0.0.1:0"
        replicas = [Replica.open(root / f"node-{i}", Identity.generate()) for i in range(count)]
        try:
            print(f"starting {count} nodes on loopback TCP (stores in {root})")
            async with Mesh(replicas[0], transport, listen=local, interval=0.2) as hub:
                meshes = [hub]
                async with anyio.create_task_group() as tg:
                    for replica in replicas[1:]:
                        mesh = Mesh(
                            replica,
                            transport,
                            listen=local,
                            peers=[hub.address or ""],
                            interval=0.2,
                        )
                        meshes.append(await _enter(tg, mesh))
                    for i, mesh in enumerate(meshes):
                        print(f"  node {i}: {mesh.replica.peer_id.short} at {mesh.address}")
                    start = time.perf_counter()
                    for i, replica in enumerate(replicas):
                        notes = replica.document("notes")
                        for j in range(writes):
                            with notes.transaction():
                                notes.map("todo")[f"node{i}-item{j}"] = f"written by node {i}"
                    print(f"each node wrote {writes} entries; waiting for convergence ...")
                    target = count * writes
                    with anyio.fail_after(30):
                        while not all(r.summary().entries == target for r in replicas):
                            if sys.stderr.isatty():  # progress, on a terminal only
                                held = sum(r.summary().entries for r in replicas)
                                sys.stderr.write(f"\r  {held} of {target * count} entries held")
                                sys.stderr.flush()
                            await anyio.sleep(0.05)
                    if sys.stderr.isatty():
                        sys.stderr.write("\r\x1b[K")
                    elapsed = time.perf_counter() - start
                    for i, replica in enumerate(replicas):
                        todo = replica.document("notes").map("todo")
                        print(
                            f"  node {i} holds {replica.summary().entries} entries, "
                            f"{len(todo)} todo items"
                        )
                    wire = sum(_link_bytes(m) for m in meshes)
                    print(
                        f"converged in {elapsed * 1000:.0f} ms; {wire:,} bytes on the wire "
                        f"({wire / target:,.0f} per entry, all nodes)"
                    )
                    tg.cancel_scope.cancel()
        finally:
            for replica in replicas:
                replica.close()

    try:
        anyio.run(run)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("cleaned up")
    return 0


async def _enter(tg: Any, mesh: Mesh) -> Mesh:
    ready = anyio.Event()

    async def hold() -> None:
        async with mesh:
            ready.set()
            await anyio.sleep_forever()

    tg.start_soon(hold)
    await ready.wait()
    return mesh


def _link_bytes(mesh: Mesh) -> int:
    return sum(getattr(link, "bytes_sent", 0) for link in mesh.runtime.links.values())


# -- entry point ---------------------------------------------------------------------------


DESCRIPTION = """\
crdt-mesh: run and inspect crdt_mesh nodes.

  crdt-mesh keygen node.key
  crdt-mesh node --store node.mesh --key node.key --listen tcp://127.0.0.1:9000 \\
                 --peer tcp://127.0.0.1:9001
  crdt-mesh inspect node.mesh
  crdt-mesh demo

`node` reads the P2P_* variables where they apply (P2P_LISTEN_PORT,
P2P_BOOTSTRAP_PEERS, P2P_MAX_PEERS, P2P_TRANSPORT, P2P_ENABLED and P2P_GOSSIP);
a malformed one is an error at start-up. See docs/ops.md.
"""


def _count(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}")
        return value

    parse.__name__ = f"whole number >= {low}"
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdt-mesh",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="logs on stderr as text lines, or one JSON object a line (default text)",
    )
    parser.add_argument("--version", action="version", version=f"crdt-mesh {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    keygen = commands.add_parser("keygen", help="write a new identity key (mode 0600)")
    keygen.add_argument(
        "path",
        help="where to write the key (sealed with CRDT_MESH_PASSPHRASE if that is set)",
    )
    keygen.add_argument("--force", action="store_true", help="replace an existing file")
    keygen.set_defaults(run=cmd_keygen)

    node = commands.add_parser("node", help="run a node until SIGINT or SIGTERM")
    node.add_argument("--store", required=True, help="LMDB store directory (made if missing)")
    node.add_argument("--key", required=True, help="identity key file (see keygen)")
    node.add_argument(
        "--listen", help="scheme://host:port to listen on (default: P2P_LISTEN_PORT, if set)"
    )
    node.add_argument(
        "--peer",
        action="append",
        default=[],
        help="scheme://host:port, or host:port with P2P_TRANSPORT's scheme, to dial (repeatable)",
    )
    node.add_argument(
        "--interval", type=_seconds, default=5.0, help="seconds between sync rounds (default 5)"
    )
    node.add_argument(
        "--capability",
        action="append",
        default=[],
        help="a capability to publish in this peer's record (with P2P_GOSSIP on; repeatable)",
    )
    node.add_argument(
        "--max-peers",
        type=_count(1),
        default=None,
        help="links kept (default: P2P_MAX_PEERS or 50)",
    )
    node.add_argument(
        "--writes", type=_count(0), default=0, help="entries to write at start (default 0)"
    )
    node.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any; the "
        "ready line says where; needs crdt_mesh[metrics])",
    )
    node.add_argument(
        "--writes-on-signal",
        action="store_true",
        help="make the --writes on each SIGUSR1, not at start (a benchmark starts every "
        "node's writes at once)",
    )
    node.add_argument("--document", default="demo", help="the document --writes writes to")
    node.add_argument(
        "--status-interval",
        type=_seconds,
        default=1.0,
        help="seconds between the JSON status lines on stdout (default 1)",
    )
    node.set_defaults(run=cmd_node)

    inspect = commands.add_parser("inspect", help="documents, feeds, heads, forks of a store")
    inspect.add_argument("store", help="an existing store directory (it is only read)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(run=cmd_inspect)

    status = commands.add_parser(
        "status", help="a running node's metrics on one screen (see node --metrics)"
    )
    status.add_argument("address", help="host:port of the node's --metrics, or its URL")
    status.add_argument(
        "--interval", type=_seconds, default=2.0, help="seconds between refreshes (default 2)"
    )
    status.add_argument(
        "--once",
        action="store_true",
        help="print one screen (rates over one interval) and exit; the default off a terminal",
    )
    status.set_defaults(run=cmd_status)

    demo = commands.add_parser("demo", help="a small mesh of local nodes converging")
    demo.add_argument(
        "--nodes", type=_count(1), default=4, help="nodes to start (default 4; at least 1)"
    )
    demo.add_argument(
        "--writes", type=_count(0), default=5, help="entries each node writes (default 5)"
    )
    demo.add_argument("--transport", default="tcp", help="the scheme of the transport to run it on")
    demo.set_defaults(run=cmd_demo)
    return parser


class JsonLogFormatter(logging.Formatter):
    """A log record as one JSON object: ``time`` (UTC, ISO 8601), ``level``,
    ``logger``, ``message``, and ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _version() -> str:
    try:
        return importlib.metadata.version("crdt_mesh")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = args.command in ("demo", "inspect", "keygen")  # their output is the point
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLogFormatter()
        if args.log_format == "json"
        else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    )
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
        handlers=[handler],
    )
    try:
        return int(args.run(args))
    except LocalError as exc:  # what the user gave: a bad argument, variable or file
        print(f"crdt-mesh {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MeshError as exc:
        print(f"crdt-mesh {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
