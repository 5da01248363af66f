"""Durability.FULL reaches the disk: every durable commit makes a sync call.

A SIGKILL test cannot see a missing fsync (the page cache outlives a killed
process), so these look at the calls themselves: the flags LMDB was opened with,
and the fsync / fdatasync / msync calls a writer process makes, counted by strace.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crdt_mesh import Durability, Identity, Replica

WRITES = 20
WRITER = """
import sys
from crdt_mesh import Durability, Identity, Replica
durability = Durability(sys.argv[2])
with Replica.open(sys.argv[1], Identity.generate(), durability=durability) as replica:
    notes = replica.document("notes")
    for i in range(int(sys.argv[3])):
        with notes.transaction():
            notes.map("m")[str(i)] = i
"""


@pytest.mark.parametrize("durability", list(Durability))
def test_lmdb_is_opened_with_the_sync_flags_the_durability_asks_for(
    tmp_path: Path, durability: Durability
) -> None:
    with Replica.open(tmp_path / "r", Identity.generate(), durability=durability) as replica:
        flags = replica.store._env.flags()
    full = durability is Durability.FULL
    assert flags["sync"] is full and flags["metasync"] is full


def _strace_works() -> str | None:
    if shutil.which("strace") is None:
        return "strace is not installed (.ci/run installs it from Debian's packages)"
    probe = subprocess.run(["strace", "-f", "-qq", "-e", "trace=none", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"strace cannot trace here: {probe.stderr.decode(errors='replace').strip()}"
    return None


def _sync_calls(tmp_path: Path, durability: Durability) -> int:
    summary = tmp_path / f"{durability.value}.strace"
    subprocess.run(
        [
            "strace", "-f", "-c", "-o", str(summary),
            "-e", "trace=fsync,fdatasync,msync,sync_file_range",
            sys.executable, "-c", WRITER, str(tmp_path / durability.value), durability.value,
            str(WRITES),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    calls = 0
    for line in summary.read_text().splitlines():
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if match and match.group(2) in ("fsync", "fdatasync", "msync", "sync_file_range"):
            calls += int(match.group(1))
    return calls


def test_every_durable_commit_syncs_and_a_process_durable_one_does_not(tmp_path: Path) -> None:
    reason = _strace_works()
    if reason is not None:
        pytest.skip(reason)
    full = _sync_calls(tmp_path, Durability.FULL)
    process = _sync_calls(tmp_path, Durability.PROCESS)
    assert full >= WRITES, f"{WRITES} durable commits made {full} sync calls"
    assert process < WRITES // 2, f"PROCESS durability made {process} sync calls"
