"""Every entry handed to ingest is accounted for, whoever checked its signature.

A large batch is checked in chunks, some by helper processes and some by the
ingesting thread; a chunk that no answer came back for would vanish from the
report (neither applied, pending, a duplicate nor rejected) and its entries
would never be committed. A tried speed-up did just that, and looked 1.5x faster.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crdt_mesh import Durability, Identity, Replica
from crdt_mesh.replica.verifier import shared_pool
from tests.helpers import feed, forged_by

AUTHORS = [Identity.from_seed(bytes([n]) * 32) for n in (1, 2, 3)]
MALLORY = Identity.from_seed(b"m" * 32)
FEEDS = [feed(author, 400) for author in AUTHORS]


@settings(deadline=None)  # the example count: the profile's (tests/conftest.py)
@given(
    lengths=st.lists(st.integers(0, 400), min_size=3, max_size=3),
    copies=st.integers(0, 200),
    forgeries=st.integers(0, 20),
    seed=st.integers(0, 2**32 - 1),
)
@example(lengths=[400, 400, 400], copies=100, forgeries=10, seed=1)  # always a large batch
def test_each_entry_ingested_is_applied_pending_a_duplicate_or_rejected(
    tmp_path_factory: pytest.TempPathFactory,
    lengths: list[int],
    copies: int,
    forgeries: int,
    seed: int,
) -> None:
    """A fresh replica gets a shuffled batch of feed prefixes, copies of some of their
    entries, and forgeries: the report's counts add up to what was handed in."""
    shuffle = random.Random(seed)
    batch: list[bytes] = [e.encoded for f, n in zip(FEEDS, lengths, strict=True) for e in f[:n]]
    originals = list(batch)
    if originals:
        batch += [shuffle.choice(originals) for _ in range(copies)]
    batch += [
        forged_by(MALLORY, shuffle.choice(FEEDS)[shuffle.randrange(400)]) for _ in range(forgeries)
    ]
    shuffle.shuffle(batch)
    assert shared_pool().start(timeout=60)  # helpers ready: a large batch goes to them
    path = tmp_path_factory.mktemp("accounting")
    with Replica.open(path, Identity.generate(), durability=Durability.PROCESS) as replica:
        report = replica.ingest(batch)
        accounted = len(report.applied) + report.pending + report.duplicates
        assert accounted + len(report.rejected) + report.ignored == len(batch)
        assert len(report.applied) + report.pending == len(set(originals))
