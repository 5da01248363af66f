"""The federated query router, sans-IO: bounds, de-duplication, the way back, no leaks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2

from crdt_mesh import Identity, Offence, PeerId
from crdt_mesh.services.memory.federation import (
    QUERIES_PER_SECOND,
    RESEND_AFTER,
    SENDS,
    QueryRouter,
)

A, B, C = (Identity.generate().peer_id for _ in range(3))


class Wire:
    def __init__(self, me: PeerId, answer: list[bytes], readable: bool = True) -> None:
        self.sent: list[tuple[PeerId, list[Any]]] = []
        self.offences: list[tuple[PeerId, Offence]] = []
        self.ingested: list[tuple[list[bytes], PeerId]] = []
        self.now = 0.0
        self.asked = 0

        def respond(asker: PeerId, spec: Mapping[str, Any]) -> list[bytes]:
            self.asked += 1
            return answer

        self.router = QueryRouter(
            me,
            send=lambda peer, frame: self.sent.append((peer, cbor2.loads(frame))),
            peers=lambda: [p for p in (A, B, C) if p != me],
            answer=respond,
            ingest=lambda entries, source: self.ingested.append((entries, source)),
            may_read=lambda entry, asker: readable,
            penalise=lambda peer, offence, reason: self.offences.append((peer, offence)),
            clock=lambda: self.now,
        )


def _query(query_id: bytes, asker: PeerId, hops: int, spec: dict[str, Any]) -> bytes:
    return cbor2.dumps(["q", query_id, asker.key, hops, spec])


def _kinds(wire: Wire) -> list[tuple[PeerId, str]]:
    return [(p, f[0]) for p, f in wire.sent]


def _entry() -> bytes:
    from tests.helpers import feed

    return feed(Identity.generate(), 1)[0].encoded


def test_a_query_is_answered_once_passed_on_once_and_answers_go_back_the_way_it_came() -> None:
    wire = Wire(B, [b"x"])
    frame = _query(b"q" * 16, A, 2, {"tags": ["ops"]})
    wire.router.receive(A, frame)
    wire.router.receive(C, frame)  # the same query by another way: acknowledged, ignored
    assert wire.asked == 1
    assert _kinds(wire) == [(A, "k"), (A, "a"), (C, "q"), (C, "k")]
    assert wire.sent[2][1][3] == 1  # one hop less
    entry = _entry()
    wire.sent.clear()
    wire.router.receive(C, cbor2.dumps(["a", b"q" * 16, C.key, [entry]]))
    assert wire.sent == [(C, ["k", b"q" * 16, C.key]), (A, ["a", b"q" * 16, C.key, [entry]])]


def test_a_query_that_comes_again_with_more_hops_left_is_passed_on_again_not_answered() -> None:
    wire = Wire(B, [b"x"])
    wire.router.receive(C, _query(b"m" * 16, A, 1, {}))  # the long way round: no hops left
    assert _kinds(wire) == [(C, "k"), (C, "a")]
    wire.router.receive(A, _query(b"m" * 16, A, 3, {}))  # then straight from the asker
    assert wire.asked == 1
    assert _kinds(wire)[2:] == [(A, "k"), (C, "q")]
    assert wire.sent[-1][1][3] == 2


def test_a_frame_is_sent_again_until_it_is_acknowledged_and_no_more_than_sends_times() -> None:
    wire = Wire(B, [b"x"])
    wire.router.receive(A, _query(b"t" * 16, A, 2, {}))
    answers = lambda: [f for p, f in wire.sent if f[0] == "a"]  # noqa: E731
    queries = lambda: [f for p, f in wire.sent if f[0] == "q"]  # noqa: E731
    wire.router.tick()
    assert len(answers()) == 1  # not yet
    wire.now += RESEND_AFTER
    wire.router.tick()
    assert len(answers()) == 2 and len(queries()) == 2  # both went again
    wire.router.receive(A, cbor2.dumps(["k", b"t" * 16, B.key]))  # the answer arrived
    for _ in range(10):
        wire.now += RESEND_AFTER
        wire.router.tick()
    assert len(answers()) == 2
    assert len(queries()) == SENDS  # never acknowledged: given up after SENDS
    assert wire.router.resent == 1 + SENDS - 1


def test_a_relay_passes_on_only_what_the_asker_may_read() -> None:
    wire = Wire(B, [], readable=False)
    wire.router.receive(A, _query(b"r" * 16, A, 2, {}))
    wire.router.receive(C, cbor2.dumps(["a", b"r" * 16, C.key, [_entry()]]))
    assert wire.sent[-1] == (A, ["a", b"r" * 16, C.key, []])


def test_answers_to_our_own_query_are_ingested_once_and_late_ones_dropped() -> None:
    wire = Wire(A, [])
    query_id = wire.router.ask({"tags": ["x"]}, 1)
    entry = _entry()
    answer = cbor2.dumps(["a", query_id, C.key, [entry]])
    wire.router.receive(B, answer)
    wire.router.receive(B, answer)  # sent again: our acknowledgement was lost
    assert wire.ingested == [([entry], B)]
    assert wire.router.answerers(query_id) == {C.key}  # (C answered, through B)
    wire.router.finish(query_id)
    wire.router.receive(C, cbor2.dumps(["a", query_id, C.key, [entry]]))
    assert len(wire.ingested) == 1 and wire.offences == []  # late is not an offence


def test_junk_and_floods_cost_the_sender() -> None:
    wire = Wire(B, [])
    wire.router.receive(A, b"\xff\x00")
    wire.router.receive(A, cbor2.dumps(["q", b"short", A.key, 1, {}]))
    wire.router.receive(A, _query(b"h" * 16, A, 9, {}))  # past the hop limit
    wire.router.receive(A, _query(b"k" * 16, A, 1, {"sql": "drop"}))  # unknown key
    assert [o for _, o in wire.offences] == [Offence.JUNK] * 4
    for i in range(int(3 * QUERIES_PER_SECOND)):
        wire.router.receive(C, _query(i.to_bytes(16, "big"), C, 1, {}))
    assert wire.asked == int(2 * QUERIES_PER_SECOND)  # the burst, then refused
    assert (C, Offence.BUDGET) in wire.offences
