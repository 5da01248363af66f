"""TCP links: real sockets on loopback, Noise XX, identities proven both ways."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mesh import AuthenticationError, Durability, Identity, Replica, TransportError
from crdt_mesh.errors import LinkClosed
from crdt_mesh.identity import Domain
from crdt_mesh.mesh import Mesh
from tests.helpers import wait_for
from transports.noise import HandshakeError, public_key
from transports.secure import _check_binding, static_key
from transports.tcp import (
    TcpAddress,
    TcpLimits,
    TcpLink,
    TcpListener,
    TcpTransport,
)

R = TypeVar("R")


@pytest.fixture
async def keep() -> AsyncIterator[Callable[[R], R]]:
    """``keep(resource)`` returns it, and closes it when the test ends, pass or fail: a
    failing test must not leave listeners and sockets behind for its neighbours."""
    kept: list[Any] = []

    def register(resource: R) -> R:
        kept.append(resource)
        return resource

    yield register
    with anyio.CancelScope(shield=True):
        for resource in reversed(kept):
            with contextlib.suppress(Exception):
                await resource.aclose()


async def _connect(
    transport: TcpTransport, listener: TcpListener, address: str, identity: Identity
) -> tuple[TcpLink, TcpLink]:
    """Dial ``address`` while the listener accepts: (dialled link, accepted link)."""
    accepted: list[TcpLink] = []

    async def accept() -> None:
        accepted.append(await listener.accept())

    async with anyio.create_task_group() as tg:
        tg.start_soon(accept)
        link = await transport.dial(address, identity)
    return link, accepted[0]


def test_addresses_parse_and_print() -> None:
    peer = Identity.generate().peer_id
    assert TcpAddress.parse("tcp://127.0.0.1:9000") == TcpAddress("127.0.0.1", 9000)
    assert TcpAddress.parse("tcp://[::1]:80") == TcpAddress("::1", 80)
    assert TcpAddress.parse(f"tcp://{peer}@localhost:1").peer == peer
    assert str(TcpAddress("::1", 80, peer)) == f"tcp://{peer}@[::1]:80"
    for bad in (
        "udp://x:1",
        "tcp://nohost",
        "tcp://:1",
        "tcp://h:99999",
        "tcp://h:x",
        "tcp://bad@h:1",
    ):
        with pytest.raises(TransportError):
            TcpAddress.parse(bad)


@pytest.mark.anyio
async def test_link_proves_identities_and_carries_frames(keep: Callable[[Any], Any]) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    transport = TcpTransport()
    listener = keep(await transport.listen("tcp://127.0.0.1:0", alice))
    address = listener.address.replace("tcp://", f"tcp://{alice.peer_id}@")
    link, server = await _connect(transport, listener, address, bob)
    keep(link), keep(server)
    assert link.remote == alice.peer_id and server.remote == bob.peer_id
    big = bytes(range(256)) * 1000  # several Noise messages
    await link.send(big)
    await link.send(b"")
    assert await server.recv() == big
    assert await server.recv() == b""
    await server.send(b"pong")
    assert await link.recv() == b"pong"
    await link.aclose()
    with pytest.raises(LinkClosed):
        await server.recv()
    await listener.aclose()


@pytest.mark.anyio
async def test_a_peer_that_is_not_the_one_dialled_is_refused(keep: Callable[[Any], Any]) -> None:
    alice, bob, carol = Identity.generate(), Identity.generate(), Identity.generate()
    transport = TcpTransport()
    listener = keep(await transport.listen("tcp://127.0.0.1:0", alice))
    async with anyio.create_task_group() as tg:
        tg.start_soon(_accept_quietly, listener)
        address = listener.address.replace("tcp://", f"tcp://{carol.peer_id}@")
        with pytest.raises(AuthenticationError):
            await transport.dial(address, bob)
        tg.cancel_scope.cancel()
    await listener.aclose()


async def _close_link(link: Any) -> None:
    await link.aclose()


async def _accept_quietly(listener: object) -> None:
    with contextlib.suppress(TransportError):
        await listener.accept()  # type: ignore[attr-defined]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "opening",
    [
        b"garbage instead of a handshake",
        b"\x00\x20" + b"\x01" * 10,
        b"\x00\x00",
        b"\xff\xff" + b"x" * 100,
    ],
)
async def test_garbage_and_truncated_handshakes_are_refused(
    opening: bytes, keep: Callable[[Any], Any]
) -> None:
    alice = Identity.generate()
    transport = TcpTransport(TcpLimits(handshake_timeout=0.5))
    listener = keep(await transport.listen("tcp://127.0.0.1:0", alice))
    parsed = TcpAddress.parse(listener.address)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_accept_quietly, listener)
        stream = keep(await anyio.connect_tcp(parsed.host, parsed.port))
        await stream.send(opening)
        await stream.send_eof()
        await wait_for(lambda: listener.refused == 1, timeout=5)
        await stream.aclose()
        tg.cancel_scope.cancel()
    await listener.aclose()


@pytest.mark.anyio
async def test_meshes_converge_over_tcp(tmp_path: Path) -> None:
    replicas = [
        Replica.open(tmp_path / f"r{i}", Identity.generate(), durability=Durability.PROCESS)
        for i in range(3)
    ]
    try:
        transport = TcpTransport()
        async with Mesh(replicas[0], transport, listen="tcp://127.0.0.1:0", interval=0.05) as hub:
            assert hub.address is not None
            async with (
                Mesh(replicas[1], transport, peers=[hub.address], interval=0.05),
                Mesh(replicas[2], transport, peers=[hub.address], interval=0.05),
            ):
                for i, replica in enumerate(replicas):
                    notes = replica.document("notes")
                    with notes.transaction():
                        notes.map("m")[str(i)] = i
                await wait_for(
                    lambda: (
                        all(r.heads() == replicas[0].heads() for r in replicas)
                        and len(replicas[0].heads()) == 3
                    )
                )
    finally:
        for replica in replicas:
            replica.close()


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=300))
def test_the_listener_survives_any_opening_bytes(data: bytes) -> None:
    """Fuzz: whatever a client sends first, the listener refuses it and keeps serving."""

    async def main() -> None:
        alice, bob = Identity.generate(), Identity.generate()
        transport = TcpTransport(TcpLimits(handshake_timeout=0.3))
        listener = await transport.listen("tcp://127.0.0.1:0", alice)
        parsed = TcpAddress.parse(listener.address)
        opened: list[Any] = [listener]
        try:
            async with anyio.create_task_group() as tg:

                async def accept() -> None:
                    opened.append(await listener.accept())

                tg.start_soon(accept)
                stream = await anyio.connect_tcp(parsed.host, parsed.port)
                opened.append(stream)
                await stream.send(data)
                await stream.send_eof()
                with anyio.fail_after(5):  # an honest peer still gets in
                    opened.append(await transport.dial(listener.address, bob))
            assert any(getattr(o, "remote", None) == bob.peer_id for o in opened)
        finally:
            with anyio.CancelScope(shield=True):
                for resource in reversed(opened):
                    with contextlib.suppress(Exception):
                        await resource.aclose()

    anyio.run(main)


def test_a_binding_that_claims_someone_elses_key_is_refused() -> None:
    """A peer that puts another's Ed25519 key in its handshake cannot sign for it."""
    mallory, victim = Identity.generate(), Identity.generate()
    static = static_key(mallory)
    forged = cbor2.dumps(
        [1, victim.peer_id.key, mallory.sign(Domain.NOISE_STATIC, public_key(static))]
    )
    with pytest.raises(HandshakeError):
        _check_binding(forged, public_key(static))
    honest = cbor2.dumps(
        [
            1,
            mallory.peer_id.key,
            mallory.sign(Domain.NOISE_STATIC, public_key(static)),
        ]
    )
    assert _check_binding(honest, public_key(static)) == mallory.peer_id
    with pytest.raises(HandshakeError):  # a valid binding of another static key
        _check_binding(honest, public_key(static_key(victim)))


@pytest.mark.anyio
async def test_garbage_after_the_handshake_kills_the_link(keep: Callable[[Any], Any]) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    transport = TcpTransport()
    listener = keep(await transport.listen("tcp://127.0.0.1:0", alice))
    link, server = await _connect(transport, listener, listener.address, bob)
    keep(link), keep(server)
    await link._stream.send(b"\x00\x20" + b"\x42" * 32)  # a Noise message that fails to decrypt
    with pytest.raises(LinkClosed, match="authentication"):
        await server.recv()
    await link.aclose()
    await listener.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "limits",
    [
        TcpLimits(handshakes_per_second=2.0),  # past the rate of handshakes begun
        TcpLimits(max_handshakes_per_host=3, handshake_timeout=30.0),  # past those in flight
    ],
    ids=["rate", "in-flight"],
)
async def test_a_burst_of_dials_from_one_host_past_its_limits_is_turned_away_not_charged(
    keep: Callable[[Any], Any], limits: TcpLimits
) -> None:
    """Forty agents on one machine join at once, all dialling the same seed: past the
    host's rate of handshakes begun, or its handshakes in flight, connections are
    closed before any handshake work (so the work stays bounded), but many dials prove
    nothing against the host: no offence is counted, and the host stays welcome."""
    from crdt_mesh.runtime.penalty import Penalties

    alice = Identity.generate()
    penalties = Penalties()
    transport = TcpTransport(limits, penalties=penalties)
    listener = keep(await transport.listen("tcp://127.0.0.1:0", alice))
    parsed = TcpAddress.parse(listener.address)

    async def serve() -> None:
        with contextlib.suppress(TransportError):
            await listener.serve(_close_link)

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        streams = [await anyio.connect_tcp(parsed.host, parsed.port) for _ in range(20)]
        await wait_for(lambda: listener.refused >= 10, timeout=5)  # turned away
        for stream in streams:
            await stream.aclose()
        assert not any(penalties.offences.values()), penalties.offences
        assert not penalties.refused(("tcp-host", parsed.host), anyio.current_time())
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_dialler_that_gives_up_mid_handshake_does_not_get_its_host_refused(
    keep: Callable[[Any], Any],
) -> None:
    """Agents behind one address (a NAT, one machine) abandon dials under load; a
    connection closed during the handshake costs the listener a little work, bounded
    by the per-host rate: it is not an offence, so the host stays welcome. A handshake
    that times out (a trickle) still is."""
    from crdt_mesh.runtime.penalty import Penalties

    alice = Identity.generate()
    penalties = Penalties()
    transport = TcpTransport(TcpLimits(handshake_timeout=0.5), penalties=penalties)
    listener = keep(await transport.listen("tcp://127.0.0.1:0", alice))
    parsed = TcpAddress.parse(listener.address)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_accept_quietly, listener)
        for attempt in range(12):
            stream = await anyio.connect_tcp(parsed.host, parsed.port)
            await stream.send(b"\x00\x20" + b"\x01" * 10)  # part of a first message
            await stream.aclose()  # and gives up
            await wait_for(lambda attempt=attempt: listener.refused == attempt + 1, timeout=5)
            await anyio.sleep(0.06)  # (within the per-host rate of handshakes)
        assert not penalties.refused(("tcp-host", parsed.host), anyio.current_time())
        tg.cancel_scope.cancel()
    link, accepted = await _connect(transport, listener, listener.address, Identity.generate())
    await link.aclose()
    await accepted.aclose()
