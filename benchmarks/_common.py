"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def best_rate(run: Callable[[], int], repeats: int = 3) -> float:
    """Items per second of the fastest of ``repeats`` runs (``run`` returns its item count).

    The fastest run is the one least disturbed by the rest of a shared machine.
    """
    best = 0.0
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        count = run()
        elapsed = time.perf_counter() - start
        best = max(best, count / elapsed)
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
