"""Federated queries: ask peers, who answer with the signed entries of memories the
asker may read. Sans-IO: frames in, frames out through the callbacks it is given.

A query travels with a time to live in hops: each peer answers from its own
replica and passes the query on (once: queries are de-duplicated by id) to its
other linked peers while hops remain. An answer goes back the way the query came,
hop by hop, so nobody needs a link to the asker. Each answer holds the signed
entries of the memories the answering peer would offer the asker by its read
policy — nothing else, so a query never tells anyone that a memory it may not
read exists — and the asker verifies them as it verifies any entry (it never
trusts an answer). Every peer bounds the queries a peer may send it.

Frames (CBOR): ``["q", id, asker key, hops left, spec]`` and ``["a", id, [entry...]]``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cbor2

from ...identity import PeerId
from ...ledger import Entry
from ...runtime.penalty import Offence
from .model import MemoryRequest

MAX_HOPS = 3
MAX_QUERY_FRAME = 16 * 1024
MAX_ANSWER_ENTRIES = 256
MAX_ANSWER_BYTES = 1024 * 1024
QUERIES_PER_SECOND = 10.0  # from one peer, with a burst of twice as many
_REMEMBERED = 4096  # query ids remembered for de-duplication and the way back
_SPEC_KEYS = frozenset(
    {
        "text",
        "tags",
        "privacy",
        "channels",
        "organizations",
        "authors",
        "since",
        "until",
        "limit",
        "mode",
    }
)


class QueryRouter:
    """One peer's end of federated queries.

    Args:
        me: this peer.
        send: ``send(peer, frame)``, best effort.
        peers: the peers linked now.
        answer: the encoded entries this peer answers ``spec`` with for ``asker`` (only
            what it may offer the asker).
        ingest: take an answer's entries (from ``source``) for a query of ours.
        may_read: whether ``asker`` may be offered the document an entry belongs to
            (checked again before an answer is passed on).
        penalise: count an offence against a peer.
        clock: seconds, for the rate limits.
    """

    def __init__(
        self,
        me: PeerId,
        *,
        send: Callable[[PeerId, bytes], None],
        peers: Callable[[], Sequence[PeerId]],
        answer: Callable[[PeerId, Mapping[str, Any]], list[bytes]],
        ingest: Callable[[list[bytes], PeerId], None],
        may_read: Callable[[Entry, PeerId], bool],
        penalise: Callable[[PeerId, Offence, str], None],
        clock: Callable[[], float],
        on_request: Callable[[MemoryRequest], None] = lambda request: None,
    ) -> None:
        self.me = me
        self._send, self._peers, self._answer = send, peers, answer
        self._ingest, self._may_read, self._penalise = ingest, may_read, penalise
        self._clock, self._on_request = clock, on_request
        #: query id -> (upstream peer or None for ours, asker)
        self._routes: OrderedDict[bytes, tuple[PeerId | None, PeerId]] = OrderedDict()
        self._tokens: dict[PeerId, tuple[float, float]] = {}
        self.answers_received = 0
        self.dropped = 0

    # -- asking ------------------------------------------------------------------------------

    def ask(self, spec: Mapping[str, Any], hops: int) -> bytes:
        """Send a query to every linked peer; returns its id."""
        query_id = os.urandom(16)
        self._remember(query_id, None, self.me)
        frame = _encode(["q", query_id, self.me.key, hops, dict(spec)])
        for peer in self._peers():
            self._send(peer, frame)
        return query_id

    def finish(self, query_id: bytes) -> None:
        """Stop taking answers to a query of ours."""
        self._routes.pop(query_id, None)

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, sender: PeerId, frame: bytes) -> None:
        try:
            items = cbor2.loads(frame)
            kind = items[0]
        except Exception:
            return self._junk(sender, "a memory frame that does not decode")
        if kind == "q" and len(frame) <= MAX_QUERY_FRAME:
            self._query(sender, items)
        elif kind == "a":
            self._answer_frame(sender, items)
        else:
            self._junk(sender, "an unknown memory frame")

    def _query(self, sender: PeerId, items: Any) -> None:
        try:
            _, query_id, asker_key, hops, spec = items
            asker = PeerId(asker_key)
            valid = (
                isinstance(query_id, bytes)
                and len(query_id) == 16
                and type(hops) is int
                and 1 <= hops <= MAX_HOPS
                and isinstance(spec, dict)
                and set(spec) <= _SPEC_KEYS
            )
        except (ValueError, TypeError):
            valid = False
        if not valid:
            return self._junk(sender, "a malformed memory query")
        if query_id in self._routes:
            return  # seen: answered once, passed on once
        if not self._allow(sender):
            self.dropped += 1
            return self._penalise(sender, Offence.BUDGET, "memory queries over the rate")
        self._remember(query_id, sender, asker)
        self._on_request(MemoryRequest(asker, sender, spec, hops - 1))
        try:
            entries = self._answer(asker, spec)
        except ValueError:  # a spec our own query refuses (wrong types, unknown names)
            return self._junk(sender, "a memory query with a malformed spec")
        self._send(sender, _encode(["a", query_id, _bounded(entries)]))
        if hops > 1:
            onward = _encode(["q", query_id, asker.key, hops - 1, spec])
            for peer in self._peers():
                if peer not in (sender, asker):
                    self._send(peer, onward)

    def _answer_frame(self, sender: PeerId, items: Any) -> None:
        try:
            _, query_id, entries = items
            valid = (
                isinstance(query_id, bytes)
                and isinstance(entries, list)
                and len(entries) <= MAX_ANSWER_ENTRIES
                and all(isinstance(e, bytes) for e in entries)
            )
        except (ValueError, TypeError):
            valid = False
        if not valid:
            return self._junk(sender, "a malformed memory answer")
        route = self._routes.get(query_id)
        if route is None:
            self.dropped += 1
            return  # late, or never asked: not an offence (answers race timeouts)
        upstream, asker = route
        if upstream is None:
            self.answers_received += 1
            self._ingest(entries, sender)
            return
        passed: list[bytes] = []
        for encoded in entries:  # pass on only what the asker may be offered
            try:
                entry = Entry.decode(encoded, verify=False)
            except ValueError:
                return self._junk(sender, "a memory answer holding a non-entry")
            if self._may_read(entry, asker):
                passed.append(encoded)
        self._send(upstream, _encode(["a", query_id, _bounded(passed)]))

    # -- bounds ------------------------------------------------------------------------------

    def _allow(self, peer: PeerId) -> bool:
        now = self._clock()
        tokens, then = self._tokens.get(peer, (2 * QUERIES_PER_SECOND, now))
        tokens = min(2 * QUERIES_PER_SECOND, tokens + (now - then) * QUERIES_PER_SECOND)
        if tokens < 1:
            self._tokens[peer] = (tokens, now)
            return False
        self._tokens[peer] = (tokens - 1, now)
        if len(self._tokens) > _REMEMBERED:
            self._tokens.pop(next(iter(self._tokens)))
        return True

    def _remember(self, query_id: bytes, upstream: PeerId | None, asker: PeerId) -> None:
        self._routes[query_id] = (upstream, asker)
        while len(self._routes) > _REMEMBERED:
            self._routes.popitem(last=False)

    def _junk(self, sender: PeerId, reason: str) -> None:
        self.dropped += 1
        self._penalise(sender, Offence.JUNK, reason)


def _bounded(entries: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    size = 0
    for encoded in entries[:MAX_ANSWER_ENTRIES]:
        size += len(encoded)
        if size > MAX_ANSWER_BYTES:
            break
        out.append(encoded)
    return out


def _encode(items: list[Any]) -> bytes:
    return cbor2.dumps(items, canonical=True)
