"""Three nodes in their own network namespaces, joined by veth pairs (and tc netem).

Needs root and iproute2; netem also needs the kernel's sch_netem. Each part
skips, saying why, where the machine cannot provide it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_node_processes import Node

SUFFIX = f"{os.getpid() % 100000}"
NAMESPACES = [f"cm{SUFFIX}a", f"cm{SUFFIX}b", f"cm{SUFFIX}c"]
# (namespace index, namespace index, subnet third octet): one veth pair per link
LINKS = [(0, 1, 1), (1, 2, 2), (0, 2, 3)]


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=30)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    probe = f"cm{SUFFIX}probe"
    if _run("ip", "netns", "add", probe, check=False).returncode != 0:
        return "this sandbox does not allow creating network namespaces"
    _run("ip", "netns", "del", probe, check=False)
    return None


def _netem_missing() -> str | None:
    if shutil.which("tc") is None:
        return "tc (iproute2) is not installed"
    probe = f"cm{SUFFIX}q"
    _run("ip", "link", "add", f"{probe}0", "type", "veth", "peer", "name", f"{probe}1", check=False)
    try:
        result = _run(
            "tc", "qdisc", "add", "dev", f"{probe}0", "root", "netem", "delay", "1ms", check=False
        )
        if result.returncode != 0:
            return f"the kernel has no netem qdisc (sch_netem): {result.stderr.strip()}"
        return None
    finally:
        _run("ip", "link", "del", f"{probe}0", check=False)


@pytest.fixture
def namespaces() -> Iterator[list[str]]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    try:
        for ns in NAMESPACES:
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        for a, b, net in LINKS:
            left, right = f"v{SUFFIX}{a}{b}", f"v{SUFFIX}{b}{a}"
            _run(
                "ip",
                "link",
                "add",
                left,
                "netns",
                NAMESPACES[a],
                "type",
                "veth",
                "peer",
                "name",
                right,
                "netns",
                NAMESPACES[b],
            )
            _run("ip", "-n", NAMESPACES[a], "addr", "add", f"10.77.{net}.1/30", "dev", left)
            _run("ip", "-n", NAMESPACES[b], "addr", "add", f"10.77.{net}.2/30", "dev", right)
            _run("ip", "-n", NAMESPACES[a], "link", "set", left, "up")
            _run("ip", "-n", NAMESPACES[b], "link", "set", right, "up")
        yield NAMESPACES
    finally:
        for ns in NAMESPACES:
            _run("ip", "netns", "del", ns, check=False)


def _netem(loss: str, delay: str) -> None:
    for a, b, _ in LINKS:
        for ns, dev in ((NAMESPACES[a], f"v{SUFFIX}{a}{b}"), (NAMESPACES[b], f"v{SUFFIX}{b}{a}")):
            _run(
                "ip",
                "netns",
                "exec",
                ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                dev,
                "root",
                "netem",
                "loss",
                loss,
                "delay",
                delay,
            )


@pytest.mark.slow
@pytest.mark.parametrize("impaired", [False, True], ids=["clean", "netem-loss-delay"])
def test_three_namespaced_nodes_converge(
    namespaces: list[str], tmp_path: Path, impaired: bool
) -> None:
    if impaired:
        reason = _netem_missing()
        if reason:
            pytest.skip(reason)
        _netem("5%", "20ms")
    nodes: list[Node] = []
    try:
        a = Node(
            tmp_path,
            "a",
            [],
            writes=10,
            listen="tcp://10.77.1.1:7001",
            prefix=("ip", "netns", "exec", namespaces[0]),
        )
        nodes.append(a)
        b = Node(
            tmp_path,
            "b",
            ["tcp://10.77.1.1:7001"],
            writes=10,
            listen="tcp://10.77.2.1:7002",
            prefix=("ip", "netns", "exec", namespaces[1]),
        )
        nodes.append(b)
        c = Node(
            tmp_path,
            "c",
            ["tcp://10.77.2.1:7002", "tcp://10.77.3.1:7003"],
            writes=10,
            listen="tcp://10.77.3.2:7003",
            prefix=("ip", "netns", "exec", namespaces[2]),
        )
        nodes.append(c)
        for node in nodes:
            node.entries(30, timeout=120)
        for node in nodes:
            assert node.stop() == 0
    finally:
        for node in nodes:
            node.close()
