"""Large batches are verified by helper processes: same answers, whatever happens to them."""

from __future__ import annotations

import sys
import threading

import cbor2
import pytest

from crdt_mesh import Entry, Identity, InvalidSignature
from crdt_mesh.replica import verifier
from crdt_mesh.replica.verifier import VerifierPool, verify_items
from tests.conftest import ReplicaFactory
from tests.helpers import feed

ALICE = Identity.from_seed(b"a" * 32)
MALLORY = Identity.from_seed(b"m" * 32)


def _forge(entry: Entry) -> bytes:
    """The entry re-signed by Mallory but claiming Alice: a bad signature, valid bytes."""
    forged = Entry.create(
        MALLORY, entry.document, entry.seq, entry.prev, entry.payload, timestamp=7
    )
    items = cbor2.loads(forged.encoded)
    items[2] = ALICE.peer_id.key
    return cbor2.dumps(items, canonical=True)


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
    data[350] = _forge(entries[350])
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
