"""The metrics core: counters, gauges, histograms, observed values, and bad use."""

from __future__ import annotations

import math

import pytest

from crdt_mesh.metrics import Kind, MetricError, Metrics


def test_counters_and_gauges_keep_one_value_per_label_set() -> None:
    metrics = Metrics()
    committed = metrics.counter("crdt_mesh_things_total", "things", ("origin",))
    committed.inc("local")
    committed.inc("local", by=2)
    committed.inc("remote")
    level = metrics.gauge("crdt_mesh_level", "a level")
    level.set(5)
    level.set(3)
    family = metrics.family("crdt_mesh_things_total")
    assert family.kind is Kind.COUNTER
    assert family.value(origin="local") == 3 and family.value(origin="remote") == 1
    assert family.value(origin="elsewhere") == 0
    assert metrics.family("crdt_mesh_level").value() == 3


def test_a_histogram_counts_each_observation_in_its_bucket_cumulatively() -> None:
    metrics = Metrics()
    lag = metrics.histogram("crdt_mesh_lag_seconds", "lag", (0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0, 30.0):
        lag.observe(value)
    (sample,) = metrics.family("crdt_mesh_lag_seconds").samples
    # 0.1 falls in its own bucket: a bucket counts what is at or below its bound
    assert sample.buckets == ((0.1, 2), (1.0, 3), (math.inf, 5))
    assert sample.count == 5 and sample.value == pytest.approx(32.65)


def test_an_observed_metric_is_read_when_collected_not_before() -> None:
    metrics = Metrics()
    reads = []

    def read() -> list[tuple[tuple[str], float]]:
        reads.append(1)
        return [(("a",), 1.0), (("b",), 2.0)]

    metrics.observe("crdt_mesh_seen", "seen", Kind.GAUGE, read, ("which",))
    assert reads == []
    families = {f.name: f for f in metrics.collect()}
    assert reads == [1]
    assert families["crdt_mesh_seen"].value(which="b") == 2.0


@pytest.mark.parametrize(
    ("name", "kind", "labels"),
    [
        ("crdt mesh", Kind.GAUGE, ()),  # not a name
        ("crdt_mesh_count", Kind.COUNTER, ()),  # a counter not ending in _total
        ("crdt_mesh_level_total", Kind.GAUGE, ()),  # a gauge that says it is a counter
        ("crdt_mesh_level", Kind.GAUGE, ("le",)),  # the histogram's own label
        ("crdt_mesh_level", Kind.GAUGE, ("__name",)),  # reserved
        ("crdt_mesh_level", Kind.GAUGE, ("a", "a")),  # twice
        ("crdt_mesh_level", Kind.GAUGE, ("bad-label",)),
    ],
)
def test_a_badly_declared_metric_is_a_typed_error_and_declares_nothing(
    name: str, kind: Kind, labels: tuple[str, ...]
) -> None:
    metrics = Metrics()
    with pytest.raises(MetricError):
        if kind is Kind.COUNTER:
            metrics.counter(name, "x", labels)
        else:
            metrics.gauge(name, "x", labels)
    assert metrics.collect() == []


def test_misuse_is_a_typed_error_and_changes_nothing() -> None:
    metrics = Metrics()
    counter = metrics.counter("crdt_mesh_things_total", "things", ("origin",))
    counter.inc("local")
    with pytest.raises(MetricError):
        metrics.gauge("crdt_mesh_things_total", "again")  # declared already
    with pytest.raises(MetricError):
        counter.inc()  # a label value missing
    with pytest.raises(MetricError):
        counter.inc("local", by=-1)  # counters only grow
    with pytest.raises(MetricError):
        counter.inc("local", by=math.nan)
    with pytest.raises(MetricError):
        metrics.histogram("crdt_mesh_h", "h", (1.0, 1.0))
    with pytest.raises(MetricError):
        metrics.histogram("crdt_mesh_h", "h", (1.0, math.inf))
    with pytest.raises(MetricError):
        metrics.observe("crdt_mesh_h", "h", Kind.HISTOGRAM, lambda: 1.0)
    with pytest.raises(MetricError):
        metrics.family("crdt_mesh_nothing")
    assert [f.name for f in metrics.collect()] == ["crdt_mesh_things_total"]
    assert metrics.family("crdt_mesh_things_total").value(origin="local") == 1


def test_an_observed_metric_whose_labels_do_not_match_is_a_typed_error() -> None:
    metrics = Metrics()
    metrics.observe("crdt_mesh_seen", "seen", Kind.GAUGE, lambda: [(("a", "b"), 1.0)], ("x",))
    with pytest.raises(MetricError):
        metrics.collect()
