"""Metrics an operator reads: counters, gauges and histograms, with no dependency.

Named in Prometheus style (``crdt_mesh_…``, counters ending ``_total``); a metric
with labels holds one value per set of label values. Most of what a mesh can
tell is counted already where it happens (a replica's heads, a link's stats):
such values are *observed* by a callback when the metrics are collected, and
cost nothing until then. What nothing else counts (the lag of each entry that
arrives) is recorded where it happens, at the cost of an addition.

:meth:`Metrics.collect` returns the families as values; ``crdt_mesh.prometheus``
serves them over HTTP for a Prometheus to scrape (the optional extra
``crdt_mesh[metrics]``), and ``crdt-mesh status`` reads them back.
"""

from __future__ import annotations

import bisect
import enum
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import MeshError

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
#: Upper bounds of the default histogram buckets, in seconds: 1 ms to a minute.
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class MetricError(MeshError, ValueError):
    """A metric was declared or used wrongly (a bad name, labels that do not match)."""


class Kind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a family: a count or level, or a histogram's buckets."""

    labels: tuple[tuple[str, str], ...]
    value: float
    #: histograms only: (upper bound, observations at or below it), cumulative
    buckets: tuple[tuple[float, int], ...] = ()
    count: int = 0


@dataclass(frozen=True, slots=True)
class Family:
    """A metric as collected: its name, help, kind and samples."""

    name: str
    help: str
    kind: Kind
    samples: tuple[Sample, ...]

    def value(self, **labels: str) -> float:
        """The sample with exactly ``labels`` (0 if none was recorded)."""
        wanted = tuple(sorted(labels.items()))
        for sample in self.samples:
            if tuple(sorted(sample.labels)) == wanted:
                return sample.value
        return 0.0


_M = TypeVar("_M", bound="_Metric | Histogram | _Observed")

#: What a callback returns: (label values, value) pairs, or a bare value.
Observation = Iterable[tuple[Sequence[str], float]] | float


@dataclass(slots=True)
class _Metric:
    name: str
    help: str
    kind: Kind
    labels: tuple[str, ...]
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def _key(self, values: Sequence[str]) -> tuple[str, ...]:
        if len(values) != len(self.labels):
            raise MetricError(
                f"{self.name} takes labels {self.labels}, was given {len(values)} values"
            )
        return tuple(str(v) for v in values)

    def _samples(self) -> tuple[Sample, ...]:
        return tuple(
            Sample(tuple(zip(self.labels, key, strict=True)), value)
            for key, value in sorted(self.values.items())
        )


class Counter(_Metric):
    """A count that only grows (restarts at 0 with the process)."""

    def inc(self, *labels: str, by: float = 1.0) -> None:
        """Add ``by`` to the count of ``labels`` (their values, in declared order)."""
        if not by >= 0:
            raise MetricError(f"{self.name} is a counter: it does not go down ({by})")
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + by


class Gauge(_Metric):
    """A level that goes up and down."""

    def set(self, value: float, *labels: str) -> None:
        """Set the level of ``labels`` (their values, in declared order)."""
        self.values[self._key(labels)] = float(value)


class Histogram:
    """Observations counted into buckets by upper bound, with their sum."""

    def __init__(self, name: str, help: str, buckets: Sequence[float] = SECONDS) -> None:
        bounds = sorted(buckets)
        if (
            not bounds
            or any(not math.isfinite(b) for b in bounds)
            or len(set(bounds)) != len(bounds)
        ):
            raise MetricError(f"{name}: buckets must be finite, distinct and at least one")
        self.name, self.help, self.kind = name, help, Kind.HISTOGRAM
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def _samples(self) -> tuple[Sample, ...]:
        cumulative, running = [], 0
        for bound, count in zip(self._bounds, self._counts, strict=False):
            running += count
            cumulative.append((bound, running))
        total = running + self._counts[-1]
        cumulative.append((math.inf, total))
        return (Sample((), self._sum, tuple(cumulative), total),)


@dataclass(slots=True)
class _Observed:
    name: str
    help: str
    kind: Kind
    labels: tuple[str, ...]
    read: Callable[[], Observation]

    def _samples(self) -> tuple[Sample, ...]:
        seen = self.read()
        if isinstance(seen, int | float):
            return (Sample((), float(seen)),)
        out = []
        for values, value in seen:
            if len(values) != len(self.labels):
                raise MetricError(f"{self.name}: labels {self.labels}, values {tuple(values)}")
            out.append(Sample(tuple(zip(self.labels, map(str, values), strict=True)), value))
        return tuple(out)


class Metrics:
    """The metrics of one mesh: declared once by name, collected together."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric | Histogram | _Observed] = {}

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        declared = self._labels(name, labels, Kind.COUNTER)
        return self._add(Counter(name, help, Kind.COUNTER, declared))

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help, Kind.GAUGE, self._labels(name, labels, Kind.GAUGE)))

    def histogram(self, name: str, help: str, buckets: Sequence[float] = SECONDS) -> Histogram:
        self._labels(name, (), Kind.HISTOGRAM)
        return self._add(Histogram(name, help, buckets))

    def observe(
        self,
        name: str,
        help: str,
        kind: Kind,
        read: Callable[[], Observation],
        labels: Sequence[str] = (),
    ) -> None:
        """Declare a counter or gauge whose values ``read()`` gives when collected."""
        if kind is Kind.HISTOGRAM:
            raise MetricError(f"{name}: an observed metric is a counter or a gauge")
        self._add(_Observed(name, help, kind, self._labels(name, labels, kind), read))

    def collect(self) -> list[Family]:
        """Every metric's current samples (observed ones read now), sorted by name."""
        return [
            Family(m.name, m.help, m.kind, m._samples()) for _, m in sorted(self._metrics.items())
        ]

    def family(self, name: str) -> Family:
        """One metric's current samples.

        Raises:
            MetricError: no metric of that name.
        """
        metric = self._metrics.get(name)
        if metric is None:
            raise MetricError(f"no metric named {name}")
        return Family(metric.name, metric.help, metric.kind, metric._samples())

    def _labels(self, name: str, labels: Sequence[str], kind: Kind) -> tuple[str, ...]:
        if not _NAME.match(name):
            raise MetricError(f"{name!r} is not a metric name")
        if name in self._metrics:
            raise MetricError(f"{name} is declared already")
        if (kind is Kind.COUNTER) != name.endswith("_total"):
            raise MetricError(f"{name}: counters, and only they, end in _total")
        for label in labels:
            if not _LABEL.match(label) or label.startswith("__") or label == "le":
                raise MetricError(f"{name}: {label!r} is not a label name")
        if len(set(labels)) != len(labels):
            raise MetricError(f"{name}: a label is named twice")
        return tuple(labels)

    def _add(self, metric: _M) -> _M:
        self._metrics[metric.name] = metric
        return metric


__all__ = [
    "SECONDS",
    "Counter",
    "Family",
    "Gauge",
    "Histogram",
    "Kind",
    "MetricError",
    "Metrics",
    "Sample",
]
