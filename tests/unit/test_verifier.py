"""Large batches are verified by helper processes: same answers, whatever happens to them."""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from crdt_mesh import Identity, InvalidSignature
from crdt_mesh.replica import replica as replica_module
from crdt_mesh.replica import verifier
from crdt_mesh.replica.verifier import VerifierPool, verify_items
from tests.conftest import ReplicaFactory
from tests.helpers import feed, forged_by

ALICE = Identity.from_seed(b"a" * 32)
MALLORY = Identity.from_seed(b"m" * 32)


def test_pool_answers_like_the_inline_check() -> None:
    entries = feed(ALICE, 300)
    items = [e.signed_message() for e in entries]
    items[17] = (b"\x00" * 64 + items[17][0][64:], items[17][1])
    chunks = [items[i : i + 50] for i in range(0, len(items), 50)]
    pool = VerifierPool(2)
    try:
        assert pool.start(timeout=60)
        answers = b"".join(pool.verify(chunks))
        assert answers == verify_items(items)
        assert answers.count(0) == 1 and answers[17] == 0
        assert b"".join(pool.verify(iter(chunks))) == answers  # reusable, lazy input
    finally:
        pool.close()


def test_pool_survives_a_dead_helper() -> None:
    entries = feed(ALICE, 200)
    chunks = [[e.signed_message() for e in entries[i : i + 40]] for i in range(0, 200, 40)]
    pool = VerifierPool(2)
    try:
        assert pool.start(timeout=60)
        list(pool.verify(chunks[:1]))
        for helper in pool._helpers:
            helper.process.kill()
            helper.process.wait()
        assert b"".join(pool.verify(chunks)) == b"\x01" * 200  # fell back in-process
        assert pool.start(timeout=60)  # and started new helpers
        assert b"".join(pool.verify(chunks)) == b"\x01" * 200
    finally:
        pool.close()


def test_abandoned_batch_does_not_confuse_the_next() -> None:
    good = [e.signed_message() for e in feed(ALICE, 100)]
    bad = [(b"\x00" * 64 + m[64:], k) for m, k in good]
    pool = VerifierPool(1)
    assert pool.start(timeout=60)
    answers = pool.verify([bad[i : i + 10] for i in range(0, 100, 10)])
    try:
        assert next(answers) == b"\x00" * 10
        answers.close()  # nine answers never read
        assert b"".join(pool.verify([good[:10]])) == b"\x01" * 10
    finally:
        answers.close()  # a failed assertion above must not leave the batch holding the pool
        pool.close()


def test_large_ingest_rejects_exactly_the_forged_entries(make_replica: ReplicaFactory) -> None:
    entries = feed(ALICE, 700)
    data = [e.encoded for e in entries]
    data[350] = forged_by(MALLORY, entries[350])
    replica = make_replica(verify_processes=2)
    assert replica._verifier().start(timeout=60)
    report = replica.ingest(data)
    assert [type(r.error) for r in report.rejected] == [InvalidSignature]
    assert len(report.applied) == 350 and report.pending == 349  # held behind the gap
    report = replica.ingest([entries[350]])
    assert len(report.applied) == 350
    assert replica.heads()[(entries[0].document, ALICE.peer_id)].seq == 700


def test_closing_the_pool_never_waits_on_a_batch_left_half_read() -> None:
    good = [e.signed_message() for e in feed(ALICE, 40)]
    pool = VerifierPool(1)
    assert pool.start(timeout=60)
    answers = pool.verify([good[i : i + 10] for i in range(0, 40, 10)])
    assert next(answers) == b"\x01" * 10
    pool.close()  # used to wait for ever on the lock the suspended batch holds
    assert b"".join(answers) == b"\x01" * 30  # the rest is checked in-process


def test_a_batch_never_waits_for_helpers_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a helper is starting Python: seconds on a loaded machine, during
    which a node that called ingest from its event loop stood still (40 nodes on
    2 cores: status lines stopped for 10 s). Until a helper is ready, a batch is
    checked in-process."""
    monkeypatch.setattr(verifier, "_COMMAND", [sys.executable, "-c", "import time; time.sleep(60)"])
    good = [e.signed_message() for e in feed(ALICE, 30)]
    pool = VerifierPool(1)
    answers: list[bytes] = []
    worker = threading.Thread(target=lambda: answers.extend(pool.verify([good[:15], good[15:]])))
    try:
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), "the batch waited for a helper that never got ready"
        assert answers == [b"\x01" * 15, b"\x01" * 15]
        assert not pool.start()  # the helper was started, and is not ready
    finally:
        pool.close()
        worker.join(timeout=20)


def test_a_copy_in_a_later_chunk_of_one_commit_group_is_a_duplicate(
    make_replica: ReplicaFactory,
) -> None:
    """Chunks are checked apart and judged in turn into one staged commit: a copy of an
    entry already staged (its feed's head is past it) is known by the ids staged, not
    by the store, which does not hold it yet."""
    entries = feed(ALICE, 600)
    data = [e.encoded for e in entries]
    data.insert(70, entries[0].encoded)  # in the second chunk, after 64 staged entries
    replica = make_replica(verify_processes=2)
    assert replica._verifier().start(timeout=60)
    report = replica.ingest(data)
    assert report.rejected == [] and len(report.applied) == 600
    assert report.duplicates == 1 and report.ignored == 0


def _bad_every_seventh(count: int) -> list[tuple[bytes, bytes]]:
    items = [e.signed_message() for e in feed(ALICE, count)]
    return [(b"\x00" * 64 + m[64:], k) if i % 7 == 3 else (m, k) for i, (m, k) in enumerate(items)]


def _answers_of_one_helper(chunks: list[list[tuple[bytes, bytes]]]) -> bytes:
    pool = VerifierPool(1)
    try:
        assert pool.start(timeout=60)
        return b"".join(pool.verify(chunks))
    finally:
        pool.close()


def test_while_an_answer_is_not_back_the_caller_checks_the_next_chunks_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On 2 cores one helper and the caller beat two helpers that the caller only feeds:
    the caller checks a chunk whenever the oldest answer is not back, and the answers
    still come in request order."""
    if not verifier._CAN_POLL:
        pytest.skip("this platform cannot poll a pipe: the caller only feeds the helpers")
    items = _bad_every_seventh(400)
    chunks = [items[i : i + 20] for i in range(0, 400, 20)]
    checked_here: list[int] = []
    inline = verifier.verify_items
    monkeypatch.setattr(
        verifier, "verify_items", lambda c: checked_here.append(len(c)) or inline(c)
    )
    monkeypatch.setattr(verifier._Helper, "answer_ready", lambda self: False)
    assert _answers_of_one_helper(chunks) == inline(items)
    assert 0 < len(checked_here) < len(chunks)  # some here, the rest by the helper


def test_a_helper_dying_after_the_caller_checked_chunks_loses_no_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not verifier._CAN_POLL:
        pytest.skip("this platform cannot poll a pipe: the caller only feeds the helpers")
    items = _bad_every_seventh(300)
    chunks = [items[i : i + 20] for i in range(0, 300, 20)]
    polls: list[int] = []

    def not_back_and_dying(helper: verifier._Helper) -> bool:
        polls.append(1)
        if len(polls) == 3:  # two chunks checked here meanwhile; then the helper dies
            helper.process.kill()
            helper.process.wait()
        return False

    monkeypatch.setattr(verifier._Helper, "answer_ready", not_back_and_dying)
    assert _answers_of_one_helper(chunks) == verify_items(items)


def test_the_shared_pool_leaves_a_core_to_the_caller() -> None:
    expected = {1: 0, 2: 1, 8: 7} if verifier._CAN_POLL else {1: 1, 2: 2, 8: 8}
    assert {cores: verifier._helpers_for(cores) for cores in expected} == expected


def test_pauses_come_once_every_chunk_is_sent_and_the_oldest_answer_is_not_back() -> None:
    """A pause is the caller's cue to do its own work (an ingest commits what it
    admitted) while the helpers check the last chunks: it comes only when no chunk
    is left to send, and the answers are those of ``verify``."""
    if not verifier._CAN_POLL:
        pytest.skip("this platform cannot poll a pipe: no pause can be known to be one")
    items = _bad_every_seventh(400)
    pulled: list[int] = []

    def chunks() -> Iterator[list[tuple[bytes, bytes]]]:
        for start in range(0, 400, 100):
            pulled.append(start)
            yield items[start : start + 100]

    pool = VerifierPool(1)
    try:
        assert pool.start(timeout=60)
        seen: list[tuple[bytes | None, int]] = []
        for answer in pool.verify_or_pause(chunks()):
            seen.append((answer, len(pulled)))
        answers = [answer for answer, _ in seen if answer is not None]
        assert b"".join(answers) == verify_items(items) and len(answers) == 4
        pauses = [count for answer, count in seen if answer is None]
        assert pauses, "the last chunks took a helper milliseconds, and no pause came"
        assert all(count == 4 for count in pauses)  # all chunks pulled: none left to send
        kinds = [answer is None for answer, _ in seen]
        assert not any(a and b for a, b in itertools.pairwise(kinds)), "one pause per wait"
    finally:
        pool.close()


class _ScriptedPool:
    """A pool that answers every signature good, pausing before each answer once every
    chunk is pulled, as helpers still at work on the last chunks do; it records what
    the replica had done at each step."""

    started = True

    def __init__(self, on_first_chunk: Callable[[int], None], on_pause: Callable[[], None]):
        self.on_first_chunk, self.on_pause = on_first_chunk, on_pause

    def verify_or_pause(self, chunks: Iterable[list[Any]]) -> Iterator[bytes | None]:
        source = iter(chunks)
        first = next(source)
        self.on_first_chunk(len(first))
        for chunk in [first, *source]:
            yield None
            self.on_pause()
            yield b"\x01" * len(chunk)

    def close(self) -> None:
        pass


def test_a_large_ingest_hands_over_a_small_first_chunk_before_reading_the_rest(
    make_replica: ReplicaFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helpers wait while the ingesting thread prepares their first chunk: it used
    to hash the whole batch (looking for copies of entries committed lately) and
    decode 64 entries first, 3.6 ms of each call of 1,000 entries."""
    entries = feed(ALICE, 600)
    hashed: list[int] = []
    digest = replica_module._digest
    monkeypatch.setattr(replica_module, "_digest", lambda raw: hashed.append(1) or digest(raw))
    first: dict[str, int] = {}

    def on_first_chunk(size: int) -> None:
        first.update(size=size, hashed=len(hashed))

    replica = make_replica(verify_processes=1)
    replica._pool = _ScriptedPool(on_first_chunk, lambda: None)  # type: ignore[assignment]
    report = replica.ingest([e.encoded for e in entries])
    assert len(report.applied) == 600
    assert first == {"size": 16, "hashed": 16}


def test_while_the_helpers_check_the_last_chunks_what_was_admitted_is_committed(
    make_replica: ReplicaFactory,
) -> None:
    """Entries commit in groups of 256; the group left when the last answer came back
    was committed while the helpers stood idle (4 ms of each call of 1,000). Each
    pause now commits what was admitted, so only the last chunk is left to commit."""
    entries = feed(ALICE, 600)
    replica = make_replica(verify_processes=1)
    feed_key = (entries[0].document, ALICE.peer_id)
    committed: list[int] = []

    def on_pause() -> None:
        head = replica.heads().get(feed_key)
        committed.append(head.seq if head else 0)

    replica._pool = _ScriptedPool(lambda size: None, on_pause)  # type: ignore[assignment]
    report = replica.ingest([e.encoded for e in entries])
    assert len(report.applied) == 600
    sizes = [16] + [64] * 9 + [8]
    assert committed == [sum(sizes[:k]) for k in range(len(sizes))]
