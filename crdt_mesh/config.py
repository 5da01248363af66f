"""MeshConfig: the mission's ``P2P_*`` settings, parsed strictly.

Every service is off unless enabled, and the master switch ``P2P_ENABLED``
gates them all. A malformed variable is a :class:`ConfigError` naming it, at
start-up; there is no silent default for a value that was set.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ArgumentTypeError, ConfigError, FeatureDisabledError


class Feature(enum.Enum):
    """A service of the mesh, and the variable that turns it on."""

    TASK_NEGOTIATION = "P2P_TASK_NEGOTIATION"
    FEDERATED_MEMORY = "P2P_FEDERATED_MEMORY"
    GOSSIP = "P2P_GOSSIP"
    REPUTATION = "P2P_REPUTATION"


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """What the mesh may do, and where. Defaults are the mission's."""

    enabled: bool = False
    task_negotiation: bool = False
    federated_memory: bool = False
    gossip: bool = False
    reputation: bool = False
    #: the port to listen on (``P2P_LISTEN_PORT``); None, when unset: do not listen
    listen_port: int | None = None
    bootstrap_peers: tuple[str, ...] = field(default_factory=tuple)
    max_peers: int = 50
    gossip_interval_ms: int = 5000
    #: the scheme of the transport for ``host:port`` addresses (``P2P_TRANSPORT``)
    transport: str = "tcp"

    def __post_init__(self) -> None:
        for name in ("listen_port", "max_peers", "gossip_interval_ms"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ArgumentTypeError(f"{name}: an int, not {value!r}")
        for name in ("enabled", "task_negotiation", "federated_memory", "gossip", "reputation"):
            if not isinstance(getattr(self, name), bool):
                raise ArgumentTypeError(f"{name}: a bool, not {getattr(self, name)!r}")
        if isinstance(self.bootstrap_peers, str) or not isinstance(
            self.bootstrap_peers, tuple | list
        ):
            raise ArgumentTypeError(
                f"bootstrap_peers: a tuple of addresses, not {self.bootstrap_peers!r}"
            )
        if not isinstance(self.transport, str) or not self.transport.isalnum():
            raise ConfigError(f"transport is a URL scheme such as tcp, not {self.transport!r}")
        if self.listen_port is not None and not 0 <= self.listen_port < 65536:
            raise ConfigError(f"listen_port: {self.listen_port} is not a port (0..65535)")
        if self.max_peers < 1:
            raise ConfigError(f"max_peers: at least 1, not {self.max_peers}")
        if self.gossip_interval_ms < 1:
            raise ConfigError(f"gossip_interval_ms: at least 1 ms, not {self.gossip_interval_ms}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> MeshConfig:
        """Read the ``P2P_*`` variables (of ``env``, or the process environment).

        Raises:
            ConfigError: a variable is set to something it cannot mean.
        """
        env = os.environ if env is None else env
        return cls(
            enabled=_bool(env, "P2P_ENABLED"),
            task_negotiation=_bool(env, Feature.TASK_NEGOTIATION.value),
            federated_memory=_bool(env, Feature.FEDERATED_MEMORY.value),
            gossip=_bool(env, Feature.GOSSIP.value),
            reputation=_bool(env, Feature.REPUTATION.value),
            listen_port=_optional_int(env, "P2P_LISTEN_PORT", low=0, high=65535),
            bootstrap_peers=_peers(env, _scheme(env)),
            max_peers=_int(env, "P2P_MAX_PEERS", 50, low=1),
            gossip_interval_ms=_int(env, "P2P_GOSSIP_INTERVAL", 5000, low=1),
            transport=_scheme(env),
        )

    def listen_address(self, host: str = "0.0.0.0") -> str | None:
        """Where to listen, from ``P2P_LISTEN_PORT`` on ``host`` (None: not set)."""
        if self.listen_port is None:
            return None
        return f"{self.transport}://{host}:{self.listen_port}"

    @property
    def gossip_interval(self) -> float:
        """The gossip interval in seconds."""
        return self.gossip_interval_ms / 1000

    def enables(self, feature: Feature) -> bool:
        return self.enabled and bool(getattr(self, feature.name.lower()))

    def require(self, feature: Feature) -> None:
        """Refuse a call into a service that is off.

        Raises:
            FeatureDisabledError: naming the variable to set.
        """
        if not self.enabled:
            raise FeatureDisabledError(
                f"P2P is disabled: set P2P_ENABLED=true (and {feature.value}=true)"
            )
        if not getattr(self, feature.name.lower()):
            raise FeatureDisabledError(
                f"{feature.name.lower()} is disabled: set {feature.value}=true"
            )


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (true/false)")


def _int(
    env: Mapping[str, str], name: str, default: int, *, low: int, high: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name}={raw!r} is out of range ({bounds})")
    return value


def _optional_int(env: Mapping[str, str], name: str, *, low: int, high: int) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    return _int(env, name, 0, low=low, high=high)


def _scheme(env: Mapping[str, str]) -> str:
    raw = env.get("P2P_TRANSPORT", "tcp").strip() or "tcp"
    if not raw.isalnum():
        raise ConfigError(f"P2P_TRANSPORT={raw!r} is not a URL scheme (such as tcp)")
    return raw


def _peers(env: Mapping[str, str], scheme: str) -> tuple[str, ...]:
    """``host:port`` entries (given ``scheme``), or whole addresses ``scheme://...``."""
    raw = env.get("P2P_BOOTSTRAP_PEERS", "")
    peers = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        if "://" in item:
            peers.append(item)
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"P2P_BOOTSTRAP_PEERS entry {item!r} is not host:port (or scheme://...)"
            )
        peers.append(f"{scheme}://{host}:{port}")
    return tuple(peers)
