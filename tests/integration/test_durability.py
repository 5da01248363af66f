"""Durability.FULL reaches the disk: every durable commit makes a sync call.

A SIGKILL test cannot see a missing fsync (the page cache outlives a killed
process), so these look at the calls themselves: whether commits go through the
journal, and the fsync / fdatasync / msync calls a writer process makes, counted
by strace. What a power cut leaves is simulated in tests/unit/test_journal.py.
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
def test_a_durable_store_commits_through_its_journal_and_lmdb_never_flushes_alone(
    tmp_path: Path, durability: Durability
) -> None:
    with Replica.open(tmp_path / "r", Identity.generate(), durability=durability) as replica:
        flags = replica.store._env.flags()
        journaled = replica.store.journaled
    assert not flags["sync"] and not flags["metasync"]  # the journal or a checkpoint does
    assert journaled is (durability is Durability.FULL)
    assert (tmp_path / "r" / "journal").exists() is (durability is Durability.FULL)


def _strace_works() -> str | None:
    if shutil.which("strace") is None:
        return "strace is not installed (.ci/run installs it from Debian's packages)"
    probe = subprocess.run(["strace", "-f", "-qq", "-e", "trace=none", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"strace cannot trace here: {probe.stderr.decode(errors='replace').strip()}"
    return None


def _sync_calls(tmp_path: Path, durability: Durability) -> int:
    """Calls that reach the disk: fsync and its kind, and writes to a descriptor
    opened with O_DSYNC (each returns once its data is stable)."""
    trace = tmp_path / f"{durability.value}.strace"
    subprocess.run(
        [
            "strace", "-f", "-qq", "-o", str(trace),
            "-e", "trace=openat,close,pwrite64,fsync,fdatasync,msync,sync_file_range",
            sys.executable, "-c", WRITER, str(tmp_path / durability.value), durability.value,
            str(WRITES),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    calls = 0
    synchronous: set[str] = set()
    for line in trace.read_text().splitlines():
        opened = re.search(r"openat\(.*O_DSYNC.*\) = (\d+)", line)
        closed = re.search(r"close\((\d+)\)", line)
        if opened:
            synchronous.add(opened.group(1))
        elif closed:
            synchronous.discard(closed.group(1))  # the number may be reused
        elif re.search(r"\b(fsync|fdatasync|msync|sync_file_range)\(", line):
            calls += 1
        else:
            written = re.search(r"pwrite64\((\d+),", line)
            calls += bool(written and written.group(1) in synchronous)
    return calls


def test_every_durable_commit_syncs_and_a_process_durable_one_does_not(tmp_path: Path) -> None:
    reason = _strace_works()
    if reason is not None:
        pytest.skip(reason)
    full = _sync_calls(tmp_path, Durability.FULL)
    process = _sync_calls(tmp_path, Durability.PROCESS)
    assert full >= WRITES, f"{WRITES} durable commits made {full} sync calls"
    assert process < WRITES // 2, f"PROCESS durability made {process} sync calls"
