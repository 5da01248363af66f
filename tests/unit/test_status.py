"""`crdt-mesh status`: quantiles from histogram buckets, and the screen's rates."""

from __future__ import annotations

import pytest

from crdt_mesh.status import Snapshot, metrics_url, render

LAG = "crdt_mesh_replication_lag_seconds"


def _snapshot(at: float, remote: float, buckets: dict[str, float]) -> Snapshot:
    return Snapshot(
        at,
        {
            "crdt_mesh_entries_committed_total": {
                (("origin", "local"),): 4.0,
                (("origin", "remote"),): remote,
            },
            f"{LAG}_bucket": {(("le", le),): n for le, n in buckets.items()},
            f"{LAG}_count": {(): buckets["+Inf"]},
            "crdt_mesh_links": {(("state", "active"),): 3.0, (("state", "transient"),): 0.0},
        },
    )


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.2, 0.05), (0.5, 0.55), (0.6, 1.0), (0.99, 1.0)],  # above the last bound: the bound
)
def test_a_quantile_is_interpolated_within_its_bucket(q: float, expected: float) -> None:
    snapshot = _snapshot(0, 0, {"0.1": 2, "1.0": 3, "+Inf": 5})
    assert snapshot.quantile(LAG, q) == pytest.approx(expected)


def test_a_histogram_without_observations_has_no_quantile() -> None:
    assert _snapshot(0, 0, {"0.1": 0, "+Inf": 0}).quantile(LAG, 0.5) is None
    assert Snapshot(0, {}).quantile(LAG, 0.5) is None


def test_the_screen_shows_totals_and_rates_between_two_scrapes() -> None:
    before = _snapshot(10.0, 10, {"0.1": 1, "+Inf": 1})
    now = _snapshot(12.0, 30, {"0.1": 2, "+Inf": 3})
    screen = render("http://x/metrics", now, before)
    assert "3 active" in screen
    assert "30 remote  (10.0/s)" in screen and "4 local  (0.0/s)" in screen
    assert "over 3 entries" in screen
    assert "(" not in render("http://x/metrics", now).split("committed")[1].split("\n")[0]


def test_an_address_is_host_and_port_or_a_url() -> None:
    assert metrics_url("127.0.0.1:9100") == "http://127.0.0.1:9100/metrics"
    assert metrics_url("http://h:1/metrics") == "http://h:1/metrics"
