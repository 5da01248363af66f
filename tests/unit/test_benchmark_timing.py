"""The benchmarks' timing helpers: a figure and its floor take their repeats in turn,
and the fastest repeat of each is the figure."""

from __future__ import annotations

import itertools

import pytest

from benchmarks._common import best_rate, best_rates


@pytest.fixture
def one_second_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock one second later at each reading: a run (read before and after) takes
    one second, so its rate is the count it returns."""
    ticks = itertools.count()
    monkeypatch.setattr("benchmarks._common.time.perf_counter", lambda: float(next(ticks)))


def test_repeats_are_taken_in_turn_and_the_best_of_each_is_kept(one_second_per_run: None) -> None:
    calls: list[str] = []
    counts = {"figure": iter([3, 1000, 7]), "floor": iter([900, 5, 2])}

    def run(name: str) -> int:
        calls.append(name)
        return next(counts[name])

    rates = best_rates({"figure": lambda: run("figure"), "floor": lambda: run("floor")}, 3)

    assert calls == ["figure", "floor"] * 3
    assert rates == {"figure": pytest.approx(1000), "floor": pytest.approx(900)}


def test_best_rate_is_the_best_of_its_repeats(one_second_per_run: None) -> None:
    counts = iter([4, 40, 8])
    assert best_rate(lambda: next(counts), 3) == pytest.approx(40)
