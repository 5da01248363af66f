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

On a lossy network a frame can be lost: each query and each answer is
acknowledged by the peer it goes to, one hop, and sent again until it is (at most
:data:`SENDS` times, every :data:`RESEND_AFTER` seconds: the service ticks the
router). A query that reaches a peer again with more hops left than the first
time is passed on again (it is not answered twice), so a loss near the asker does
not shorten the query's reach.

Frames (CBOR): ``["q", id, asker key, hops left, spec]``, ``["a", id, answerer key,
[entry...]]`` and ``["k", id, answerer key or b""]`` (acknowledges an answer, or
with ``b""`` a query).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cbor2

from ...identity import PeerId
from ...ledger import Entry, Policy
from ...runtime.penalty import Offence
from .board import MemoryBoard
from .model import FederatedMemoryError, MemoryRequest
from .rules import check_group_name, lockbox_document, scope_of

MAX_HOPS = 3
#: The most memories one peer's query is answered with.
MAX_REMOTE_HITS = 50
MAX_QUERY_FRAME = 16 * 1024
#: An answer not acknowledged after this many seconds is sent again, up to SENDS times.
RESEND_AFTER = 0.1
SENDS = 4
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
        #: query id -> (upstream peer or None for ours, asker, most hops left seen)
        self._routes: OrderedDict[bytes, tuple[PeerId | None, PeerId, int]] = OrderedDict()
        #: our queries' ids -> the peers that answered them
        self._answerers: dict[bytes, set[bytes]] = {}
        #: frames not acknowledged yet: (id, answerer or b"", peer) -> frame, when, sends
        self._unacked: OrderedDict[tuple[bytes, bytes, PeerId], tuple[bytes, float, int]] = (
            OrderedDict()
        )
        #: answers passed on (or taken), so that one sent again is not passed on twice
        self._passed: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self.resent = 0
        self._tokens: dict[PeerId, tuple[float, float]] = {}
        self.answers_received = 0
        self.dropped = 0

    # -- asking ------------------------------------------------------------------------------

    def ask(self, spec: Mapping[str, Any], hops: int) -> bytes:
        """Send a query to every linked peer; returns its id."""
        query_id = os.urandom(16)
        self._remember(query_id, None, self.me, hops)
        self._answerers[query_id] = set()
        frame = _encode(["q", query_id, self.me.key, hops, dict(spec)])
        for peer in self._peers():
            self._send_until_acknowledged(peer, (query_id, b""), frame)
        return query_id

    def answerers(self, query_id: bytes) -> set[bytes]:
        """The keys of the peers that answered a query of ours so far."""
        return set(self._answerers.get(query_id, ()))

    def finish(self, query_id: bytes) -> None:
        """Stop taking answers to a query of ours."""
        self._routes.pop(query_id, None)
        self._answerers.pop(query_id, None)

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
        elif kind == "k":
            self._ack(sender, items)
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
        self._send(sender, _encode(["k", query_id, b""]))
        seen = self._routes.get(query_id)
        if seen is not None:  # answered once; passed on again only if it now goes further
            if hops > seen[2]:
                self._routes[query_id] = (seen[0], seen[1], hops)
                self._pass_on(query_id, asker, hops, spec, sender)
            return
        if not self._allow(sender):
            self.dropped += 1
            return self._penalise(sender, Offence.BUDGET, "memory queries over the rate")
        self._remember(query_id, sender, asker, hops)
        self._on_request(MemoryRequest(asker, sender, spec, hops - 1))
        try:
            entries = self._answer(asker, spec)
        except ValueError:  # a spec our own query refuses (wrong types, unknown names)
            return self._junk(sender, "a memory query with a malformed spec")
        self._send_answer(sender, query_id, self.me.key, entries)
        self._pass_on(query_id, asker, hops, spec, sender)

    def _pass_on(
        self, query_id: bytes, asker: PeerId, hops: int, spec: Any, sender: PeerId
    ) -> None:
        if hops > 1:
            onward = _encode(["q", query_id, asker.key, hops - 1, spec])
            for peer in self._peers():
                if peer not in (sender, asker):
                    self._send_until_acknowledged(peer, (query_id, b""), onward)

    def _answer_frame(self, sender: PeerId, items: Any) -> None:
        try:
            _, query_id, answerer, entries = items
            valid = (
                isinstance(query_id, bytes)
                and isinstance(answerer, bytes)
                and len(answerer) == 32
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
        self._send(sender, _encode(["k", query_id, answerer]))
        if (query_id, answerer) in self._passed:
            return  # sent again because our acknowledgement was lost: done already
        self._passed[(query_id, answerer)] = None
        while len(self._passed) > _REMEMBERED:
            self._passed.popitem(last=False)
        upstream, asker, _ = route
        if upstream is None:
            self.answers_received += 1
            answered = self._answerers.get(query_id)
            if answered is not None and len(answered) < _REMEMBERED:
                answered.add(answerer)
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
        self._send_answer(upstream, query_id, answerer, passed)

    # -- answers arrive: acknowledged hop by hop, sent again until they are ------------------

    def _send_answer(
        self, peer: PeerId, query_id: bytes, answerer: bytes, entries: list[bytes]
    ) -> None:
        frame = _encode(["a", query_id, answerer, _bounded(entries)])
        self._send_until_acknowledged(peer, (query_id, answerer), frame)

    def _send_until_acknowledged(
        self, peer: PeerId, tag: tuple[bytes, bytes], frame: bytes
    ) -> None:
        self._send(peer, frame)
        self._unacked[(*tag, peer)] = (frame, self._clock(), 1)
        while len(self._unacked) > _REMEMBERED:
            self._unacked.popitem(last=False)

    def _ack(self, sender: PeerId, items: Any) -> None:
        try:
            _, query_id, answerer = items
            key = (bytes(query_id), bytes(answerer), sender)
        except (ValueError, TypeError):
            return self._junk(sender, "a malformed memory acknowledgement")
        self._unacked.pop(key, None)

    def tick(self) -> None:
        """Send again each frame not acknowledged within :data:`RESEND_AFTER` seconds (at
        most :data:`SENDS` times in all). The service calls it every ``RESEND_AFTER``."""
        now = self._clock()
        for key, (frame, at, sent) in list(self._unacked.items()):
            if now - at < RESEND_AFTER:
                continue
            if sent >= SENDS:
                del self._unacked[key]
                continue
            self.resent += 1
            self._send(key[2], frame)
            self._unacked[key] = (frame, now, sent + 1)

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

    def _remember(self, query_id: bytes, upstream: PeerId | None, asker: PeerId, hops: int) -> None:
        self._routes[query_id] = (upstream, asker, hops)
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


# -- what a peer answers ---------------------------------------------------------------------


def answer_from(board: MemoryBoard, asker: PeerId, spec: Mapping[str, Any]) -> list[bytes]:
    """The encoded entries ``board``'s replica answers ``spec`` with for ``asker``: its
    best matches that ``asker`` may read (at most :data:`MAX_REMOTE_HITS`), each with
    the lockbox that opens it when the asker may have it.

    Raises:
        ValueError: a malformed spec (a FederatedMemoryError names what).
    """
    local = from_wire(spec)
    limit = local.get("limit", 10)
    if isinstance(limit, int) and limit > MAX_REMOTE_HITS:
        local["limit"] = MAX_REMOTE_HITS  # what one peer's query may cost us
    replica = board.replica
    out: list[bytes] = []
    for hit in board.query(**local, reader=asker):
        document = hit.memory.ref.document
        if document.policy is Policy.LOCAL:
            continue
        scope = scope_of(document)
        if scope is not None and scope.admin is not None and hit.memory.channel:
            lockbox = lockbox_document(scope.admin, check_group_name(hit.memory.channel, "c"))
            if replica.has_document(lockbox) and board.may_read(lockbox, asker):
                out.extend(e.encoded for e in replica.export(lockbox))
        out.extend(e.encoded for e in replica.export(document))
    return list(dict.fromkeys(out))


def to_wire(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A query's arguments as plain values (peers as keys)."""
    wire = dict(spec)
    if wire.get("authors") is not None:
        wire["authors"] = [p.key for p in wire["authors"]]
    for key in ("tags", "channels", "organizations"):
        if wire.get(key) is not None and not isinstance(wire[key], str):
            wire[key] = list(wire[key])
    return wire


def from_wire(spec: Mapping[str, Any]) -> dict[str, Any]:
    local = dict(spec)
    authors = local.get("authors")
    if authors is not None:
        if not isinstance(authors, list):
            raise FederatedMemoryError("authors: a list of peer keys")
        local["authors"] = [PeerId(bytes(k)) if isinstance(k, bytes) else k for k in authors]
    return local
