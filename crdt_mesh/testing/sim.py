"""A deterministic simulated mesh: many replicas in one process, a virtual clock.

Every replica is real (its own LMDB store, its own sync sessions); only the
network is simulated. Each round, every live replica opens an anti-entropy
exchange with ``fanout`` peers drawn at random, and frames are delivered
through queues that can lose, duplicate, reorder and partition them. All
randomness comes from one seed, so a failing run replays exactly.

    with SimulatedMesh(10, seed=1) as sim:
        sim.write(0, "notes", {"k": "v"})
        result = sim.run_until_converged()
        print(result.rounds, result.bytes)
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MeshError
from ..identity import Identity, PeerId
from ..ledger import DocumentId, Policy
from ..replica.records import Head
from ..replica.replica import Replica
from ..runtime.peer import PeerSync
from ..store import Durability
from ..sync import ProtocolError
from .faults import NO_FAULTS, Faults

#: Frames a link may carry in one round before the simulator calls it runaway.
_MAX_FRAMES_PER_EXCHANGE = 10_000


@dataclass(frozen=True, slots=True)
class Convergence:
    """How a run converged."""

    rounds: int
    bytes: int
    frames: int


class ConvergenceError(MeshError, AssertionError):
    """Replicas still differ after the allowed rounds; the message says where."""


@dataclass(slots=True)
class _Node:
    index: int
    identity: Identity
    path: Path
    replica: Replica | None
    links: dict[int, PeerSync] = field(default_factory=dict)
    lifetimes: dict[int, int] = field(default_factory=dict)  # frames left (die_after)


class SimulatedMesh:
    """``size`` replicas on a simulated network. See the module doc.

    Args:
        size: number of replicas.
        seed: drives every random choice.
        fanout: peers each replica contacts per round.
        faults: what the network does to frames.
        root: where the stores go (a temporary folder, removed on close, if None).
        contacts: who replica ``i`` may contact, given the live replicas: its view
            of the mesh (default: everyone). ``fanout`` of them are drawn each round.
        tap: called with every frame any replica sends (to check what leaves a
            replica, e.g. that no ``local`` entry ever does).
        wiretap: called with (sender, receiver, frame) for every frame sent: to check
            what reaches whom (a team's memories reach its members only).
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        fanout: int = 3,
        faults: Faults = NO_FAULTS,
        root: str | Path | None = None,
        contacts: Callable[[int, list[int]], Sequence[int]] | None = None,
        tap: Callable[[bytes], None] | None = None,
        wiretap: Callable[[int, int, bytes], None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a mesh has at least one replica")
        self.rng = random.Random(seed)
        self.fanout = fanout
        self.faults = faults
        self.contacts = contacts
        #: called with every frame a replica sends, before the network sees it
        self.tap = tap
        self.wiretap = wiretap
        self._owned_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="crdt_mesh-sim-")) if root is None else Path(root)
        self.nodes: list[_Node] = []
        self.groups: dict[int, int] = {}  # node -> partition group (absent: group 0)
        self.round = 0
        self.bytes = 0
        self.frames = 0
        for _ in range(size):
            self.add_replica()

    # -- membership and faults ------------------------------------------------------------

    def add_replica(self) -> int:
        """Add an empty replica; returns its index."""
        index = len(self.nodes)
        identity = Identity.from_seed(self.rng.randbytes(32))
        path = self.root / f"replica-{index}"
        node = _Node(index, identity, path, self._open(identity, path))
        self.nodes.append(node)
        return index

    def _open(self, identity: Identity, path: Path) -> Replica:
        return Replica.open(
            path, identity, durability=Durability.PROCESS, map_size=4 << 20, verify_processes=0
        )

    def replica(self, index: int) -> Replica:
        replica = self.nodes[index].replica
        if replica is None:
            raise RuntimeError(f"replica {index} is down")
        return replica

    def live(self) -> list[int]:
        return [n.index for n in self.nodes if n.replica is not None]

    def crash(self, index: int) -> None:
        """Stop a replica abruptly: its sessions are gone, its store stays."""
        node = self.nodes[index]
        if node.replica is not None:
            node.replica.close()
            node.replica = None
        node.links.clear()
        for other in self.nodes:
            other.links.pop(index, None)

    def restart(self, index: int) -> None:
        """Reopen a crashed replica from its store."""
        node = self.nodes[index]
        if node.replica is None:
            node.replica = self._open(node.identity, node.path)

    def partition(self, *groups: list[int]) -> None:
        """Split the network: frames between different groups are dropped."""
        self.groups = {member: g for g, group in enumerate(groups, start=1) for member in group}

    def heal(self) -> None:
        self.groups = {}

    def write(self, index: int, document: str | DocumentId, values: dict[str, Any]) -> None:
        """A transaction on one replica setting ``values`` in root map ``map``."""
        doc = self.replica(index).document(document)
        with doc.transaction():
            root = doc.map("map")
            for key, value in values.items():
                root[key] = value

    # -- running --------------------------------------------------------------------------

    def step(self) -> None:
        """One round: each live replica syncs with ``fanout`` random peers."""
        self.round += 1
        live = self.live()
        alive = set(live)
        for index in live:
            if self.contacts is None:
                peers = [p for p in live if p != index]
            else:
                peers = [p for p in self.contacts(index, live) if p != index and p in alive]
            for peer in self.rng.sample(peers, min(self.fanout, len(peers))):
                self._exchange(index, peer)

    def run_until_converged(self, max_rounds: int = 100) -> Convergence:
        """Run rounds until every pair of live replicas agrees on what both may read.

        Raises:
            ConvergenceError: still different after ``max_rounds``, with a report of
                which replicas differ in which feed.
        """
        start_round, start_bytes, start_frames = self.round, self.bytes, self.frames
        for _ in range(max_rounds):
            if self.converged():
                break
            self.step()
        else:
            if not self.converged():
                raise ConvergenceError(self.report())
        return Convergence(
            self.round - start_round, self.bytes - start_bytes, self.frames - start_frames
        )

    def converged(self) -> bool:
        return not self._differences(limit=1)

    def report(self) -> str:
        lines = [f"not converged after round {self.round}:"]
        for a, b, doc, author, mine, theirs in self._differences(limit=20):
            where = f"{doc.text} by {author.short}"
            lines.append(f"  replica {a} vs {b}: {where}: {_show(mine)} vs {_show(theirs)}")
        return "\n".join(lines)

    def _differences(
        self, limit: int
    ) -> list[tuple[int, int, DocumentId, PeerId, Head | None, Head | None]]:
        """Pairs of live replicas that disagree on a feed both may read.

        Feeds of documents everyone may read are compared against one reference
        replica (linear in the mesh); ``members`` documents pair by pair.
        """
        live = self.live()
        views = {i: self.replica(i).heads() for i in live}
        out: list[tuple[int, int, DocumentId, PeerId, Head | None, Head | None]] = []

        def differ(a: int, b: int, feed: tuple[DocumentId, PeerId]) -> bool:
            mine, theirs = views[a].get(feed), views[b].get(feed)
            if mine == theirs:
                return False
            out.append((a, b, feed[0], feed[1], mine, theirs))
            return len(out) >= limit

        if any(self.replica(i).has_read_policies for i in live):  # pair by pair, every feed
            return self._pairwise(live, views, differ, out)
        public = [
            {f: h for f, h in views[i].items() if f[0].policy is not Policy.MEMBERS} for i in live
        ]
        reference = live[0]
        for i, view in zip(live, public, strict=True):
            if i != reference and view != public[0]:
                for feed in view.keys() | public[0].keys():
                    if differ(reference, i, feed):
                        return out
        members = {f for v in views.values() for f in v if f[0].policy is Policy.MEMBERS}
        for feed in members:
            for a in live:
                for b in live:
                    ra, rb = self.replica(a), self.replica(b)
                    if b <= a or not (
                        ra.readable_by(feed[0], rb.peer_id) and rb.readable_by(feed[0], ra.peer_id)
                    ):
                        continue
                    if differ(a, b, feed):
                        return out
        return out

    def _pairwise(
        self,
        live: list[int],
        views: dict[int, dict[tuple[DocumentId, PeerId], Head]],
        differ: Callable[[int, int, tuple[DocumentId, PeerId]], bool],
        out: list[tuple[int, int, DocumentId, PeerId, Head | None, Head | None]],
    ) -> list[tuple[int, int, DocumentId, PeerId, Head | None, Head | None]]:
        """Every pair on every feed each would offer the other (read policies decide)."""
        for a in live:
            for b in live:
                if b <= a:
                    continue
                ra, rb = self.replica(a), self.replica(b)
                for feed in views[a].keys() | views[b].keys():
                    both = ra.readable_by(feed[0], rb.peer_id) and rb.readable_by(
                        feed[0], ra.peer_id
                    )
                    if both and differ(a, b, feed):
                        return out
        return out

    # -- the network ------------------------------------------------------------------------

    def _link(self, a: int, b: int) -> tuple[PeerSync, PeerSync]:
        """The link between ``a`` and ``b``: (dialling side, answering side).

        One link per pair, dialled by whichever contacted the other first; an
        exchange either of them starts runs on it (push-pull needs no direction).
        """
        na, nb = self.nodes[a], self.nodes[b]
        if b not in na.links:
            ra, rb = self.replica(a), self.replica(b)
            na.links[b] = PeerSync(ra, rb.peer_id, initiator=True)
            nb.links[a] = PeerSync(rb, ra.peer_id, initiator=False)
            die_after = self.faults.die_after
            if die_after is not None:
                na.lifetimes[b] = die_after + self.rng.randrange(die_after + 1)
        mine, theirs = na.links[b], nb.links[a]
        return (mine, theirs) if mine.session.initiator else (theirs, mine)

    def exchange(self, a: int, b: int) -> None:
        """One anti-entropy exchange between ``a`` and ``b`` now, outside the rounds: what
        a link dialled for a purpose does (a private bid carried to its announcer)."""
        self._exchange(a, b)

    def _exchange(self, a: int, b: int) -> None:
        """One anti-entropy exchange, run until no frame is left in flight."""
        if self.groups.get(a, 0) != self.groups.get(b, 0):
            return  # partitioned: the dial fails
        left, right = self._link(a, b)
        if not (left.ready and right.ready) and (
            left.session.bytes_sent or right.session.bytes_sent
        ):
            # A hello was lost: the link can never start. Close it and dial again.
            self.nodes[a].links.pop(b, None)
            self.nodes[b].links.pop(a, None)
            left, right = self._link(a, b)
        if left.session.round_active:
            left.session.abandon_round()  # timed out: a frame of it was lost
        started = left.ready and left.start_round()
        # who holds which end (the initiator's end may be either's)
        lo, ro = (a, b) if self.nodes[a].links.get(b) is left else (b, a)
        queue: list[tuple[PeerSync, bytes]] = []
        moved = 0
        while True:
            if not started and left.ready:  # a new link: hellos first, then the round
                started = left.start_round()
            queue.extend((right, f) for f in self._deliver(left.frames(), lo, ro))
            queue.extend((left, f) for f in self._deliver(right.frames(), ro, lo))
            if not queue:
                return
            if self.faults.reorder and len(queue) > 1 and self.rng.random() < self.faults.reorder:
                i, j = self.rng.sample(range(len(queue)), 2)
                queue[i], queue[j] = queue[j], queue[i]
            target, frame = queue.pop(0)
            moved += 1
            dialler = self.nodes[a] if b in self.nodes[a].lifetimes else self.nodes[b]
            other = b if dialler is self.nodes[a] else a
            if other in dialler.lifetimes:
                dialler.lifetimes[other] -= 1
                if dialler.lifetimes[other] <= 0:  # the link dies mid-exchange
                    self.nodes[a].links.pop(b, None)
                    self.nodes[b].links.pop(a, None)
                    dialler.lifetimes.pop(other, None)
                    return
            if moved > _MAX_FRAMES_PER_EXCHANGE:
                raise ConvergenceError(f"exchange {a}->{b} did not quiesce")
            try:
                target.receive(frame)
            except ProtocolError:
                # A duplicated or reordered control frame confuses the lockstep: the
                # link is closed and opened again next time, as a real shell would.
                self.nodes[a].links.pop(b, None)
                self.nodes[b].links.pop(a, None)
                return

    def _deliver(self, frames: list[bytes], sender: int, receiver: int) -> Iterator[bytes]:
        for frame in frames:
            if self.tap is not None:
                self.tap(frame)
            if self.wiretap is not None:
                self.wiretap(sender, receiver, frame)
            self.bytes += len(frame)
            self.frames += 1
            if self.faults.loss and self.rng.random() < self.faults.loss:
                continue
            yield frame
            if self.faults.duplication and self.rng.random() < self.faults.duplication:
                self.bytes += len(frame)
                self.frames += 1
                yield frame

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        for node in self.nodes:
            if node.replica is not None:
                node.replica.close()
                node.replica = None
        if self._owned_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SimulatedMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _show(head: Head | None) -> str:
    return "nothing" if head is None else f"seq {head.seq}{' (frozen)' if head.frozen else ''}"


__all__ = ["Convergence", "ConvergenceError", "Faults", "SimulatedMesh"]
