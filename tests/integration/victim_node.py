"""A node under attack, as a process of its own (so that its memory is its own).

    python -m tests.integration.victim_node STORE [--writes N] [--auction]

Listens on TCP (loopback, a free port) with gossip and tasks on, writes N entries,
optionally announces an auctioned task, and prints JSON lines: ``ready`` (its
address, peer id, task), then ``status`` every 0.1 s (the node's status line, its
resident memory, the task's view). A line ``close`` on stdin closes the auction.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio

from crdt_mesh import Durability, Identity, MeshConfig, Penalties, Replica
from crdt_mesh.cli import status_record
from crdt_mesh.mesh import Mesh
from crdt_mesh.services.tasks import TaskCoordinationMode
from transports.tcp import TcpTransport


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


async def main(args: argparse.Namespace) -> None:
    env = {
        "P2P_ENABLED": "true",
        "P2P_GOSSIP": "true",
        "P2P_GOSSIP_INTERVAL": "200",
        "P2P_TASK_NEGOTIATION": "true",
    }
    config = MeshConfig.from_env(env)
    penalties = Penalties()
    identity = Identity.generate()
    with Replica.open(Path(args.store), identity, durability=Durability.PROCESS) as replica:
        async with Mesh(
            replica,
            TcpTransport(penalties=penalties),
            listen="tcp://127.0.0.1:0",
            interval=args.interval,
            config=config,
            penalties=penalties,
        ) as mesh:
            document = replica.document("victim")
            for i in range(args.writes):
                with document.transaction():
                    document.map("m")[str(i)] = "v" * 200
            task = None
            if args.auction:
                announcement = await mesh.tasks.announce(
                    "auction",
                    {"capabilities": ["work"]},
                    mode=TaskCoordinationMode.P2P_AUCTIONED,
                    negotiation={"selection_criteria": ["price"], "bid_timeout": 3600},
                )
                task = announcement.ref
            peer = str(identity.peer_id)
            named = [str(task.announcer), task.name] if task is not None else None
            emit({"event": "ready", "address": mesh.address, "peer": peer, "task": named})

            async def report() -> None:
                while True:
                    record = status_record(mesh, gossip=True)
                    record["rss"] = rss_bytes()
                    if task is not None:
                        view = mesh.tasks.view(task)
                        record["task"] = {
                            "award": str(view.award) if view.award else None,
                            "rejected": [[str(r.bidder), r.reason] for r in view.rejected],
                            "sealed": view.sealed,
                            "audit_ok": view.audit_ok,
                        }
                    emit(record)
                    await anyio.sleep(0.1)

            async with anyio.create_task_group() as tg:
                tg.start_soon(report)
                async for line in anyio.wrap_file(sys.stdin):
                    if line.strip() == "close" and task is not None:
                        view = mesh.tasks.board.close(mesh.tasks.board.resolve(task))
                        emit({"event": "closed", "award": str(view.award)})
                tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--writes", type=int, default=0)
    parser.add_argument("--auction", action="store_true")
    parser.add_argument("--interval", type=float, default=0.2)
    anyio.run(main, parser.parse_args())
