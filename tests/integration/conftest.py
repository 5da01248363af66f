"""Async tests here run on asyncio and on trio."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crdt_mesh.testing.natsd import NatsServer


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A real nats-server on loopback for the whole session."""
    server = NatsServer()
    server.start()
    yield server
    server.stop()
