"""The README's install works for users: their own code type-checks against it.

The install under test is the one this interpreter has: in CI, the README's
``pip install -e '.[dev]'`` in a fresh virtual environment (``.ci/run``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

USER_CODE = textwrap.dedent(
    """
    from crdt_mesh import Identity, Mesh, Replica
    from crdt_mesh.testing import cluster
    from transports.tcp import TcpTransport


    async def main(path: str) -> None:
        with Replica.open(path, Identity.generate()) as replica:
            async with Mesh(replica, TcpTransport(), listen="tcp://127.0.0.1:0") as mesh:
                address: str | None = mesh.address
                print(address, cluster)
    """
)


def test_user_code_outside_the_repository_type_checks_against_the_install(
    tmp_path: Path,
) -> None:
    (tmp_path / "user_app.py").write_text(USER_CODE)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "user_app.py"],
        cwd=tmp_path,  # outside the checkout: only the install can be found
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
