"""The pending area: bounded in bytes, fair between sources, never refusing the honest.

The attack behind these (issue 10, hole 3): entries signed by the attacker's own
key, each missing its first entry, filled a pending area bounded only by count and
shared by everyone; 120 of them pinned 72 MB and honest out-of-order entries were
then refused.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crdt_mesh import DocumentId, Identity, PendingLimits, PendingOverflow, Policy
from crdt_mesh.replica.pending import PendingArea, charge
from tests.conftest import ReplicaFactory
from tests.helpers import feed

ALICE, MALLORY = Identity.generate(), Identity.generate()
ALICE_FEED = feed(ALICE, 40)


def gapped(identity: Identity, feeds: int, length: int, size: int = 0) -> list:
    """Entries 2..length of ``feeds`` documents: each waits forever for its seq 1."""
    out = []
    for d in range(feeds):
        document = DocumentId(Policy.OPEN, f"junk-{d}")
        out.extend(feed(identity, length, document)[1:])
    return out


def test_a_flood_of_gapped_entries_is_held_to_its_quota(make_replica: ReplicaFactory) -> None:
    limits = PendingLimits(total=400_000, per_source=100_000)
    bob = make_replica(pending=limits)
    flood = gapped(MALLORY, 20, 30)
    report = bob.ingest(flood, source=MALLORY.peer_id)
    assert not report.applied
    assert bob.pending_bytes <= limits.per_source
    # alice's entries arrive out of order; mallory's hold changes nothing for them
    report = bob.ingest(ALICE_FEED[5:], source=ALICE.peer_id)
    assert not report.rejected and report.pending > 0
    report = bob.ingest(ALICE_FEED[:5], source=ALICE.peer_id)
    assert len(report.applied) == 40


def test_many_sources_fill_the_area_and_the_largest_makes_room(
    make_replica: ReplicaFactory,
) -> None:
    limits = PendingLimits(total=300_000, per_source=100_000)
    bob = make_replica(pending=limits)
    sybils = [Identity.generate() for _ in range(6)]
    for sybil in sybils:
        bob.ingest(gapped(sybil, 4, 40), source=sybil.peer_id)
    assert bob.pending_bytes <= limits.total
    report = bob.ingest(ALICE_FEED[1:], source=ALICE.peer_id)
    assert not any(isinstance(r.error, PendingOverflow) for r in report.rejected)
    assert len(bob.ingest(ALICE_FEED[:1], source=ALICE.peer_id).applied) == 40


def test_an_entry_that_fills_the_gap_is_never_refused(make_replica: ReplicaFactory) -> None:
    bob = make_replica(max_pending=5)
    bob.ingest(ALICE_FEED[1:], source=ALICE.peer_id)  # five wait, the rest are refused
    report = bob.ingest(ALICE_FEED[:1], source=ALICE.peer_id)
    assert len(report.applied) == 6 and not report.rejected


def test_a_closed_link_forgets_what_its_peer_left_waiting(make_replica: ReplicaFactory) -> None:
    bob = make_replica()
    bob.ingest(gapped(MALLORY, 3, 10), source=MALLORY.peer_id)
    assert bob.summary().pending == 27
    bob.forget_pending(MALLORY.peer_id)
    assert bob.summary().pending == 0 and bob.pending_bytes == 0


_ENTRIES = gapped(MALLORY, 1, 60)
_SIZE = charge(_ENTRIES[0])


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "honest"]), st.integers(0, len(_ENTRIES) - 1)),
        max_size=150,
    )
)
def test_bounds_hold_and_the_smallest_holder_is_never_refused(
    arrivals: list[tuple[str, int]],
) -> None:
    limits = PendingLimits(total=12 * _SIZE, per_source=5 * _SIZE, max_entries=10)
    area = PendingArea(limits)
    for source, index in arrivals:
        entry = _ENTRIES[index]
        feed = (DocumentId(Policy.OPEN, f"{source}-doc"), MALLORY.peer_id)
        if area.get(feed, entry.seq) is not None:
            continue
        before = {s: area.held_by(s) for s in ("a", "b", "c", "honest")}
        accepted = area.add(feed, entry, source)
        others = max(v for s, v in before.items() if s != source)
        if before[source] + charge(entry) <= min(others, limits.per_source):
            assert accepted, "refused a source while another held more"
        assert area.bytes <= limits.total and area.count <= limits.max_entries
        assert all(area.held_by(s) <= limits.per_source for s in before)
        assert area.bytes == sum(area.held_by(s) for s in before)
