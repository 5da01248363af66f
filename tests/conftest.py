"""Shared fixtures. Hypothesis runs few examples in CI; set HYPOTHESIS_PROFILE=thorough locally."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from crdt_mesh import Durability, Identity, Replica

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ReplicaFactory = Callable[..., Replica]


@pytest.fixture
def make_replica(tmp_path: Path) -> Iterator[ReplicaFactory]:
    """Open replicas in a temporary folder; all are closed at the end of the test."""
    opened: list[Replica] = []
    counter = iter(range(1_000_000))

    def make(
        identity: Identity | None = None, name: str | None = None, **options: object
    ) -> Replica:
        options.setdefault("durability", Durability.PROCESS)
        replica = Replica.open(
            tmp_path / (name or f"replica-{next(counter)}"),
            identity or Identity.generate(),
            **options,
        )
        opened.append(replica)
        return replica

    yield make
    for replica in opened:
        replica.close()
