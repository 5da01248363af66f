"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def row(
    label: str, value: str, floor: str = "", ratio: float | None = None, target: str = ""
) -> None:
    ratio_text = f"{ratio:6.2f}x" if ratio is not None else ""
    print(f"  {label:<44} {value:>16} {floor:>18} {ratio_text:>8}  {target}")
