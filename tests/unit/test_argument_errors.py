"""Every public entry point refuses a wrong argument with an error that names it.

The error is a :class:`MeshError` (a :class:`LocalError`: the caller's mistake), also
a ``TypeError`` or ``ValueError`` as the mistake means, never another library's
exception; and nothing was written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from crdt_mesh import (
    Identity,
    LocalError,
    Mesh,
    MeshConfig,
    PeerId,
    Replica,
    TaskRef,
)
from crdt_mesh.services.tasks import TaskBoard
from transports.memory import MemoryNetwork

ON = MeshConfig(enabled=True, gossip=True, task_negotiation=True)


@dataclass(frozen=True)
class World:
    root: Path
    replica: Replica
    board: TaskBoard
    mesh: Mesh
    task: TaskRef


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        board = TaskBoard(replica)
        task = board.announce("t", {"capabilities": []}).ref
        mesh = Mesh(replica, MemoryNetwork().transport(), config=ON)
        yield World(tmp_path, replica, board, mesh, task)


def _run(coroutine_function: Callable[[], Any]) -> Any:
    return anyio.run(coroutine_function)


KEY = Identity.generate()

#: (what is called, the error's kind, a word the message must hold)
CASES: list[tuple[str, Callable[[World], Any], type[Exception], str]] = [
    ("Replica.open identity", lambda w: Replica.open(w.root / "x", "alice"), TypeError, "identity"),
    ("Replica.open path", lambda w: Replica.open(12, KEY), TypeError, "path"),
    (
        "Replica.open durability",
        lambda w: Replica.open(w.root / "x", KEY, durability="full"),
        TypeError,
        "durability",
    ),
    (
        "Replica.open map_size",
        lambda w: Replica.open(w.root / "x", KEY, map_size="big"),
        TypeError,
        "map_size",
    ),
    ("Replica.document name", lambda w: w.replica.document(12), TypeError, "name"),
    (
        "Replica.document policy",
        lambda w: w.replica.document("x", policy="open"),
        TypeError,
        "policy",
    ),
    ("Replica.ingest entries", lambda w: w.replica.ingest("junk"), TypeError, "items"),
    ("Replica.members", lambda w: w.replica.members(12), TypeError, "document"),
    ("PeerId key", lambda w: PeerId(b"abc"), ValueError, "key"),
    ("PeerId key type", lambda w: PeerId("abc"), TypeError, "key"),
    ("PeerId.parse", lambda w: PeerId.parse("not a peer"), ValueError, "not a peer id"),
    ("Identity.from_seed", lambda w: Identity.from_seed(b"short"), ValueError, "seed"),
    ("MeshConfig max_peers", lambda w: MeshConfig(max_peers="10"), TypeError, "max_peers"),
    ("MeshConfig listen_port", lambda w: MeshConfig(listen_port=70000), ValueError, "listen"),
    ("Mesh replica", lambda w: Mesh("replica"), TypeError, "replica"),
    ("Mesh interval", lambda w: Mesh(w.replica, interval=0), ValueError, "interval"),
    ("Mesh interval type", lambda w: Mesh(w.replica, interval="5"), TypeError, "interval"),
    ("Mesh push_fanout", lambda w: Mesh(w.replica, push_fanout=-1), ValueError, "push_fanout"),
    ("Mesh max_peers", lambda w: Mesh(w.replica, max_peers=0), ValueError, "max_peers"),
    ("Mesh peers as a str", lambda w: Mesh(w.replica, peers="mem://a"), TypeError, "peers"),
    ("Mesh listen", lambda w: Mesh(w.replica, listen=9000), TypeError, "listen"),
    (
        "Mesh peer address",
        lambda w: Mesh(w.replica, peers=["localhost:9000"]),
        ValueError,
        "scheme",
    ),
    (
        "announce deadline",
        lambda w: w.board.announce("u", deadline="tomorrow"),
        TypeError,
        "deadline",
    ),
    ("announce name", lambda w: w.board.announce(12), TypeError, "name"),
    ("announce mode", lambda w: w.board.announce("u", mode="auction"), ValueError, "mode"),
    (
        "announce negotiation",
        lambda w: w.board.announce("u", negotiation=3),
        TypeError,
        "negotiation",
    ),
    (
        "announce min_bidders",
        lambda w: w.board.announce("u", negotiation={"min_bidders": "2"}),
        TypeError,
        "min_bidders",
    ),
    ("bid price", lambda w: w.board.bid(w.task, price="cheap"), TypeError, "price"),
    (
        "bid availability",
        lambda w: w.board.bid(w.task, price=1, availability=2),
        ValueError,
        "availability",
    ),
    ("bid eta", lambda w: w.board.bid(w.task, price=1, eta=-5), ValueError, "eta"),
    (
        "bid capabilities",
        lambda w: w.board.bid(w.task, price=1, capabilities="x"),
        TypeError,
        "capabilities",
    ),
    ("resolve task", lambda w: w.board.resolve(12), TypeError, "task"),
    ("events.on name", lambda w: w.mesh.events.on(12, print), ValueError, "event name"),
    (
        "propagate payload",
        lambda w: _run(lambda: _in_mesh(w, lambda m: m.gossip.propagate("x", payload=object()))),
        ValueError,
        "payload",
    ),
    (
        "propagate ttl",
        lambda w: _run(lambda: _in_mesh(w, lambda m: m.gossip.propagate("x", ttl="5"))),
        TypeError,
        "ttl",
    ),
    (
        "join capabilities",
        lambda w: _run(lambda: _in_mesh(w, lambda m: m.gossip.join(capabilities="review"))),
        TypeError,
        "capabilities",
    ),
    (
        "collect_bids timeout",
        lambda w: _run(lambda: _in_mesh(w, lambda m: m.tasks.collect_bids(w.task, timeout="x"))),
        TypeError,
        "timeout",
    ),
]


async def _in_mesh(world: World, call: Callable[[Mesh], Any]) -> Any:
    async with world.mesh as mesh:
        result = call(mesh)
        if hasattr(result, "__await__"):
            result = await result
        return result


@pytest.mark.parametrize(("label", "call", "kind", "names"), CASES, ids=[c[0] for c in CASES])
def test_a_wrong_argument_is_a_typed_error_that_names_it(
    world: World, label: str, call: Callable[[World], Any], kind: type[Exception], names: str
) -> None:
    before = world.replica.heads(include_local=True)
    with pytest.raises(LocalError) as raised:
        call(world)
    assert isinstance(raised.value, kind), f"{label}: {raised.value!r} is not a {kind.__name__}"
    assert names in str(raised.value), f"{label}: {raised.value} does not name {names!r}"
    assert world.replica.heads(include_local=True) == before  # nothing was written
