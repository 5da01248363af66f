"""``crdt-mesh status``: a running node's metrics on one screen.

It scrapes the node's ``/metrics`` (``crdt-mesh node --metrics``), parses it with
prometheus-client's parser (the ``metrics`` extra), and shows links, members,
what was committed and refused, the replication lag and the rates between two
scrapes. :func:`render` is pure: two snapshots in, the screen's text out.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from dataclasses import dataclass

from .errors import ConfigError, MeshError, MissingExtra

#: Bytes of a scrape read at most (a node's metrics are a few KiB).
MAX_SCRAPE = 4 * 1024 * 1024

Labels = tuple[tuple[str, str], ...]


class Unreachable(MeshError):
    """The node's metrics could not be read (it is down, or not serving them there)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One scrape: each sample's value by name and labels, and when it was taken."""

    at: float
    samples: dict[str, dict[Labels, float]]

    def value(self, name: str, **labels: str) -> float:
        """A sample's value (0 if the node does not have it)."""
        return self.samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples that have ``labels`` (and any others)."""
        wanted = set(labels.items())
        return sum(v for k, v in self.samples.get(name, {}).items() if wanted <= set(k))

    def by(self, name: str, label: str) -> dict[str, float]:
        """A metric's samples by the value of one label."""
        return {dict(k)[label]: v for k, v in self.samples.get(name, {}).items() if k}

    def quantile(self, name: str, q: float) -> float | None:
        """The ``q`` quantile of histogram ``name`` (interpolated in its bucket, as
        Prometheus's histogram_quantile does); None if it has no observations."""
        buckets = sorted(
            (math.inf if dict(k)["le"] == "+Inf" else float(dict(k)["le"]), v)
            for k, v in self.samples.get(f"{name}_bucket", {}).items()
        )
        if not buckets or buckets[-1][1] == 0:
            return None
        rank = q * buckets[-1][1]
        lower, below = 0.0, 0.0
        for bound, count in buckets:
            if count >= rank:
                if math.isinf(bound):
                    return lower  # above every bound: the highest bound is all we know
                share = (rank - below) / (count - below) if count > below else 0.0
                return lower + (bound - lower) * share
            lower, below = bound, count
        return lower


def metrics_url(address: str) -> str:
    """``host:port`` or a URL as the URL of a node's metrics.

    Raises:
        ConfigError: neither.
    """
    if address.startswith(("http://", "https://")):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{address!r}: expected host:port or http://host:port/metrics")
    return f"http://{address}/metrics"


def scrape(url: str, at: float, timeout: float = 10.0) -> Snapshot:
    """Read and parse the metrics at ``url``.

    Raises:
        MissingExtra: prometheus-client is not installed.
        Unreachable: no answer, an HTTP error, or not Prometheus's text format.
    """
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise MissingExtra(
            "reading metrics needs prometheus-client: pip install 'crdt_mesh[metrics]'"
        ) from None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read(MAX_SCRAPE + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unreachable(f"cannot read {url}: {exc}") from None
    if len(text) > MAX_SCRAPE:
        raise Unreachable(f"{url}: more than {MAX_SCRAPE:,} bytes of metrics")
    samples: dict[str, dict[Labels, float]] = {}
    try:
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                samples.setdefault(sample.name, {})[labels] = float(sample.value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unreachable(f"{url}: not Prometheus metrics ({exc})") from None
    return Snapshot(at, samples)


def render(url: str, now: Snapshot, before: Snapshot | None = None) -> str:
    """The screen for ``now``; rates per second since ``before`` when given."""
    span = now.at - before.at if before is not None and now.at > before.at else None

    def rate(name: str, **labels: str) -> str:
        if span is None or before is None:
            return ""

        def pick(s: Snapshot) -> float:
            return s.total(name, **labels)

        return f"  ({max(0.0, pick(now) - pick(before)) / span:,.1f}/s)"

    def seconds(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value * 1000:,.0f} ms" if value < 1 else f"{value:,.1f} s"

    links = now.by("crdt_mesh_links", "state")
    members = now.by("crdt_mesh_members", "status")
    committed = now.by("crdt_mesh_entries_committed_total", "origin")
    rejected = now.by("crdt_mesh_entries_rejected_total", "reason")
    offences = {k: v for k, v in now.by("crdt_mesh_offences_total", "kind").items() if v}
    lag = "crdt_mesh_replication_lag_seconds"
    lines = [
        f"crdt-mesh status of {url}",
        "",
        f"links      {links.get('active', 0):,.0f} active, "
        f"{links.get('transient', 0):,.0f} for one round",
        "members    "
        + (", ".join(f"{v:,.0f} {k}" for k, v in sorted(members.items()) if v) or "- (gossip off)"),
        f"committed  {committed.get('local', 0):,.0f} local"
        + rate("crdt_mesh_entries_committed_total", origin="local")
        + f", {committed.get('remote', 0):,.0f} remote"
        + rate("crdt_mesh_entries_committed_total", origin="remote"),
        f"lag        p50 {seconds(now.quantile(lag, 0.5))}, p99 {seconds(now.quantile(lag, 0.99))}"
        f" over {now.value(f'{lag}_count'):,.0f} entries",
        f"pending    {now.value('crdt_mesh_pending_entries'):,.0f} entries, "
        f"{now.value('crdt_mesh_pending_bytes'):,.0f} bytes",
        f"sync       {now.total('crdt_mesh_sync_bytes_total', direction='in'):,.0f} B in"
        + rate("crdt_mesh_sync_bytes_total", direction="in")
        + f", {now.total('crdt_mesh_sync_bytes_total', direction='out'):,.0f} B out"
        + rate("crdt_mesh_sync_bytes_total", direction="out")
        + f"; rounds {now.total('crdt_mesh_sync_rounds_total'):,.0f}"
        + rate("crdt_mesh_sync_rounds_total")
        + f", {_per_round(now):.1f} frames each",
        f"health     {now.value('crdt_mesh_swim_health'):,.0f} (0 is healthy)",
        "refused    "
        + (", ".join(f"{k} {v:,.0f}" for k, v in sorted(rejected.items())) or "nothing"),
        "offences   " + (", ".join(f"{k} {v:,.0f}" for k, v in sorted(offences.items())) or "none"),
    ]
    return "\n".join(lines)


def _per_round(snapshot: Snapshot) -> float:
    rounds = snapshot.total("crdt_mesh_sync_rounds_total")
    return snapshot.total("crdt_mesh_sync_round_frames_total") / rounds if rounds else 0.0


__all__ = ["MAX_SCRAPE", "Snapshot", "Unreachable", "metrics_url", "render", "scrape"]
