"""The command line: help for everything, one-line errors with status 2, no tracebacks."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from pathlib import Path

import pytest

from crdt_mesh import Identity
from crdt_mesh.cli import JsonLogFormatter, _with_scheme, build_parser, main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's own refusals and --help / --version
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["demo", "--nodes", "0"], "--nodes: 0 is less than 1"),
        (["demo", "--writes", "-1"], "--writes: -1 is less than 0"),
        (["demo", "--nodes", "many"], "'many' is not a whole number"),
        (["node", "--store", "s", "--key", "k", "--interval", "0"], "--interval"),
        (["node", "--store", "s", "--key", "k", "--status-interval", "nan"], "--status-interval"),
        (["node", "--store", "s", "--key", "k", "--max-peers", "0"], "--max-peers"),
        (["--log-format", "xml", "node", "--store", "s", "--key", "k"], "--log-format"),
    ],
)
def test_a_bad_argument_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    says: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, *argv)
    assert code == 2 and says in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()  # nothing was made


def test_inspect_refuses_a_missing_store_and_leaves_nothing_behind(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.mesh"
    code, _, err = _run(capsys, "inspect", str(missing))
    assert code == 2 and "is not a crdt_mesh store" in err
    assert not missing.exists()


@pytest.mark.parametrize(
    "content",
    [b"this is a text file\n", os.urandom(64), os.urandom(40), b"", b"\xa1\x01\x02"],
    ids=["text", "64-random", "40-random", "empty", "cbor-not-a-key"],
)
def test_every_malformed_key_file_gets_the_clear_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes
) -> None:
    key = tmp_path / "bad.key"
    key.write_bytes(content)
    store = tmp_path / "node.mesh"
    code, _, err = _run(capsys, "node", "--store", str(store), "--key", str(key))
    assert code == 2 and "is not a crdt_mesh key file" in err, err
    assert "Traceback" not in err and not store.exists()


def test_every_option_and_argument_has_help() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and a.dest == "command")
    for name, sub in subparsers.choices.items():  # type: ignore[union-attr]
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"crdt-mesh {name}: {action.dest} has no help text"


def test_version_and_plain_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.startswith("crdt-mesh ")
    code, out, _ = _run(capsys, "--help")
    assert code == 0 and "``" not in out and ":mod:" not in out  # no raw reStructuredText


def test_a_peer_without_a_scheme_gets_the_configured_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "keygen", str(tmp_path / "k"))
    assert code == 0
    # an address that can never work is an error at start, not a dial retried for ever
    code, _, err = _run(
        capsys,
        "node",
        "--store",
        str(tmp_path / "s"),
        "--key",
        str(tmp_path / "k"),
        "--peer",
        "nosuchscheme://x:1",
    )
    assert code == 2 and "nosuchscheme" in err and "Traceback" not in err
    assert _with_scheme("127.0.0.1:9000", "tcp") == "tcp://127.0.0.1:9000"
    assert _with_scheme("mem://a", "tcp") == "mem://a"


@pytest.mark.parametrize("address", ["nowhere", "host:", ":9100", "host:99999", "host:port"])
def test_a_bad_metrics_address_is_one_line_and_nothing_is_made(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, address: str
) -> None:
    key = tmp_path / "k"
    Identity.generate().save(key)
    store = tmp_path / "s"
    code, _, err = _run(
        capsys, "node", "--store", str(store), "--key", str(key), "--metrics", address
    )
    assert code == 2 and "metrics address" in err and "Traceback" not in err
    assert not store.exists()


def test_json_logs_are_one_object_a_line_with_the_traceback_inside() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "crdt_mesh.x", logging.ERROR, __file__, 1, "failed: %s", ("why",), sys.exc_info()
        )
    line = JsonLogFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["level"] == "error" and out["logger"] == "crdt_mesh.x"
    assert out["message"] == "failed: why" and "ValueError: boom" in out["exception"]
    assert out["time"].endswith("Z")


def test_status_of_a_node_that_does_not_answer_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    code, _, err = _run(capsys, "status", f"127.0.0.1:{port}", "--once")
    assert code == 1 and "cannot read" in err and "Traceback" not in err
    code, _, err = _run(capsys, "status", "nowhere", "--once")
    assert code == 2 and "host:port" in err
