"""Stores, updates, forgets, membership changes and partitions across replicas: after they sync,
every replica sees exactly the memories it may, and forgotten content is in no store.

Four real replicas on the simulated network; replica 0 administers the channel.
The model says who may see what: private memories their author; public ones
everyone; team memories the current members, while their author is one;
encrypted ones whoever was a member when they were written (the key of that
epoch), while their author is a member.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdt_mesh.services.memory import MemoryBoard, MemoryRef
from crdt_mesh.testing import SimulatedMesh

N = 4
LEVELS = ["private", "public", "team", "encrypted"]


class MemoryScopes(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="crdt_mesh-memory-stateful-"))
        self.sim = SimulatedMesh(N, seed=3, root=self.root)
        self.boards = [MemoryBoard(self.sim.replica(i)) for i in range(N)]
        self.ids = [b.me for b in self.boards]
        self.boards[0].create_channel("alpha", members=[self.ids[1]])
        self.members = {0, 1}
        #: ref -> (author, level, members when written, content)
        self.alive: dict[MemoryRef, tuple[int, str, frozenset[int], str]] = {}
        self.forgotten: list[str] = []
        self.counter = 0
        self.synced = False
        self._sync()

    def _sync(self) -> None:
        self.sim.heal()
        for _ in range(10):
            self.sim.step()
        for board in self.boards:
            board.settle()
        self.synced = True

    @rule(author=st.integers(0, N - 1), level=st.sampled_from(LEVELS))
    def store(self, author: int, level: str) -> None:
        if level in ("team", "encrypted") and (author not in self.members or not self.synced):
            return  # a member writes for the group once it knows the group (and its key)
        self.counter += 1
        content = f"memory-{self.counter}-{level}-by-{author}"
        channel = "alpha" if level in ("team", "encrypted") else None
        memory = self.boards[author].store(content, level, channel=channel, tags=["t"])
        self.alive[memory.ref] = (author, level, frozenset(self.members), content)
        self.synced = False

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def forget(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(sorted(self.alive, key=str)))
        author, _, _, content = self.alive.pop(ref)
        self.boards[author].forget(ref)
        self.forgotten.append(content)
        self.synced = False

    @precondition(lambda self: self.alive)
    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        ref = data.draw(st.sampled_from(sorted(self.alive, key=str)))
        author, level, written_for, content = self.alive[ref]
        if level in ("team", "encrypted") and author not in self.members:
            return  # a removed member's group memories left every view, its own too
        if level == "encrypted":
            if not self.synced or author not in self.members:
                return  # re-sealed with the newest key its writer holds: once it knows it
            written_for = frozenset(self.members)  # who holds that key
        self.boards[author].update(ref, tags=["t", "updated"])
        self.alive[ref] = (author, level, written_for, content)
        self.synced = False

    @rule(peer=st.integers(1, N - 1))
    def add(self, peer: int) -> None:
        if peer not in self.members:
            self.boards[0].add_member("channel", "alpha", self.ids[peer])
            self.members.add(peer)
            self.synced = False

    @rule(peer=st.integers(1, N - 1))
    def remove(self, peer: int) -> None:
        if peer in self.members:
            self.boards[0].remove_member("channel", "alpha", self.ids[peer])
            self.members.discard(peer)
            self.synced = False

    @rule()
    def sync(self) -> None:
        self._sync()

    @rule(cut=st.integers(1, N - 1))
    def partition(self, cut: int) -> None:
        """Split the replicas in two; they go on writing and forgetting apart."""
        self.sim.partition(list(range(cut)), list(range(cut, N)))
        for _ in range(3):
            self.sim.step()
        self.synced = False

    def _may_see(self, reader: int, entry: tuple[int, str, frozenset[int], str]) -> bool:
        author, level, written_for, _ = entry
        if level == "private":
            return reader == author
        if level == "public":
            return True
        if author not in self.members:
            return False
        if level == "team":
            return reader in self.members
        return reader in written_for or reader == author  # encrypted: held the key

    @invariant()
    def every_replica_sees_exactly_what_it_may(self) -> None:
        if not self.synced:
            return
        for reader, board in enumerate(self.boards):
            shown = {m.ref for m in board.memories()}
            expected = {ref for ref, e in self.alive.items() if self._may_see(reader, e)}
            assert shown == expected, (reader, shown ^ expected)

    @invariant()
    def forgotten_content_is_in_no_store(self) -> None:
        if not self.synced or not self.forgotten:
            return
        for i in range(N):
            self.sim.replica(i).store.sync()
            data = b"".join(
                p.read_bytes() for p in (self.root / f"replica-{i}").rglob("*") if p.is_file()
            )
            for content in self.forgotten:
                assert content.encode() not in data, (i, content)

    def teardown(self) -> None:
        for board in self.boards:
            board.close()
        self.sim.close()


MemoryScopes.TestCase.settings = settings(
    max_examples=settings.default.max_examples // 2 or 5,
    stateful_step_count=15,
    deadline=None,
)
test_memory_scopes = MemoryScopes.TestCase
