"""Federated memory queries on a simulated network: many real replicas, lossy links,
virtual time.

Each peer is a real replica with its memory board and its query router (the same
code a running mesh uses); frames between linked peers are delivered after a
random latency, or lost, by one seeded clock. No sockets, no sleeps: a query over
fifty peers runs in a fraction of a second, and the same seed gives the same run.

``central(asker, spec)`` is the oracle federated recall is measured against: one
index over every memory any peer would let the asker read.
"""

from __future__ import annotations

import heapq
import random
import shutil
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..identity import Identity, PeerId
from ..ledger import Policy
from ..replica.replica import Replica
from ..runtime.penalty import Offence
from ..services.memory.board import MemoryBoard
from ..services.memory.federation import (
    RESEND_AFTER,
    QueryRouter,
    answer_from,
    to_wire,
)
from ..services.memory.model import MemoryHit, MemoryRef
from ..store import Durability

TICK = RESEND_AFTER / 2


@dataclass(frozen=True, slots=True)
class QueryRun:
    """What one federated query did."""

    hits: list[MemoryHit]
    frames: int  # frames sent by every peer
    bytes: int  # their bytes
    lost: int  # frames the network dropped
    latency: float  # virtual seconds from the question to the last answer that brought news
    answerers: int  # peers whose answer reached the asker


class SimulatedQueries:
    """``size`` peers, each linked to about ``degree`` others, on a lossy network.

    Args:
        size: number of peers.
        degree: links per peer (each peer dials ``degree // 2`` others at random).
        loss: probability that a frame is lost.
        latency: (least, most) virtual seconds a frame takes.
        seed: drives every random choice.
        root: where the stores go (a temporary folder, removed on close, if None).
    """

    def __init__(
        self,
        size: int,
        *,
        degree: int = 6,
        loss: float = 0.0,
        latency: tuple[float, float] = (0.001, 0.010),
        seed: int = 0,
        root: str | Path | None = None,
    ) -> None:
        if size < 2 or not 0.0 <= loss < 1.0:
            raise ValueError("at least two peers, and a loss in [0, 1)")
        self.rng = random.Random(seed)
        self.loss, self.latency = loss, latency
        self._owned = root is None
        self.root = (
            Path(tempfile.mkdtemp(prefix="crdt_mesh-queries-")) if root is None else Path(root)
        )
        self.identities = [Identity.from_seed(self.rng.randbytes(32)) for _ in range(size)]
        self.replicas = [self._open(i, identity) for i, identity in enumerate(self.identities)]
        self.boards = [MemoryBoard(replica) for replica in self.replicas]
        self.ids = [board.me for board in self.boards]
        self._index = {peer: i for i, peer in enumerate(self.ids)}
        self.links: list[set[int]] = [set() for _ in range(size)]
        for i in range(size):
            for j in self.rng.sample(
                [j for j in range(size) if j != i], min(degree // 2, size - 1)
            ):
                self.links[i].add(j)
                self.links[j].add(i)
        self.now = 0.0
        self.offences: list[tuple[int, PeerId, Offence]] = []
        self._queue: list[tuple[float, int, int, int, bytes]] = []
        self._order = 0
        self._stats = [0, 0, 0]  # frames, bytes, lost
        self._news_at = 0.0
        self.routers = [self._router(i) for i in range(size)]

    def _open(self, index: int, identity: Identity) -> Replica:
        return Replica.open(
            self.root / f"peer-{index}",
            identity,
            durability=Durability.PROCESS,
            map_size=64 << 20,
            verify_processes=0,
        )

    def _router(self, i: int) -> QueryRouter:
        board = self.boards[i]

        def ingest(entries: list[bytes], source: PeerId) -> None:
            if board.replica.ingest(entries, source=source).applied:
                self._news_at = self.now

        return QueryRouter(
            self.ids[i],
            send=lambda peer, frame: self._send(i, self._index[peer], frame),
            peers=lambda: [self.ids[j] for j in sorted(self.links[i])],
            answer=lambda asker, spec: answer_from(board, asker, spec),
            ingest=ingest,
            may_read=lambda entry, asker: board.may_read(entry.document, asker),
            penalise=lambda peer, offence, reason: self.offences.append((i, peer, offence)),
            clock=lambda: self.now,
        )

    # -- the network -------------------------------------------------------------------------

    def _send(self, sender: int, receiver: int, frame: bytes) -> None:
        self._stats[0] += 1
        self._stats[1] += len(frame)
        if self.rng.random() < self.loss:
            self._stats[2] += 1
            return
        self._order += 1
        at = self.now + self.rng.uniform(*self.latency)
        heapq.heappush(self._queue, (at, self._order, sender, receiver, frame))

    def _run_until(self, until: float) -> None:
        """Deliver frames in time order; every peer's router ticks every ``TICK`` (as the
        service's loop does), to send again what was not acknowledged."""
        while self.now < until:
            step = min(until, self.now + TICK)
            while self._queue and self._queue[0][0] <= step:
                at, _, sender, receiver, frame = heapq.heappop(self._queue)
                self.now = at
                self.routers[receiver].receive(self.ids[sender], frame)
            self.now = step
            for router in self.routers:
                router.tick()

    def distances(self, start: int) -> list[int]:
        """Hops from ``start`` to each peer (-1: unreachable)."""
        seen = [-1] * len(self.ids)
        seen[start] = 0
        todo = deque([start])
        while todo:
            here = todo.popleft()
            for there in self.links[here]:
                if seen[there] < 0:
                    seen[there] = seen[here] + 1
                    todo.append(there)
        return seen

    # -- memories and groups -----------------------------------------------------------------

    def share(self, owner: int, to: list[int]) -> None:
        """Give peers ``to`` every document of ``owner`` that they may read (as sync
        would, without following: for groups and their memories)."""
        source = self.replicas[owner]
        for document in source.documents():
            if document.policy is Policy.LOCAL:
                continue
            for peer in to:
                if self.boards[owner].may_read(document, self.ids[peer]):
                    self.replicas[peer].ingest(list(source.export(document)))

    # -- asking ------------------------------------------------------------------------------

    def ask(
        self,
        asker: int,
        *,
        hops: int = 3,
        timeout: float = 1.0,
        **spec: Any,
    ) -> QueryRun:
        """A federated query as ``mesh.memory.query(remote=True)`` makes it: asked, the
        answers taken for ``timeout`` (virtual seconds), then ranked on the asker."""
        router = self.routers[asker]
        frames, size, lost = self._stats
        start = self.now
        self._news_at = start
        self.boards[asker].query(**spec)  # a malformed spec fails here
        query_id = router.ask(to_wire(spec), hops)
        self._run_until(start + timeout)
        answered = router.answerers(query_id)
        router.finish(query_id)
        self._run_until(self.now + 1.0)  # let stragglers land (and rate limits refill)
        return QueryRun(
            self.boards[asker].query(**spec),
            self._stats[0] - frames,
            self._stats[1] - size,
            self._stats[2] - lost,
            self._news_at - start,
            len(answered),
        )

    def central(self, asker: int, within: int | None = None, **spec: Any) -> list[MemoryRef]:
        """The oracle: ``spec`` over one index of every memory that any peer (``within``
        that many hops of ``asker``: a query's reach) would let ``asker`` read, as its
        identity sees them (the groups it is in, the keys it holds). Private memories
        never leave a replica: leave them out of ``spec``."""
        hops = self.distances(asker)
        folder = Path(tempfile.mkdtemp(dir=self.root, prefix="central-"))
        with Replica.open(
            folder, self.identities[asker], durability=Durability.PROCESS, verify_processes=0
        ) as central:
            board = MemoryBoard(central)
            for i, replica in enumerate(self.replicas):
                if within is not None and not 0 <= hops[i] <= within:
                    continue
                for document in replica.documents():
                    if document.policy is not Policy.LOCAL and self.boards[i].may_read(
                        document, self.ids[asker]
                    ):
                        central.ingest(list(replica.export(document)))
            refs = [hit.memory.ref for hit in board.query(**spec)]
            board.close()
        shutil.rmtree(folder, ignore_errors=True)
        return refs

    def close(self) -> None:
        for board in self.boards:
            board.close()
        for replica in self.replicas:
            replica.close()
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SimulatedQueries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def recall(found: list[MemoryRef], expected: list[MemoryRef]) -> float:
    """The share of ``expected`` that ``found`` holds (1.0 when nothing was expected)."""
    return len(set(found) & set(expected)) / len(expected) if expected else 1.0


__all__ = ["QueryRun", "SimulatedQueries", "recall"]
