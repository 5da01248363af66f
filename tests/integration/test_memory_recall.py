"""Federated query recall: on a simulated mesh of 50 peers that loses frames, a query
finds every memory a central index over the same readable memories finds, and
brings the asker nothing it may not read.

Real replicas and the routers a running mesh uses, in virtual time
(:class:`crdt_mesh.testing.memory.SimulatedQueries`); every peer is at most three
hops from the asker. Nothing is replicated by sync: what the asker holds of the
others' public memories, the query brought.
"""

from __future__ import annotations

import pytest

from crdt_mesh.services.memory.rules import scope_of
from crdt_mesh.testing.memory import SimulatedQueries, recall

TAGS = ["ops", "deploy", "disk", "net", "db"]
WORDS = ["full", "slow", "down", "restarted", "rolled", "back", "paged", "quiet"]


def _populate(net: SimulatedQueries) -> tuple[list[int], list[int]]:
    """Public memories everywhere; a channel the asker (0) is in, and one it is not."""
    for i, board in enumerate(net.boards):
        for k in range(8):
            tag = TAGS[(i + k) % len(TAGS)]
            text = f"{tag} {WORDS[(i * k) % len(WORDS)]} on node {i} note {k}"
            board.store(text, "public", tags=[tag])
    inside = [0, 1, 7, 13, 21, 34, 42]
    outside = [2, 8, 14, 22, 35, 43]
    for name, members in (("alpha", inside), ("secret", outside)):
        admin = net.boards[members[0]]
        admin.create_channel(name, members=[net.ids[m] for m in members[1:]])
        net.share(members[0], members[1:])
        for m in members:
            net.boards[m].store(
                f"disk full in {name} seen by {m}", "team", channel=name, tags=["disk"]
            )
        for m in members:
            net.share(m, [o for o in members if o != m])
    return inside, outside


@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_a_federated_query_finds_what_a_central_index_finds_and_nothing_else(
    loss: float,
) -> None:
    with SimulatedQueries(50, degree=8, loss=loss, seed=3) as net:
        assert max(net.distances(0)) <= 3  # (the query's reach covers the mesh)
        _inside, outside = _populate(net)
        specs = [
            {"tags": ["disk"], "limit": 1000},
            {"tags": ["ops", "deploy"], "limit": 10},  # the best ten: each peer sends its ten
            {"tags": ["net", "db"], "privacy": "public", "limit": 1000},
            {"text": "slow restarted", "mode": "lexical", "limit": 1000},
        ]
        for spec in specs:
            expected = net.central(0, **spec)
            run = net.ask(0, hops=3, **spec)
            found = [hit.memory.ref for hit in run.hits]
            assert len(expected) >= min(20, spec["limit"]), spec  # finding little proves little
            assert recall(found, expected) == 1.0, (spec, len(found), len(expected))
            assert set(found) == set(expected), spec
        if loss:
            assert sum(r.resent for r in net.routers) > 0  # frames were lost, and sent again
        held = net.replicas[0].documents()
        secret = [d for d in held if (s := scope_of(d)) is not None and s.group == "secret"]
        assert secret == []  # a query never brought what the asker may not read
        outsider_memories = [m for m in net.boards[outside[1]].memories() if m.channel == "secret"]
        assert len(outsider_memories) == len(outside)  # (control: they exist, over there)
