"""SIGKILL at random moments loses no committed entry and never breaks the store."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crdt_mesh import Identity, Replica

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("CRASH_KILLS", "24"))


def _read_lines_until(proc: subprocess.Popen[bytes], count: int, timeout: float) -> bytes:
    """Read the child's output until it printed ``count`` lines (or the timeout)."""
    assert proc.stdout is not None
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            lines = data.count(b"\n")
            raise TimeoutError(f"child printed {lines} of {count} lines")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"child exited early: {proc.wait()}")
            data += chunk
    return data


@pytest.mark.slow
def test_sigkill_loses_nothing_committed(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CRASH_SEED", "20261124")))
    identity = Identity.generate()
    keyfile = tmp_path / "key"
    identity.save(keyfile)
    store = tmp_path / "store"
    printed: set[int] = set()
    for kill in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.crash_writer", str(store), str(keyfile)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            output = _read_lines_until(proc, 1 + rng.randrange(40), timeout=60)
            time.sleep(rng.random() * 0.02)  # land the kill anywhere in a write
            os.kill(proc.pid, signal.SIGKILL)
            rest, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        complete = (output + rest).rsplit(b"\n", 1)[0]
        printed.update(int(line) for line in complete.split())

        with Replica.open(store, identity) as replica:  # the store opens after every kill
            notes = replica.document("notes")
            head = notes.heads()[identity.peer_id]
            assert head.seq >= max(printed), f"kill {kill}: printed {max(printed)}, kept {head.seq}"
            content = notes.map("m").to_py()
            assert all(str(s) in content for s in printed), f"kill {kill}: lost entries"
            assert len(str(notes.text("t"))) == head.seq
            assert len(replica.missing_from({})) == head.seq  # every entry is readable
    assert len(printed) >= KILLS
