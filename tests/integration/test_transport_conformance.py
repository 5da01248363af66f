"""Our transports, and the third-party example in docs/, pass the conformance suite;
the example is found by its URL scheme through an entry point, as a package's would be."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from crdt_mesh.runtime.transport import Transport
from crdt_mesh.testing.conformance import TransportConformance
from crdt_mesh.testing.natsd import NatsServer
from transports.memory import MemoryNetwork
from transports.nats import NatsTransport
from transports.tcp import TcpTransport

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "unix_transport.py"
_counter = itertools.count()


class TestMemoryTransport(TransportConformance):
    network = MemoryNetwork()

    def make_transport(self) -> Transport:
        return self.network.transport()

    def listen_address(self) -> str:
        return f"mem://conformance-{next(_counter)}"

    def unreachable_address(self) -> str:
        return "mem://nobody-listens-here"


class TestTcpTransport(TransportConformance):
    def make_transport(self) -> Transport:
        return TcpTransport()

    def listen_address(self) -> str:
        return "tcp://127.0.0.1:0"

    def unreachable_address(self) -> str:
        return "tcp://127.0.0.1:1"  # port 1: nothing listens there


class TestNatsTransport(TransportConformance):
    """Through a real nats-server (the session's, started by the fixture)."""

    @pytest.fixture(params=["asyncio"])  # nats-py, the client, is asyncio's only
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture(autouse=True)
    def _server(self, nats_server: NatsServer) -> None:
        self.server = nats_server

    def make_transport(self) -> Transport:
        return NatsTransport()

    def listen_address(self) -> str:
        return f"{self.server.url}/conformance-{next(_counter)}"

    def unreachable_address(self) -> str:
        return f"{self.server.url}/nobody-listens-here"


def _load_example() -> type:
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import unix_transport

        return unix_transport.UnixTransport  # type: ignore[no-any-return]
    finally:
        sys.path.remove(str(EXAMPLE.parent))


class TestUnixTransportExample(TransportConformance):
    def make_transport(self) -> Transport:
        return _load_example()()  # type: ignore[no-any-return]

    def listen_address(self) -> str:
        return f"unix://{tempfile.mkdtemp(prefix='crdt_mesh-unix-')}/socket"

    def unreachable_address(self) -> str:
        return "unix:///nonexistent-dir/socket"


SCRIPT = """
import anyio, sys, tempfile
from pathlib import Path
from crdt_mesh import Durability, Identity, Mesh, Replica
from crdt_mesh.runtime.registry import schemes

async def main() -> None:
    root = Path(tempfile.mkdtemp())
    socket = f"unix://{root}/a.sock"
    with Replica.open(root / "a", Identity.generate(), durability=Durability.PROCESS) as a, \\
         Replica.open(root / "b", Identity.generate(), durability=Durability.PROCESS) as b:
        async with Mesh(a, listen=socket, interval=0.05), \\
                   Mesh(b, peers=[socket], interval=0.05):   # no transport: found by scheme
            notes = a.document("notes")
            with notes.transaction():
                notes.map("m")["hello"] = "over a unix socket"
            with anyio.fail_after(20):
                while b.heads() != a.heads():
                    await anyio.sleep(0.01)
    print("schemes", schemes(), "converged")

anyio.run(main)
"""


def test_a_transport_installed_by_entry_point_is_found_by_its_scheme(tmp_path: Path) -> None:
    """A package (here a folder on the path with a dist-info, as pip would leave it)
    registers ``unix`` in the group ``crdt_mesh.transports``; a Mesh given no transport
    dials and listens on ``unix://`` addresses through it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "unix_transport.py").write_text(EXAMPLE.read_text())
    info = site / "unix_transport_example-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: unix-transport-example\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [crdt_mesh.transports]
            unix = unix_transport:UnixTransport
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'unix'" in result.stdout and "converged" in result.stdout


def test_an_address_that_can_never_work_is_an_error_at_once() -> None:
    from crdt_mesh import ConfigError, Identity, Mesh, Replica

    with (
        tempfile.TemporaryDirectory() as root,
        Replica.open(Path(root) / "r", Identity.generate()) as replica,
    ):
        for bad in ("localhost:9000", "nosuchscheme://x:1"):
            with pytest.raises(ConfigError, match="peers"):
                Mesh(replica, peers=[bad])
        with pytest.raises(ConfigError, match="listen"):
            Mesh(replica, listen="nowhere")
