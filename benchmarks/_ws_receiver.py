"""Child process for benchmarks.tcp: a pycrdt Provider that reports when it has N updates.

Usage: python -m benchmarks._ws_receiver URL N
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pycrdt
import websockets

from .tcp import _Channel


async def main(url: str, count: int) -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    received = doc.get("m", type=pycrdt.Map)
    async with (
        websockets.connect(url, max_size=None) as ws,
        pycrdt.Provider(doc, _Channel(ws, "/bench", [0])),
    ):
        print("ready", flush=True)
        while len(received) < count:
            await anyio.sleep(0.001)
        print("done", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), backend="asyncio")
