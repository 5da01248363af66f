"""The penalty table: decay, refusal, growing back-off, forgiveness, a bounded table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt_mesh.runtime.penalty import WEIGHTS, Offence, Penalties, PenaltySettings


def test_two_breaches_in_quick_succession_refuse_the_peer_once() -> None:
    box = Penalties()
    assert box.add("mallory", Offence.PROTOCOL_BREACH, 0.0) is None
    refusal = box.add("mallory", Offence.PROTOCOL_BREACH, 1.0)
    assert refusal is not None and refusal.episode == 1 and refusal.until == 31.0
    assert box.refused("mallory", 30.9) and not box.refused("mallory", 31.0)
    # offences while refused start no new episode: logged once, not once per frame
    assert all(box.add("mallory", Offence.JUNK, 2.0 + i) is None for i in range(20))
    assert box.episodes == 1
    assert not box.refused("alice", 5.0)


def test_scores_halve_every_half_life() -> None:
    box = Penalties(PenaltySettings(half_life=10.0))
    box.add("p", Offence.INVALID_ENTRY, 0.0)
    assert box.score("p", 10.0) == pytest.approx(WEIGHTS[Offence.INVALID_ENTRY] / 2)
    assert box.score("p", 20.0) == pytest.approx(WEIGHTS[Offence.INVALID_ENTRY] / 4)
    assert box.score("nobody", 20.0) == 0.0


def test_repeat_offenders_are_refused_for_longer_until_forgiven() -> None:
    settings = PenaltySettings(ban=10.0, max_ban=35.0, forgive_after=100.0)
    box = Penalties(settings)
    bans = []
    now = 0.0
    for _ in range(4):
        refusal = None
        while refusal is None:
            refusal = box.add("m", Offence.PROTOCOL_BREACH, now)
        bans.append(refusal.until - now)
        now = refusal.until
    assert bans == [10.0, 20.0, 35.0, 35.0]  # doubling, capped
    now += 200.0  # good conduct for longer than forgive_after
    refusal = None
    while refusal is None:
        refusal = box.add("m", Offence.PROTOCOL_BREACH, now)
    assert refusal.episode == 1 and refusal.until - now == 10.0


@given(st.lists(st.floats(0.0, 5.0), min_size=1, max_size=200))
def test_what_a_lossy_network_costs_an_honest_peer_never_refuses_it(gaps: list[float]) -> None:
    """Stale broadcasts (late or skewed clocks) at up to one every 0.3 s never add up."""
    box = Penalties()
    now = 0.0
    for gap in gaps:
        now += max(gap, 0.3)
        assert box.add("honest", Offence.STALE, now) is None
    assert not box.refused("honest", now)


def test_the_table_stays_bounded_under_a_flood_of_fresh_keys() -> None:
    box = Penalties(PenaltySettings(max_tracked=100))
    box.add("mallory", Offence.PROTOCOL_BREACH, 0.0)
    box.add("mallory", Offence.PROTOCOL_BREACH, 0.0)
    for i in range(1000):
        box.add(f"sybil-{i}", Offence.STALE, 1.0)
        assert len(box) <= 100
    assert box.refused("mallory", 2.0)  # the refused are never the ones forgotten


def test_every_offence_has_a_weight_and_settings_check_themselves() -> None:
    assert set(WEIGHTS) == set(Offence)
    with pytest.raises(ValueError, match="no weight"):
        PenaltySettings(weights={Offence.JUNK: 1.0})
    with pytest.raises(ValueError):
        PenaltySettings(ban=0.0)
