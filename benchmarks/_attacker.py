"""Attackers for ``benchmarks.hostile``, as a process of their own.

    python -m benchmarks._attacker KIND COUNT ADDRESS SECONDS

Runs COUNT attackers of KIND (amplify, stall, flood, broadcast) against the node
at ADDRESS for SECONDS, each from a loopback host of its own (127.0.0.2, .3 ...)
and with a fresh key for every attempt (the worst case: a refused key is no loss
to them). It runs at a lower priority, standing in for machines of their own.
"""

from __future__ import annotations

import os
import sys

import anyio

from crdt_mesh import Identity
from crdt_mesh.errors import MeshError
from crdt_mesh.testing import attacks
from transports.tcp import TcpAddress, TcpTransport


async def worker(kind: str, index: int, address: str, seconds: float) -> None:
    host = f"127.0.0.{2 + index}"
    transport = TcpTransport(local_host=host)
    parsed = TcpAddress.parse(address)
    entries = attacks.gapped_entries(Identity.generate(), feeds=10, length=5, size=20_000)
    with anyio.move_on_after(seconds):
        if kind == "stall":
            await attacks.stall_handshakes(
                parsed.host, parsed.port, count=20, seconds=seconds, local_host=host
            )
            return
        while True:
            try:
                if kind == "amplify":
                    await attacks.amplify(
                        transport, address, Identity.generate(), greedy_rounds=2, quiet=0.2
                    )
                elif kind == "flood":
                    await attacks.flood_pending(
                        transport, address, Identity.generate(), entries, hold=2.0
                    )
                elif kind == "broadcast":
                    await attacks.abuse_broadcasts(
                        transport, address, Identity.generate(), frames=12, hold=0.5
                    )
            except (MeshError, OSError, TimeoutError):
                await anyio.sleep(0.05)  # refused or cut off: try again, as an attacker would


async def main(kind: str, count: int, address: str, seconds: float) -> None:
    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(worker, kind, index, address, seconds)


if __name__ == "__main__":
    os.nice(10)
    kind, count, address, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    anyio.run(main, kind, count, address, seconds)
