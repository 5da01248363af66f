"""MeshConfig, the event bus, and the shared types."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from crdt_mesh import (
    GossipMessageType,
    Identity,
    MemoryPrivacyLevel,
    P2PEvents,
    Replica,
    ReputationScore,
    TaskCoordinationMode,
)
from crdt_mesh.config import Feature, MeshConfig
from crdt_mesh.errors import ConfigError, FeatureDisabledError, UnknownEvent
from crdt_mesh.events import EventBus
from crdt_mesh.mesh import Mesh
from transports.memory import MemoryNetwork


def test_defaults_are_the_missions() -> None:
    config = MeshConfig.from_env({})
    assert config == MeshConfig()
    assert (config.enabled, config.gossip, config.task_negotiation) == (False, False, False)
    assert (config.listen_port, config.max_peers, config.gossip_interval) == (None, 50, 5.0)
    assert config.listen_address() is None  # no P2P_LISTEN_PORT: it does not listen
    assert config.bootstrap_peers == ()


def test_from_env_reads_every_variable() -> None:
    config = MeshConfig.from_env(
        {
            "P2P_ENABLED": "true",
            "P2P_GOSSIP": "1",
            "P2P_REPUTATION": "yes",
            "P2P_TASK_NEGOTIATION": "false",
            "P2P_LISTEN_PORT": "9100",
            "P2P_BOOTSTRAP_PEERS": "peer1:9000, peer2:9001",
            "P2P_MAX_PEERS": "7",
            "P2P_GOSSIP_INTERVAL": "250",
        }
    )
    assert config.enabled and config.gossip and config.reputation and not config.task_negotiation
    assert config.listen_port == 9100 and config.max_peers == 7 and config.gossip_interval == 0.25
    assert config.bootstrap_peers == ("tcp://peer1:9000", "tcp://peer2:9001")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("P2P_ENABLED", "maybe"),
        ("P2P_GOSSIP", "2"),
        ("P2P_LISTEN_PORT", "http"),
        ("P2P_LISTEN_PORT", "70000"),
        ("P2P_MAX_PEERS", "0"),
        ("P2P_MAX_PEERS", "-3"),
        ("P2P_GOSSIP_INTERVAL", "5s"),
        ("P2P_BOOTSTRAP_PEERS", "peer1"),
        ("P2P_BOOTSTRAP_PEERS", "peer1:9000,:80"),
        ("P2P_BOOTSTRAP_PEERS", "peer:99999"),
    ],
)
def test_a_malformed_variable_is_an_error_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        MeshConfig.from_env({name: value})


@pytest.mark.parametrize("feature", list(Feature))
def test_a_service_that_is_off_refuses_naming_the_variable(feature: Feature) -> None:
    with pytest.raises(FeatureDisabledError, match="P2P_ENABLED"):
        MeshConfig().require(feature)
    only_master = MeshConfig(enabled=True)
    with pytest.raises(FeatureDisabledError, match=feature.value):
        only_master.require(feature)
    on = MeshConfig.from_env({"P2P_ENABLED": "true", feature.value: "true"})
    on.require(feature)
    assert on.enables(feature) and not only_master.enables(feature)


@pytest.mark.anyio
async def test_with_the_master_switch_off_nothing_listens_or_dials(tmp_path: Path) -> None:
    network = MemoryNetwork()
    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        config = MeshConfig()  # P2P_ENABLED=false
        async with Mesh(
            replica,
            network.transport(),
            listen="mem://off",
            peers=["mem://x"],
            config=config,
            interval=0.01,
        ) as mesh:
            await anyio.sleep(0.05)
            assert not mesh.active and mesh.address is None and mesh.peers == []
            assert network._listeners == {} and network.frames_sent == 0


@pytest.mark.anyio
async def test_events_reach_sync_and_async_handlers_and_failures_are_contained(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, object]] = []
    done = anyio.Event()

    async def async_handler(payload: object) -> None:
        seen.append(("async", payload))
        done.set()

    def broken(payload: object) -> None:
        raise RuntimeError("handler bug")

    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        async with Mesh(replica, MemoryNetwork().transport()) as mesh:
            mesh.events.on(P2PEvents.PEER_DISCOVERED, broken)
            unsubscribe = mesh.events.on(
                P2PEvents.PEER_DISCOVERED, lambda p: seen.append(("sync", p))
            )
            mesh.events.on(P2PEvents.PEER_DISCOVERED, async_handler)
            with caplog.at_level(logging.ERROR):
                mesh.events.emit(P2PEvents.PEER_DISCOVERED, "peer-1")
            with anyio.fail_after(5):
                await done.wait()
            assert seen == [("sync", "peer-1"), ("async", "peer-1")]
            assert mesh.events.failures == 1 and "handler bug" in caplog.text
            unsubscribe()
            mesh.events.off(P2PEvents.PEER_DISCOVERED, async_handler)
            mesh.events.emit(P2PEvents.PEER_DISCOVERED, "peer-2")
            assert len(seen) == 2


def test_an_async_handler_without_a_mesh_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus(names=["x"])

    async def handler(payload: object) -> None:
        raise AssertionError("never runs")

    bus.on("x", handler)
    with caplog.at_level(logging.WARNING):
        bus.emit("x", 1)
    assert "dropped" in caplog.text
    with pytest.raises(ValueError):
        bus.on("", handler)
    with pytest.raises(TypeError):
        bus.on("x", 42)  # type: ignore[arg-type]


def test_an_unknown_event_name_is_an_error_and_a_registered_one_works(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "r", Identity.generate()) as replica:
        mesh = Mesh(replica)
        seen: list[object] = []
        with pytest.raises(UnknownEvent, match="p2p:typo") as raised:
            mesh.events.on("p2p:typo", seen.append)
        assert isinstance(raised.value, ValueError)
        with pytest.raises(UnknownEvent):
            mesh.events.emit("p2p:typo", 1)
        assert set(P2PEvents) <= mesh.events.names  # every mission name, services to come too
        mesh.events.on(P2PEvents.MEMORY_SHARED, seen.append)
        mesh.events.register("my-app:report")
        mesh.events.on("my-app:report", seen.append)
        mesh.events.emit("my-app:report", "done")
        assert seen == ["done"]


def test_event_names_are_the_missions() -> None:
    """The seed's names, and one it lacks: a challenge's verdict (issue 15)."""
    assert {e.value for e in P2PEvents} == {
        "p2p:task:announced",
        "p2p:task:bid:received",
        "p2p:task:assigned",
        "p2p:peer:discovered",
        "p2p:peer:lost",
        "p2p:gossip:message",
        "p2p:memory:shared",
        "p2p:memory:requested",
        "p2p:reputation:updated",
        "p2p:reputation:challenged",
        "p2p:reputation:decided",
    }
    assert P2PEvents.TASK_ANNOUNCED == "p2p:task:announced"


def test_shared_types() -> None:
    assert [m.value for m in TaskCoordinationMode] == [
        "centralized",
        "hybrid",
        "p2p_negotiated",
        "p2p_auctioned",
    ]
    assert [m.value for m in MemoryPrivacyLevel] == [
        "private",
        "team",
        "organization",
        "public",
        "encrypted",
    ]
    assert GossipMessageType("heartbeat") is GossipMessageType.HEARTBEAT
    score = ReputationScore(overall=0.5, uptime=1, expertise={"code-review": 0.9})
    assert score.expertise["code-review"] == 0.9
    with pytest.raises(TypeError):
        score.expertise["x"] = 1.0  # type: ignore[index]
    for bad in (
        {"overall": 1.5},
        {"timeliness": -0.1},
        {"uptime": float("nan")},
        {"expertise": {"": 0.5}},
        {"expertise": {"x": 2}},
        {"overall": True},
    ):
        with pytest.raises(ValueError):
            ReputationScore(**bad)  # type: ignore[arg-type]
