"""Nodes as processes on loopback TCP: converge, survive SIGKILL, stop cleanly."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crdt_mesh import Identity, Replica

ROOT = Path(__file__).resolve().parents[2]


class Node:
    """A `crdt-mesh node` process whose JSON status lines are read on a thread."""

    def __init__(
        self,
        root: Path,
        name: str,
        peers: list[str],
        writes: int,
        *,
        listen: str = "tcp://127.0.0.1:0",
        prefix: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self.root, self.name = root, name
        self.key = root / f"{name}.key"
        if not self.key.exists():
            Identity.generate().save(self.key)
        self.peer_id = str(Identity.load(self.key).peer_id)
        command = [
            *prefix,
            sys.executable,
            "-m",
            "crdt_mesh",
            "node",
            "--store",
            str(root / f"{name}.mesh"),
            "--key",
            str(self.key),
            "--listen",
            listen,
            "--interval",
            "0.2",
            "--status-interval",
            "0.05",
            "--writes",
            str(writes),
            "--document",
            "shared",
            *options,
        ]
        for peer in peers:
            command += ["--peer", peer]
        env = {k: v for k, v in os.environ.items() if not k.startswith("P2P_")} | (env or {})
        self.log = (root / f"{name}.log").open("ab")  # stderr: a pipe nobody reads could fill
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, env=env
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.last: dict[str, Any] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.ready = self.wait(lambda r: r.get("event") == "ready", timeout=30)
        self.address = self.ready["address"]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                continue

    def wait(self, condition: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: condition not met; last status {self.last}")
            try:
                record = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if record.get("event") == "status":
                self.last = record
            if condition(record):
                return record

    def entries(self, count: int, timeout: float = 60) -> None:
        self.wait(lambda r: r.get("event") == "status" and r["entries"] >= count, timeout)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.close()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self.close()
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=10)  # it ends at EOF; only then close the pipe under it
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()


@pytest.mark.slow
def test_five_processes_converge_and_a_killed_one_catches_up(tmp_path: Path) -> None:
    nodes: list[Node] = []
    try:
        hub = Node(tmp_path, "node-0", [], writes=10)
        nodes.append(hub)
        for i in range(1, 5):
            nodes.append(Node(tmp_path, f"node-{i}", [hub.address], writes=10))
        for node in nodes:
            node.entries(50)

        victim = nodes[3]
        victim.kill()
        assert victim.process.returncode == -signal.SIGKILL
        late = Node(tmp_path, "node-5", [hub.address], writes=10)  # writes while the victim is down
        nodes.append(late)
        hub.entries(60)

        nodes[3] = Node(tmp_path, "node-3", [hub.address], writes=0)  # same key, same store
        for node in nodes:
            node.entries(60)
        for node in nodes:
            assert node.stop() == 0
            assert node.last["entries"] == 60
    finally:
        for node in nodes:
            node.close()
    # nothing was lost: the victim's store holds its own ten entries and everyone else's
    with Replica.open(tmp_path / "node-3.mesh", Identity.generate()) as replica:
        assert replica.summary().entries == 60
        assert len(replica.document("shared").map("writes")) == 60


def test_writes_on_signal_wait_for_each_sigusr1(tmp_path: Path) -> None:
    """A benchmark starts every node's writes at once: nothing is written at start,
    each SIGUSR1 writes another --writes, and the other node gets them all."""
    nodes: list[Node] = []
    try:
        a = Node(tmp_path, "a", [], writes=3, options=("--writes-on-signal",))
        b = Node(tmp_path, "b", [a.address], writes=0)
        nodes = [a, b]
        b.wait(lambda r: r.get("event") == "status" and r["peers"] == 1, timeout=30)
        # (without the option, the writes come before the first status line)
        first = a.wait(lambda r: r.get("event") == "status", timeout=30)
        assert first["writes"] == 0
        for expected in (3, 6):
            a.process.send_signal(signal.SIGUSR1)
            a.wait(lambda r, n=expected: r.get("event") == "wrote" and r["writes"] == n, 30)
        b.wait(lambda r: r.get("event") == "status" and r["writes"] == 6, timeout=30)
        for node in nodes:
            assert node.stop() == 0
    finally:
        for node in nodes:
            node.close()


def test_a_live_node_serves_metrics_that_prometheus_parses(tmp_path: Path) -> None:
    """`--metrics 127.0.0.1:0`: the ready line says where; a scrape over HTTP parses
    with Prometheus's own parser and counts what happened; anything but a GET of
    /metrics, or a request too large, is refused and changes nothing."""
    parser = pytest.importorskip("prometheus_client.parser")  # the metrics extra (dev has it)
    nodes: list[Node] = []
    try:
        a = Node(tmp_path, "a", [], writes=0, options=("--metrics", "127.0.0.1:0"))
        b = Node(tmp_path, "b", [a.address], writes=5)
        nodes = [a, b]
        a.wait(lambda r: r.get("event") == "status" and r["writes"] == 5, timeout=30)
        url = a.ready["metrics"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

        def scrape() -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.headers["Content-Type"].startswith("text/plain")
                text = response.read().decode()
            return {f.name: f for f in parser.text_string_to_metric_families(text)}

        families = scrape()
        committed = {
            s.labels["origin"]: s.value for s in families["crdt_mesh_entries_committed"].samples
        }
        assert committed == {"remote": 5.0}
        lag = {s.name: s.value for s in families["crdt_mesh_replication_lag_seconds"].samples}
        assert lag["crdt_mesh_replication_lag_seconds_count"] == 5
        links = {s.labels["state"]: s.value for s in families["crdt_mesh_links"].samples}
        assert links["active"] == 1

        host, port = url.removeprefix("http://").split("/")[0].rsplit(":", 1)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=10)
        assert refused.value.code == 404
        refused.value.close()
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"x" * 20_000 + b"\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.1 400")
        assert "crdt_mesh_entries_committed" in scrape()  # still serving
        # eight silent clients take every slot; a ninth is closed at once, not held
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(8)]
        try:
            # (accepted in order: the ninth is served, or not, after the eight)
            with socket.create_connection((host, int(port)), timeout=10) as extra:
                assert extra.recv(100) == b""
        finally:
            for sock in idle:
                sock.close()
        assert "crdt_mesh_entries_committed" in scrape()  # the slots came back

        status = subprocess.run(
            [sys.executable, "-m", "crdt_mesh", "status", f"{host}:{port}", "--interval", "0.2"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert "1 active" in status.stdout and "5 remote" in status.stdout
        assert "over 5 entries" in status.stdout  # the lag's observations
        for node in nodes:
            assert node.stop() == 0
    finally:
        for node in nodes:
            node.close()


GOSSIP_ON = {"P2P_ENABLED": "true", "P2P_GOSSIP": "true", "P2P_GOSSIP_INTERVAL": "200"}


def test_three_processes_bootstrapped_in_a_line_all_know_each_other(tmp_path: Path) -> None:
    """A knows B, B knows C: records spread, and discovery links A and C directly."""
    nodes: list[Node] = []
    try:
        c = Node(tmp_path, "c", [], writes=0, env=GOSSIP_ON)
        b = Node(tmp_path, "b", [c.address], writes=0, env=GOSSIP_ON)
        a = Node(tmp_path, "a", [b.address], writes=0, env=GOSSIP_ON)
        nodes = [a, b, c]
        for node in nodes:
            node.wait(lambda r: r.get("known") == 3 and r.get("peers") == 2, timeout=60)
        for node in nodes:
            assert node.stop() == 0
    finally:
        for node in nodes:
            node.close()


def test_malformed_environment_is_an_error_at_start(tmp_path: Path) -> None:
    key = tmp_path / "k"
    Identity.generate().save(key)
    env = {**os.environ, "P2P_MAX_PEERS": "lots"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "crdt_mesh",
            "node",
            "--store",
            str(tmp_path / "s"),
            "--key",
            str(key),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2  # what the user gave is wrong: as argparse says it
    assert "P2P_MAX_PEERS" in result.stderr and "Traceback" not in result.stderr


def test_keygen_inspect_and_demo(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crdt_mesh", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    keygen = run("keygen", str(tmp_path / "k"))
    assert keygen.returncode == 0 and len(keygen.stdout.strip()) == 52
    assert run("keygen", str(tmp_path / "k")).returncode == 2  # never overwrites by accident
    identity = Identity.load(tmp_path / "k")
    with Replica.open(tmp_path / "s", identity) as replica:
        notes = replica.document("notes")
        with notes.transaction():
            notes.map("m")["x"] = 1
    inspect = run("inspect", str(tmp_path / "s"), "--json")
    assert inspect.returncode == 0, inspect.stderr
    data = json.loads(inspect.stdout)
    assert data["summary"]["entries"] == 1
    assert data["documents"][0]["feeds"][0]["author"] == str(identity.peer_id)
    demo = run("demo")
    assert demo.returncode == 0, demo.stderr
    assert "converged in" in demo.stdout and "cleaned up" in demo.stdout
