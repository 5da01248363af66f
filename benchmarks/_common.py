"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def best_rate(run: Callable[[], int], repeats: int = 3) -> float:
    """Items per second of the fastest of ``repeats`` runs (``run`` returns its item count).

    The fastest run is the one least disturbed by the rest of a shared machine.
    """
    return best_rates({"run": run}, repeats)["run"]


def best_rates(runs: Mapping[str, Callable[[], int]], repeats: int = 3) -> dict[str, float]:
    """:func:`best_rate` of each of ``runs``, their repeats taken in turn (one of each,
    then again): a figure and its floor then see the same spells of a shared
    machine, and their ratio does not swing with whichever ran in a quiet one."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(repeats):
        for name, run in runs.items():
            gc.collect()
            start = time.perf_counter()
            count = run()
            elapsed = time.perf_counter() - start
            best[name] = max(best[name], count / elapsed)
    return best


def best_time(run: Callable[[], object], repeats: int = 3) -> float:
    """Seconds taken by the fastest of ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder on the same disk as the system's temp dir, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"crdt_mesh-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Target:
    """What a figure must reach: ``op`` (``>=``, ``<=``, ``>``, ``<``) and a bound."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        compare = {">=": float.__ge__, "<=": float.__le__, ">": float.__gt__, "<": float.__lt__}
        return bool(compare[self.op](float(value), float(self.bound)))

    @property
    def better(self) -> str:
        return "higher is better" if self.op.startswith(">") else "lower is better"

    def mark(self, value: float) -> str:
        return f"{'✓' if self.met(value) else '✗'} {self.op} {self.bound:g} ({self.better})"


#: Every target checked in this run: True where it was met.
RESULTS: list[bool] = []


def row(
    label: str,
    value: str,
    floor: str = "",
    ratio: float | None = None,
    target: Target | str = "",
    *,
    measured: float | None = None,
) -> None:
    """Print one figure. With a :class:`Target`, mark it ✓ or ✗: the target applies to
    ``measured`` when given, else to ``ratio``; a plain string is a note."""
    ratio_text = f"{ratio:6.2f}x" if ratio is not None else ""
    if isinstance(target, Target):
        value_checked = measured if measured is not None else ratio
        if value_checked is None:
            raise ValueError(f"{label}: a target needs a figure to check")
        RESULTS.append(target.met(value_checked))
        target = target.mark(value_checked)
    print(f"  {label:<44} {value:>16} {floor:>18} {ratio_text:>8}  {target}", flush=True)


def summary() -> None:
    """The last line of every benchmark: how many of its targets were met."""
    met = sum(RESULTS)
    mark = "✓" if met == len(RESULTS) else "✗"
    print(f"{mark} targets met: {met} of {len(RESULTS)}", flush=True)


def progress(text: str) -> None:
    """Say what runs now, on a terminal only (a log or a pipe gets the figures alone)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K… {text}")
        sys.stderr.flush()


def progress_done() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


@dataclass(frozen=True)
class Series:
    """One line of a plot: its label, points, and matplotlib's line style."""

    label: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    style: str = "o-"


@dataclass(frozen=True)
class Panel:
    """One set of axes: a title, axis labels, and its lines."""

    title: str
    xlabel: str
    ylabel: str
    series: tuple[Series, ...]
    logx: bool = False


def plot(path: str | Path, title: str, panels: list[Panel], columns: int = 3) -> None:
    """Draw ``panels``, up to ``columns`` a row, into the image ``path`` (``--plot``;
    needs the ``plot`` extra: matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no screen
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'crdt_mesh[plot]'") from None
    across = min(columns, len(panels))
    down = -(-len(panels) // across)
    figure, axes = plt.subplots(down, across, figsize=(6 * across, 4.2 * down), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for line in panel.series:
            ax.plot(line.xs, line.ys, line.style, label=line.label, markersize=4)
        ax.set_title(panel.title)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        if panel.logx:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labels at the decades only
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"plot: {path}")
