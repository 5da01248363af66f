"""Serve a mesh's metrics to a Prometheus: ``GET /metrics`` in its text format.

The exposition format is prometheus-client's (the optional extra
``crdt_mesh[metrics]``); the HTTP server is ours, a few lines on anyio, so that
the metrics are collected in the event loop's thread, where the mesh's state
lives (prometheus-client's own server would read it from a thread of its own).
It answers one small request per connection and closes it: a request larger
than :data:`MAX_REQUEST` bytes, or slower than :data:`REQUEST_SECONDS`, is
dropped, and at most :data:`MAX_CLIENTS` are served at once (one more is closed
at once). Bind it to a
loopback or private address: metrics say much about a node.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import anyio
from anyio.abc import Listener, SocketAttribute, SocketStream

from .errors import ConfigError, MissingExtra
from .metrics import Family, Kind, Metrics

#: Bytes of a request read at most (a scrape is one short GET).
MAX_REQUEST = 8192
#: Seconds a client has to send its request.
REQUEST_SECONDS = 5.0
#: Requests served at once; more wait for a slot.
MAX_CLIENTS = 8


def _client() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
        import prometheus_client.registry
    except ImportError:
        raise MissingExtra(
            "serving metrics needs prometheus-client: pip install 'crdt_mesh[metrics]'"
        ) from None
    return prometheus_client


class _Collector:
    """Our families as prometheus-client's metric families."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        core = _client().core
        for family in self._metrics.collect():
            yield _convert(core, family)


def _convert(core: Any, family: Family) -> Any:
    name = family.name.removesuffix("_total") if family.kind is Kind.COUNTER else family.name
    labels = sorted({label for sample in family.samples for label, _ in sample.labels})
    if family.kind is Kind.HISTOGRAM:
        out = core.HistogramMetricFamily(name, family.help, labels=labels)
        for sample in family.samples:
            buckets = [(_bound(b), n) for b, n in sample.buckets]
            out.add_metric(_values(sample.labels, labels), buckets, sample.value)
        return out
    kind = core.CounterMetricFamily if family.kind is Kind.COUNTER else core.GaugeMetricFamily
    out = kind(name, family.help, labels=labels)
    for sample in family.samples:
        out.add_metric(_values(sample.labels, labels), sample.value)
    return out


def _bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _values(pairs: tuple[tuple[str, str], ...], labels: list[str]) -> list[str]:
    given = dict(pairs)
    return [given.get(label, "") for label in labels]


def exposition(metrics: Metrics) -> tuple[bytes, str]:
    """``metrics`` now, in Prometheus's text format, and its content type.

    Raises:
        MissingExtra: prometheus-client is not installed.
    """
    client = _client()
    registry = client.registry.CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics))
    return client.generate_latest(registry), client.CONTENT_TYPE_LATEST


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a host and a port.

    Raises:
        ConfigError: not such an address.
    """
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"metrics address {address!r}: expected host:port")
    return host, int(port)


class MetricsServer:
    """``GET /metrics`` for one :class:`~crdt_mesh.metrics.Metrics`, on a bound socket.

    ``server = await MetricsServer.bind(mesh.metrics, "127.0.0.1:9100")`` (port 0
    picks one: :attr:`url` says which), then ``await server.serve()`` in a task of
    the mesh's event loop until cancelled.
    """

    def __init__(self, metrics: Metrics, listener: Listener[SocketStream]) -> None:
        self._metrics = metrics
        self._listener = listener
        bound = listener.extra(SocketAttribute.local_address)
        host = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        #: where it serves
        self.url = f"http://{host}:{bound[1]}/metrics"

    @classmethod
    async def bind(cls, metrics: Metrics, address: str) -> MetricsServer:
        """Listen on ``address`` (``host:port``).

        Raises:
            MissingExtra: prometheus-client is not installed (checked first).
            ConfigError: the address is malformed.
            OSError: it cannot listen there (the port is taken, the host not ours).
        """
        _client()
        host, port = parse_address(address)
        return cls(metrics, await anyio.create_tcp_listener(local_host=host, local_port=port))

    async def serve(self) -> None:
        """Answer scrapes until cancelled; the socket is closed then."""
        serving = 0

        async def serve(stream: SocketStream) -> None:
            # One past the limit is closed at once: waiting, each would hold a socket.
            nonlocal serving
            async with stream:
                if serving >= MAX_CLIENTS:
                    return
                serving += 1
                try:
                    await _answer(stream, self._metrics)
                finally:
                    serving -= 1

        async with self._listener:
            await self._listener.serve(serve)


async def _answer(stream: SocketStream, metrics: Metrics) -> None:
    request = bytearray()
    with anyio.move_on_after(REQUEST_SECONDS):
        while b"\r\n\r\n" not in request and len(request) <= MAX_REQUEST:
            try:
                request += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
    line = bytes(request).split(b"\r\n", 1)[0].split(b" ")
    if b"\r\n\r\n" not in request or len(request) > MAX_REQUEST or len(line) != 3:
        await _send(stream, 400, b"Bad Request\n", "text/plain")
    elif line[0] not in (b"GET", b"HEAD"):
        await _send(stream, 405, b"GET /metrics only\n", "text/plain")
    elif line[1].split(b"?", 1)[0] != b"/metrics":
        await _send(stream, 404, b"GET /metrics only\n", "text/plain")
    else:
        body, content_type = exposition(metrics)
        await _send(stream, 200, body if line[0] == b"GET" else b"", content_type, len(body))


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


async def _send(
    stream: SocketStream, status: int, body: bytes, content_type: str, length: int | None = None
) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        "Connection: close\r\n\r\n"
    )
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await stream.send(head.encode() + body)


__all__ = [
    "MAX_CLIENTS",
    "MAX_REQUEST",
    "REQUEST_SECONDS",
    "MetricsServer",
    "exposition",
    "parse_address",
]
