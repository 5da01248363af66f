"""Concurrent membership changes by a channel's admins, on replicas cut off from each
other, end in one membership and one key on every replica once they sync.

Five real replicas on the simulated network: 0 created channel ``alpha`` and made
1 and 2 admins; 3 and 4 are the peers the admins add and remove. Each admin works
in a partition of its own (every change is concurrent with the others'), with
partial syncs drawn in between; then the network heals, and each admin rotates
the key of what it finds sealed to other members than the channel has
(``reconcile``) until none does. Then every replica agrees on the members and on
the current epoch, every member opens that epoch's key, and no one else does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from crdt_mesh.services.memory import MemoryBoard
from crdt_mesh.testing import SimulatedMesh

N = 5
ADMINS = (0, 1, 2)
SUBJECTS = (3, 4)

change = st.tuples(
    st.just("change"), st.sampled_from(ADMINS), st.booleans(), st.sampled_from(SUBJECTS)
)
partial_sync = st.tuples(st.just("sync"), st.sampled_from(ADMINS), st.sampled_from(ADMINS))


def _step(sim: SimulatedMesh, boards: list[MemoryBoard]) -> None:
    for board in boards:  # what the service's announcements do over links
        for other in boards:
            if other is not board:
                board.interests.learn(other.me, other.announcement())
    sim.step()


def _sync(sim: SimulatedMesh, boards: list[MemoryBoard], rounds: int = 8) -> None:
    sim.heal()
    for _ in range(rounds):
        _step(sim, boards)


@settings(deadline=None)
@example(steps=[("change", 0, False, 3), ("change", 2, True, 4)])  # neither key fits both
@given(steps=st.lists(st.one_of(change, change, partial_sync), min_size=1, max_size=10))
def test_concurrent_admins_converge_to_one_membership_and_one_key(
    steps: list[tuple[object, ...]],
) -> None:
    with SimulatedMesh(N, seed=11, root=Path(tempfile.mkdtemp())) as sim:
        boards = [MemoryBoard(sim.replica(i)) for i in range(N)]
        ids = [b.me for b in boards]
        creator = boards[0]
        creator.create_channel("alpha", members=[ids[3]])
        creator.set_admin("channel", "alpha", ids[1])
        creator.set_admin("channel", "alpha", ids[2])
        _sync(sim, boards)
        assert all(ids[i] in boards[i].groups.find("channel", "alpha").admins for i in ADMINS)

        ops: dict[int, set[bool]] = {s: set() for s in SUBJECTS}
        for step in steps:
            sim.partition([0, 3, 4], [1], [2])  # each admin alone with its changes
            if step[0] == "change":
                _, admin, joined, subject = step
                assert isinstance(admin, int) and isinstance(subject, int)
                board = boards[admin]
                if joined:
                    board.add_member("channel", "alpha", ids[subject])
                else:
                    board.remove_member("channel", "alpha", ids[subject])
                ops[subject].add(bool(joined))
            else:
                _, a, b = step
                assert isinstance(a, int) and isinstance(b, int)
                sim.partition([a, b], [i for i in range(N) if i not in (a, b)])
                _step(sim, boards)

        for _ in range(6):  # heal; admins rotate what they find sealed to others
            _sync(sim, boards)
            if sum(boards[i].reconcile() for i in ADMINS) == 0:
                break
        else:
            raise AssertionError("the admins went on rotating")

        channels = [b.groups.find("channel", "alpha", ids[0]) for b in boards]
        members = channels[0].members if channels[0] is not None else frozenset()
        for i, channel in enumerate(channels):  # who holds it (members; removed) agrees
            if ids[i] in members or channel is not None:
                assert channel is not None and channel.members == members, i
        for subject, joined in ops.items():  # what all admins agreed on holds
            if joined == {True}:
                assert ids[subject] in members
            if joined == {False}:
                assert ids[subject] not in members
        epochs = {
            boards[i].keys.current_epoch(ids[0], "alpha") for i in range(N) if ids[i] in members
        }
        assert len(epochs) == 1
        (epoch,) = epochs
        for i, board in enumerate(boards):
            opened = board.keys.epoch_key(ids[0], "alpha", epoch)
            assert (opened is not None) == (ids[i] in members), i
        for board in boards:
            board.close()
