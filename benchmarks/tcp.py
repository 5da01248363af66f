"""TCP benchmark: two nodes on loopback against pycrdt-websocket, in one run.

Run: ``python -m benchmarks.tcp`` (``--updates N``, default 2,000).

crdt_mesh: two Meshes over the TCP transport (Noise XX, encrypted), each update
one transaction = one signed entry, verified and fsynced (Durability.FULL) on
the receiving replica. pycrdt-websocket: a WebsocketServer room with two pycrdt
Providers, the same updates (no signatures, no store). Both run in this one
process on asyncio; the figure is updates/s from the first write until the
other side has applied them all, and bytes on the wire per update.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from crdt_mesh import Durability, Identity, Mesh, Replica
from transports.tcp import TcpTransport

from ._common import Target, progress, progress_done, row, scratch, summary


async def mesh_run(
    root: Path, updates: int, group: int, *, metrics: bool = True
) -> tuple[float, float, float]:
    """(updates/s, bytes per update, CPU seconds per update) for crdt_mesh over TCP;
    ``metrics``: both meshes keep theirs (as they do by default)."""
    sender = Replica.open(root / "a", Identity.generate(), durability=Durability.FULL)
    receiver = Replica.open(root / "b", Identity.generate(), durability=Durability.FULL)
    try:
        transport = TcpTransport()
        hub = Mesh(receiver, transport, listen="tcp://127.0.0.1:0", interval=0.5, metrics=metrics)
        async with hub:
            peers = [hub.address or ""]
            async with Mesh(sender, transport, peers=peers, interval=0.5, metrics=metrics) as mesh:
                cpu = time.process_time()
                start = await _write_updates(mesh, updates, group)
                with anyio.fail_after(120):
                    while receiver.summary().entries < updates:
                        await anyio.sleep(0.001)
                elapsed = time.perf_counter() - start
                cpu = time.process_time() - cpu
                wire = _wire_bytes(mesh)
        return updates / elapsed, wire / updates, cpu / updates
    finally:
        sender.close()
        receiver.close()


async def _write_updates(mesh: Mesh, updates: int, group: int) -> float:
    """Once linked, write ``updates`` map updates, ``group`` transactions per fsync
    (a group commit); returns the start time."""
    with anyio.fail_after(10):
        while not mesh.peers:
            await anyio.sleep(0.001)
    notes = mesh.replica.document("bench")
    root_map = notes.map("m")
    start = time.perf_counter()
    for first in range(0, updates, group):
        with mesh.replica.batch():
            for i in range(first, min(first + group, updates)):
                with notes.transaction():
                    root_map[str(i)] = i
        await anyio.sleep(0)  # let the links run, as an application would
    return start


def _wire_bytes(mesh: Mesh) -> int:
    """Bytes sent and received on the mesh's links (TCP links count them)."""
    return sum(
        getattr(link, "bytes_sent", 0) + getattr(link, "bytes_received", 0)
        for link in mesh.runtime.links.values()
    )


class _Channel:
    """A websockets connection as the Channel that pycrdt and pycrdt-websocket expect."""

    def __init__(self, websocket: Any, path: str, counter: list[int]) -> None:
        self._ws = websocket
        self._path = path
        self._counter = counter

    @property
    def path(self) -> str:
        return self._path

    async def send(self, message: bytes) -> None:
        self._counter[0] += len(message)
        await self._ws.send(message)

    async def recv(self) -> bytes:
        return bytes(await self._ws.recv())

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> bytes:
        import websockets

        try:
            return await self.recv()
        except websockets.ConnectionClosed:
            raise StopAsyncIteration from None


async def websocket_run(updates: int) -> tuple[float, float]:
    """(updates/s, bytes per update) for pycrdt-websocket with two Providers."""
    import pycrdt
    import websockets
    from pycrdt.websocket import WebsocketServer

    counter = [0]

    async def handler(websocket: Any) -> None:
        await server.serve(_Channel(websocket, websocket.request.path, counter))

    async with WebsocketServer() as server, websockets.serve(handler, "127.0.0.1", 0) as wss:
        port = wss.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/bench"
        sender_doc: pycrdt.Doc[Any] = pycrdt.Doc()
        receiver_doc: pycrdt.Doc[Any] = pycrdt.Doc()
        async with (
            websockets.connect(url, max_size=None) as ws_a,
            websockets.connect(url, max_size=None) as ws_b,
            pycrdt.Provider(sender_doc, _Channel(ws_a, "/bench", counter)),
            pycrdt.Provider(receiver_doc, _Channel(ws_b, "/bench", counter)),
        ):
            root_a = sender_doc.get("m", type=pycrdt.Map)
            root_b = receiver_doc.get("m", type=pycrdt.Map)
            await anyio.sleep(0.2)  # let both providers finish their initial sync
            counter[0] = 0
            start = time.perf_counter()
            for i in range(updates):
                with sender_doc.transaction():
                    root_a[str(i)] = i
                if i % 50 == 0:
                    await anyio.sleep(0)
            with anyio.fail_after(120):
                while len(root_b) < updates:
                    await anyio.sleep(0.001)
            elapsed = time.perf_counter() - start
    return updates / elapsed, counter[0] / updates


async def _lines(process: Any) -> Any:
    """An async iterator over a child's stdout lines (read on a worker thread)."""
    while True:
        line = await anyio.to_thread.run_sync(process.stdout.readline)
        if not line:
            return
        yield line.decode().strip()


async def mesh_two_processes(root: Path, updates: int, group: int) -> tuple[float, float]:
    """Sender here, receiver a `crdt-mesh node` process: (updates/s, bytes per update)."""
    import json
    import subprocess

    key = root / "receiver.key"
    Identity.generate().save(key)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crdt_mesh",
            "node",
            "--store",
            str(root / "b"),
            "--key",
            str(key),
            "--listen",
            "tcp://127.0.0.1:0",
            "--interval",
            "0.5",
            "--status-interval",
            "0.005",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    lines = _lines(child)
    try:
        address = ""
        async for line in lines:
            record = json.loads(line)
            if record["event"] == "ready":
                address = record["address"]
                break
        sender = Replica.open(root / "a", Identity.generate(), durability=Durability.FULL)
        try:
            async with Mesh(sender, TcpTransport(), peers=[address], interval=0.5) as mesh:
                start = await _write_updates(mesh, updates, group)
                with anyio.fail_after(120):
                    async for line in lines:
                        record = json.loads(line)
                        if record.get("entries", 0) >= updates:
                            break
                elapsed = time.perf_counter() - start
                wire = _wire_bytes(mesh)
        finally:
            sender.close()
    finally:
        child.terminate()
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
    return updates / elapsed, wire / updates


async def websocket_two_processes(updates: int) -> float:
    """Server and sending Provider here, receiving Provider in a child: updates/s."""
    import subprocess

    import pycrdt
    import websockets
    from pycrdt.websocket import WebsocketServer

    async def handler(websocket: Any) -> None:
        await server.serve(_Channel(websocket, websocket.request.path, [0]))

    async with WebsocketServer() as server, websockets.serve(handler, "127.0.0.1", 0) as wss:
        port = wss.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/bench"
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._ws_receiver", url, str(updates)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        lines = _lines(child)
        try:
            async for line in lines:
                if line == "ready":
                    break
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            async with (
                websockets.connect(url, max_size=None) as ws,
                pycrdt.Provider(doc, _Channel(ws, "/bench", [0])),
            ):
                root_map = doc.get("m", type=pycrdt.Map)
                await anyio.sleep(0.2)
                start = time.perf_counter()
                for i in range(updates):
                    with doc.transaction():
                        root_map[str(i)] = i
                    if i % 50 == 0:
                        await anyio.sleep(0)
                with anyio.fail_after(120):
                    async for line in lines:
                        if line == "done":
                            break
                elapsed = time.perf_counter() - start
        finally:
            child.terminate()
            child.wait()
            child.stdout.close()  # type: ignore[union-attr]
    return updates / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=3000, help="updates per run")
    parser.add_argument("--group", type=int, default=50, help="transactions per group commit")
    parser.add_argument(
        "--quick", action="store_true", help="300 updates, one run of each (a smoke run)"
    )
    args = parser.parse_args(argv)
    if args.updates < 1 or args.group < 1:
        parser.error("--updates and --group are at least 1")
    repeats = 1 if args.quick else 3
    if args.quick:
        args.updates = min(args.updates, 300)
    print(f"crdt_mesh TCP benchmark (python {sys.version.split()[0]}), {args.updates:,} updates")
    print(f"  {'':<44} {'crdt_mesh':>16} {'pycrdt-websocket':>18} {'ratio':>8}  target")

    async def run() -> None:
        results: dict[int, tuple[float, float]] = {}
        best_ws = (0.0, 0.0)
        for attempt in range(repeats):
            progress(f"one process, run {attempt + 1} of {repeats}")
            for group in (args.group, 1):
                with scratch("tcp") as root:
                    rate, size, _ = await mesh_run(root, args.updates, group)
                results[group] = max(results.get(group, (0.0, 0.0)), (rate, size))
            best_ws = max(best_ws, await websocket_run(args.updates))
        for group, (rate, size) in results.items():
            label = f"updates/s, {group} per fsync" if group > 1 else "updates/s, fsync per update"
            target: Target | str = Target(">=", 3.0) if group > 1 else "(higher is better)"
            row(label, f"{rate:,.0f}", f"{best_ws[0]:,.0f}", rate / best_ws[0], target)
            row(
                "  bytes on the wire per update",
                f"{size:,.0f}",
                f"{best_ws[1]:,.0f}",
                size / best_ws[1],
                Target("<=", 1.5) if group > 1 else "(lower is better)",
            )
        print("  (crdt_mesh: every update signed, verified, encrypted and fsynced;")
        print("   pycrdt-websocket: none of these; both in this one process, one event loop)")
        # Metrics kept (the default) or not, in turns: CPU per update, the best of each
        # (the least disturbed by the rest of the machine).
        cpu = {True: math.inf, False: math.inf}
        for attempt in range(2 * repeats + 1):
            progress(f"metrics on and off, run {attempt + 1} of {2 * repeats + 1}")
            for kept in (attempt % 2 == 0, attempt % 2 == 1):
                with scratch("tcp-metrics") as root:
                    _, _, spent = await mesh_run(root, args.updates, args.group, metrics=kept)
                cpu[kept] = min(cpu[kept], spent)
        row(
            f"CPU per update with metrics on / off, {args.group} per fsync",
            f"{cpu[True] * 1e6:,.0f} us",
            f"{cpu[False] * 1e6:,.0f} us",
            cpu[True] / cpu[False],
            Target("<=", 1.02),
        )
        print("  (both ends in this one process; the right column is crdt_mesh without metrics)")
        best_two = (0.0, 0.0)
        best_ws_two = 0.0
        for attempt in range(repeats):
            progress(f"two processes, run {attempt + 1} of {repeats}")
            with scratch("tcp2") as root:
                best_two = max(best_two, await mesh_two_processes(root, args.updates, args.group))
            best_ws_two = max(best_ws_two, await websocket_two_processes(args.updates))
        row(
            f"two processes: updates/s, {args.group} per fsync",
            f"{best_two[0]:,.0f}",
            f"{best_ws_two:,.0f}",
            best_two[0] / best_ws_two,
            Target(">=", 3.0),
        )
        progress_done()
        print("  (receiver in its own process: a `crdt-mesh node`; a pycrdt Provider)")

    anyio.run(run, backend="asyncio")
    summary()


if __name__ == "__main__":
    main()
