"""Every benchmark runs, in its smoke mode (``--quick``), on a fresh install.

Not a measurement (CI machines are shared and noisy: a ✗ here fails nothing); a
check that no benchmark has rotted: each must run to its end and print the
line that counts its targets.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted(
    p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")
)

pytestmark = pytest.mark.slow

#: Benchmarks that draw their figures with ``--plot FILE.png`` (the plot extra).
PLOTTED = {"gossip", "memory", "reputation", "scale"}


def test_every_benchmark_module_is_run_here() -> None:
    assert {"foundation", "sync", "tcp", "gossip", "tasks", "hostile"} <= set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_the_benchmark_runs_to_its_end_in_smoke_mode(name: str, tmp_path: Path) -> None:
    picture = tmp_path / f"{name}.png"
    drawn = ["--plot", str(picture)] if name in PLOTTED else []
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick", *drawn],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "targets met:" in done.stdout.splitlines()[-1], done.stdout[-2000:]
    if drawn:
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
