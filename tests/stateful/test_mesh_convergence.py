"""Hypothesis searches for the writes, partitions, faults and restarts that break convergence."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from crdt_mesh import DocumentId, Entry, Policy
from crdt_mesh.identity import Identity
from crdt_mesh.runtime.index import readable_index
from crdt_mesh.sync.messages import Entries, ProtocolError, decode
from crdt_mesh.testing import Op, apply_op, document_json
from crdt_mesh.testing.sim import Faults, SimulatedMesh
from crdt_mesh.testing.strategies import transactions
from tests.helpers import entries_in

OPEN_DOCS = [DocumentId(Policy.OPEN, f"doc-{i}") for i in range(3)]


class MeshMachine(RuleBasedStateMachine):
    """2-6 replicas; after a heal and enough quiet rounds, all agree and nothing is lost."""

    sim: SimulatedMesh

    @initialize(size=st.integers(2, 4), seed=st.integers(0, 2**32 - 1))
    def start(self, size: int, seed: int) -> None:
        self.leaked: list[Entry] = []  # local entries seen on the wire (never, we hope)
        self.sim = SimulatedMesh(size, seed=seed, fanout=2, tap=self._watch)
        # (document, author) -> the last seq committed: every replica must end up with it
        self.committed: dict[tuple[DocumentId, Any], int] = {}
        self.local_writes: dict[int, int] = {}

    def _watch(self, frame: bytes) -> None:
        """Every frame any replica sends: none may carry an entry of a local document."""
        try:
            message = decode(frame)
        except ProtocolError:
            return
        if isinstance(message, Entries):
            for entry in entries_in(message.items):
                if entry.document.policy is Policy.LOCAL:
                    self.leaked.append(entry)

    def teardown(self) -> None:
        self.sim.close()

    def _pick(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(self.sim.live()))

    @rule(data=st.data(), doc=st.sampled_from(OPEN_DOCS), ops=transactions())
    def write(self, data: st.DataObject, doc: DocumentId, ops: list[Op]) -> None:
        """A transaction of map, array and text operations on one replica."""
        replica = self.sim.replica(self._pick(data))
        document = replica.document(doc)
        with document.transaction():
            for op in ops:
                apply_op(document, op)
        head = replica.heads().get((doc, replica.peer_id))
        if head is not None:
            self.committed[(doc, replica.peer_id)] = head.seq

    @rule(data=st.data(), value=st.integers(-(2**53), 2**53))
    def write_local(self, data: st.DataObject, value: int) -> None:
        index = self._pick(data)
        self.sim.write(index, DocumentId(Policy.LOCAL, "diary"), {"v": value})
        self.local_writes[index] = self.local_writes.get(index, 0) + 1

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        live = self.sim.live()
        side = data.draw(st.lists(st.sampled_from(live), unique=True, max_size=len(live)))
        self.sim.partition(side, [i for i in live if i not in side])

    @rule()
    def heal(self) -> None:
        self.sim.heal()

    @rule(loss=st.sampled_from([0.0, 0.1, 0.3]), dup=st.sampled_from([0.0, 0.1, 0.3]))
    def faults(self, loss: float, dup: float) -> None:
        self.sim.faults = Faults(loss=loss, duplication=dup, reorder=0.1 if loss else 0.0)

    @rule(rounds=st.integers(1, 3))
    def run(self, rounds: int) -> None:
        for _ in range(rounds):
            self.sim.step()

    @precondition(lambda self: len(self.sim.live()) > 1)
    @rule(data=st.data())
    def crash_and_restart(self, data: st.DataObject) -> None:
        index = self._pick(data)
        before = self.sim.replica(index).heads(include_local=True)
        self.sim.crash(index)
        self.sim.restart(index)
        assert self.sim.replica(index).heads(include_local=True) == before  # nothing committed lost

    @precondition(lambda self: len(self.sim.nodes) < 6)
    @rule()
    def join_empty(self) -> None:
        self.sim.add_replica()

    @invariant()
    def local_documents_stay_home(self) -> None:
        """Checked on the sending side: no frame carried a local entry, and nothing a
        replica offers any peer names a local feed (the receiving side refuses
        them too, but must never be the only guard)."""
        assert not self.leaked, f"local entries left their replica: {self.leaked[:3]}"
        stranger = Identity.from_seed(b"s" * 32).peer_id
        for index in self.sim.live():
            replica = self.sim.replica(index)
            for item in replica.missing_from({}):
                assert not (isinstance(item, Entry) and item.document.policy is Policy.LOCAL)
            local_keys = {d.key for d in replica.documents() if d.policy is Policy.LOCAL}
            assert not any(
                i.key[:16] in local_keys for i in readable_index(replica).for_peer(stranger)
            )
            local = [d for d in replica.documents() if d.policy is Policy.LOCAL]
            assert bool(local) == (index in self.local_writes)

    def check_convergence(self) -> None:
        self.sim.heal()
        self.sim.faults = Faults()
        self.sim.run_until_converged(max_rounds=30)
        live = self.sim.live()
        for index in live:  # nothing committed anywhere is lost, everywhere
            heads = self.sim.replica(index).heads()
            for feed, seq in self.committed.items():
                head = heads.get(feed)
                frozen = head is not None and head.frozen
                assert frozen or (head is not None and head.seq >= seq), (index, feed, seq)
        reference = self.sim.replica(live[0])
        for index in live[1:]:
            replica = self.sim.replica(index)
            for doc in OPEN_DOCS:
                mine, theirs = reference.document(doc), replica.document(doc)
                assert mine.state() == theirs.state()
                assert document_json(mine) == document_json(theirs)

    def teardown_check(self) -> None:
        self.check_convergence()


class ConvergingMachine(MeshMachine):
    def teardown(self) -> None:
        try:
            self.check_convergence()
        finally:
            self.sim.close()


ConvergingMachine.TestCase.settings = settings(
    max_examples=int(__import__("os").environ.get("STATEFUL_EXAMPLES", "60")),
    stateful_step_count=25,
    deadline=None,
)
test_mesh_converges = ConvergingMachine.TestCase
