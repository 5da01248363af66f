"""Stores, updates, forgets, membership changes and partitions across replicas: after they sync,
every replica sees exactly the memories it may, and forgotten content is in no store.

Four real replicas on the simulated network; replica 0 administers the channel.
The model says who may see what: private memories their author; public ones
their author and the replicas following one of their tags (and may: those that
followed one since it was written); team memories the current members, while
their author is one; encrypted ones the current members that were members when
they were written (the key of that epoch), while their author is a member (and
may: a member removed since, which held the key).
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
TAGS = ["t", "u"]


class MemoryScopes(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="crdt_mesh-memory-stateful-"))
        self.sim = SimulatedMesh(N, seed=3, root=self.root)
        self.boards = [MemoryBoard(self.sim.replica(i)) for i in range(N)]
        self.ids = [b.me for b in self.boards]
        self.boards[0].create_channel("alpha", members=[self.ids[1]])
        self.members = {0, 1}
        self.follows: list[set[str]] = [set() for _ in range(N)]
        #: public memory -> every tag of any version; replicas that followed one since
        self.tags_ever: dict[MemoryRef, set[str]] = {}
        self.followed_since: dict[MemoryRef, set[int]] = {}
        #: ref -> (author, level, members when written, content)
        self.alive: dict[MemoryRef, tuple[int, str, frozenset[int], str]] = {}
        self.forgotten: list[str] = []
        self.counter = 0
        self.synced = False
        self._sync()

    def _step(self) -> None:
        for board in self.boards:  # what the service's announcements do over links
            for other in self.boards:
                if other is not board:
                    board.interests.learn(other.me, other.announcement())
        self.sim.step()

    def _sync(self) -> None:
        self.sim.heal()
        for _ in range(10):
            self._step()
        for board in self.boards:
            board.settle()
        self.synced = True

    def _followers(self, tags: set[str]) -> set[int]:
        return {r for r in range(N) if self.follows[r] & tags}

    @rule(reader=st.integers(0, N - 1), tag=st.sampled_from(TAGS))
    def follow(self, reader: int, tag: str) -> None:
        self.boards[reader].follow(tags=[tag])
        self.follows[reader].add(tag)
        for ref, tags in self.tags_ever.items():
            if tag in tags:
                self.followed_since[ref].add(reader)
        self.synced = False

    @precondition(lambda self: self.synced)  # (what is held when it stops is then known)
    @rule(reader=st.integers(0, N - 1), tag=st.sampled_from(TAGS))
    def unfollow(self, reader: int, tag: str) -> None:
        self.boards[reader].unfollow(tags=[tag])
        self.follows[reader].discard(tag)
        self.synced = False

    @rule(author=st.integers(0, N - 1), level=st.sampled_from(LEVELS), tag=st.sampled_from(TAGS))
    def store(self, author: int, level: str, tag: str) -> None:
        if level in ("team", "encrypted") and (author not in self.members or not self.synced):
            return  # a member writes for the group once it knows the group (and its key)
        self.counter += 1
        content = f"memory-{self.counter}-{level}-by-{author}"
        channel = "alpha" if level in ("team", "encrypted") else None
        memory = self.boards[author].store(content, level, channel=channel, tags=[tag])
        self.alive[memory.ref] = (author, level, frozenset(self.members), content)
        if level == "public":
            self.tags_ever[memory.ref] = {tag}
            self.followed_since[memory.ref] = self._followers({tag})
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
        if level == "public":
            self.tags_ever[ref] |= {"t", "updated"}
            self.followed_since[ref] |= self._followers({"t"})
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
            self._step()
        self.synced = False

    def _sees(self, reader: int, ref: MemoryRef) -> tuple[bool, bool]:
        """(must see, may see) ``ref`` once synced."""
        author, level, written_for, _ = self.alive[ref]
        if level == "private":
            return reader == author, reader == author
        if level == "public":
            must = reader == author or reader in self._followers(self.tags_ever[ref])
            return must, must or reader in self.followed_since[ref]
        if author not in self.members:
            return False, False
        if level == "team":
            return reader in self.members, reader in self.members
        held_key = reader in written_for or reader == author  # encrypted: the epoch's key
        return held_key and reader in self.members, held_key

    @invariant()
    def every_replica_sees_exactly_what_it_may(self) -> None:
        if not self.synced:
            return
        for reader, board in enumerate(self.boards):
            shown = {m.ref for m in board.memories()}
            must = {ref for ref in self.alive if self._sees(reader, ref)[0]}
            may = {ref for ref in self.alive if self._sees(reader, ref)[1]}
            assert must <= shown <= may, (reader, must - shown, shown - may)

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
