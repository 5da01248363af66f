"""The nats:// transport through a real nats-server: the broker relays ciphertext only,
cannot end a link by forging, and a lost peer or server ends links; meshes and node
processes converge through it. (The conformance suite runs on it too.)"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from crdt_mesh import Durability, Identity, Mesh, Replica
from crdt_mesh.errors import AuthenticationError, LinkClosed, RateLimitExceeded, TransportError
from crdt_mesh.testing.natsd import NatsServer
from tests.helpers import wait_for
from tests.integration.test_node_processes import Node
from transports.nats import (
    NatsAddress,
    NatsLimits,
    NatsLink,
    NatsTransport,
    options_from_environment,
)
from transports.noise import XXHandshake
from transports.secure import static_key


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py, the client, is asyncio's only


@asynccontextmanager
async def linked(
    url: str,
    limits: NatsLimits | None = None,
    name: str = "t",
    options: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[NatsLink, NatsLink]]:
    """(dialled, accepted), each through a transport (a connection) of its own;
    ``options``: nats-py's connect options for both."""
    limits = limits or NatsLimits()
    server_id, client_id = Identity.generate(), Identity.generate()
    listener = await NatsTransport(limits, connect_options=options).listen(
        f"{url}/{name}", server_id
    )
    links: list[Any] = []
    try:
        async with anyio.create_task_group() as tg:

            async def accept() -> None:
                links.append(await listener.accept())

            tg.start_soon(accept)
            with anyio.fail_after(10):
                dialled = await NatsTransport(limits, connect_options=options).dial(
                    listener.address, client_id
                )
        links.insert(0, dialled)
        yield links[0], links[1]
    finally:
        with anyio.CancelScope(shield=True):
            for resource in [*links, listener]:
                with contextlib.suppress(Exception):
                    await resource.aclose()


@asynccontextmanager
async def spy(url: str) -> AsyncIterator[list[Any]]:
    """Every message any client publishes under crdt-mesh.>, as another client sees it."""
    seen: list[Any] = []
    client = await nats.connect(url)

    async def record(msg: Any) -> None:
        seen.append(msg)

    await client.subscribe("crdt-mesh.>", cb=record)
    await client.subscribe("_INBOX.>", cb=record)
    try:
        yield seen
    finally:
        await client.close()


def test_addresses_parse_and_print_back() -> None:
    peer = Identity.generate().peer_id
    for text in (f"nats://{peer}@127.0.0.1:4222", "nats://h:1/name-1", f"nats://{peer}@[::1]:9/x"):
        assert str(NatsAddress.parse(text)) == text
    assert NatsAddress.parse(f"nats://{peer}@h:1").subject == f"crdt-mesh.listen.{peer}"
    for bad in ("tcp://h:1", "nats://h", "nats://h:0/x", "nats://h:1/a.b", "nats://zz@h:1"):
        with pytest.raises(TransportError):
            NatsAddress.parse(bad)
    with pytest.raises(TransportError, match="names neither"):
        _ = NatsAddress.parse("nats://h:1").subject


@pytest.mark.anyio
async def test_the_broker_relays_only_ciphertext(nats_server: NatsServer) -> None:
    secret = b"the plan is in the third drawer" * 3
    async with spy(nats_server.url) as seen, linked(nats_server.url) as (dialled, accepted):
        await dialled.send(secret)
        with anyio.fail_after(10):
            assert await accepted.recv() == secret
        await accepted.send(secret)
        with anyio.fail_after(10):
            assert await dialled.recv() == secret
        await wait_for(lambda: len(seen) >= 5)  # three handshake messages, two frames
    assert not [m for m in seen if b"third drawer" in m.data]


@pytest.mark.anyio
async def test_a_forged_or_replayed_message_is_dropped_and_the_link_lives(
    nats_server: NatsServer,
) -> None:
    async with spy(nats_server.url) as seen, linked(nats_server.url) as (dialled, accepted):
        await dialled.send(b"first")
        with anyio.fail_after(10):
            assert await accepted.recv() == b"first"
        await wait_for(lambda: any(m.subject == accepted.inbox for m in seen))
        replay = [m.data for m in seen if m.subject == accepted.inbox][-1]
        client = await nats.connect(nats_server.url)
        try:
            await client.publish(accepted.inbox, b"\x00" * 40)
            await client.publish(accepted.inbox, replay)
            await client.flush()
        finally:
            await client.close()
        await wait_for(lambda: accepted.forged == 2)
        await dialled.send(b"second")
        with anyio.fail_after(10):
            assert await accepted.recv() == b"second"


@pytest.mark.anyio
async def test_a_dialler_that_names_a_peer_is_refused_by_any_other(
    nats_server: NatsServer,
) -> None:
    listener = await NatsTransport().listen(f"{nats_server.url}/impostor", Identity.generate())
    expected = Identity.generate().peer_id
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.accept)
            with anyio.fail_after(10), pytest.raises(AuthenticationError):
                await NatsTransport().dial(
                    f"nats://{expected}@127.0.0.1:{nats_server.port}/impostor",
                    Identity.generate(),
                )
            tg.cancel_scope.cancel()
    finally:
        await listener.aclose()


@pytest.mark.anyio
async def test_an_idle_link_lives_on_its_pings_and_a_silent_peer_ends_it(
    nats_server: NatsServer,
) -> None:
    limits = NatsLimits(keepalive=0.1, dead_after=0.5)
    async with linked(nats_server.url, limits) as (dialled, accepted):
        got: list[bytes] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _receive_into(dialled, got))
            with anyio.fail_after(10):
                with anyio.move_on_after(1.5):  # three times dead_after, nothing but pings
                    got.append(await accepted.recv())
            assert got == []
            await dialled.send(b"still here")
            with anyio.fail_after(10):
                assert await accepted.recv() == b"still here"
            # the dialler's process "dies": its connection goes, no CLOSE is sent
            await dialled._connection.client.close()
            with anyio.fail_after(10), pytest.raises(LinkClosed, match="nothing heard"):
                await accepted.recv()
            tg.cancel_scope.cancel()


async def _receive_into(link: NatsLink, got: list[bytes]) -> None:
    with contextlib.suppress(LinkClosed):
        async for frame in link:
            got.append(frame)


@pytest.mark.anyio
async def test_a_peer_that_sends_more_than_is_read_loses_the_link(
    nats_server: NatsServer,
) -> None:
    limits = NatsLimits(max_frame=1_000, max_unread=4_000)
    async with linked(nats_server.url, limits) as (dialled, accepted):
        with contextlib.suppress(LinkClosed):
            for _ in range(10):
                await dialled.send(b"x" * 1_000)
        await wait_for(lambda: accepted._ended is not None)
        with pytest.raises(RateLimitExceeded, match="not yet read"):
            while True:
                await accepted.recv()  # what came before the limit is still read


@pytest.mark.anyio
async def test_a_listener_answers_no_more_openings_than_its_limit(
    nats_server: NatsServer,
) -> None:
    """Openings that never finish hold a listener's slots until their deadline; the rest
    are dropped unanswered, and once the deadline passes an honest dial gets through."""
    limits = NatsLimits(max_handshakes=4, handshake_timeout=1.0)
    server = Identity.generate()
    listener = await NatsTransport(limits).listen(f"{nats_server.url}/busy", server)
    answers: list[Any] = []
    client = await nats.connect(nats_server.url)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, _hold)

            async def answered(msg: Any) -> None:
                answers.append(msg)

            await client.subscribe("crdt-mesh.link.attacker.*", cb=answered)
            for i in range(20):
                opening = XXHandshake(
                    initiator=True, static=static_key(Identity.generate()), prologue=b"x"
                ).write_message()
                await client.publish(
                    "crdt-mesh.listen.busy", opening, reply=f"crdt-mesh.link.attacker.{i}"
                )
            await client.flush()
            await wait_for(lambda: listener.refused >= 16)
            await anyio.sleep(0.2)  # nothing more is answered meanwhile (no wait to end)
            assert len(answers) == 4
            with anyio.fail_after(10):
                link = await NatsTransport(limits).dial(listener.address, Identity.generate())
            assert link.remote == server.peer_id
            await link.aclose()
            tg.cancel_scope.cancel()
    finally:
        await client.close()
        await listener.aclose()


async def _hold(link: Any) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await link.aclose()


@pytest.mark.anyio
async def test_losing_the_server_ends_every_link_and_dials_work_once_it_is_back(
    tmp_path: Path,
) -> None:
    server = NatsServer()
    server.start()
    try:
        async with linked(server.url) as (dialled, accepted):
            server.stop()
            for link in (dialled, accepted):
                with anyio.fail_after(10), pytest.raises(LinkClosed, match="lost"):
                    await link.recv()
            server.start()
            transport, identity = NatsTransport(), Identity.generate()
            listener = await transport.listen(f"{server.url}/again", identity)
            try:
                accepted_again: list[NatsLink] = []
                async with anyio.create_task_group() as tg:

                    async def accept() -> None:
                        accepted_again.append(await listener.accept())

                    tg.start_soon(accept)
                    with anyio.fail_after(20):
                        again = await NatsTransport().dial(listener.address, Identity.generate())
                    assert again.remote == identity.peer_id
                    await again.aclose()
            finally:
                for link in accepted_again:
                    await link.aclose()
                await listener.aclose()
    finally:
        server.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_it_says_it_needs_asyncio(anyio_backend: str) -> None:
    with pytest.raises(TransportError, match="asyncio"):
        await NatsTransport().dial("nats://127.0.0.1:4222/x", Identity.generate())


@pytest.mark.anyio
async def test_two_meshes_converge_through_nats(nats_server: NatsServer, tmp_path: Path) -> None:
    """Found by scheme, as a user would: no transport is passed."""
    a_id, b_id = Identity.generate(), Identity.generate()
    with (
        Replica.open(tmp_path / "a", a_id, durability=Durability.PROCESS) as a,
        Replica.open(tmp_path / "b", b_id, durability=Durability.PROCESS) as b,
    ):
        async with Mesh(a, listen=nats_server.url, interval=0.05) as mesh_a:
            address = mesh_a.address
            assert address == f"nats://{a_id.peer_id}@127.0.0.1:{nats_server.port}"
            async with Mesh(b, peers=[address], interval=0.05):
                notes = a.document("notes")
                with notes.transaction():
                    notes.map("m")["hello"] = "through the broker"
                await wait_for(lambda: b.heads() == a.heads())
                assert b.document("notes").map("m")["hello"] == "through the broker"


@pytest.mark.slow
def test_node_processes_listen_on_nats_and_converge(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nodes: list[Node] = []
    try:
        first = Node(tmp_path, "n0", [], writes=10, listen=nats_server.url)
        nodes.append(first)
        assert first.address.startswith("nats://") and first.peer_id in first.address
        for i in (1, 2):
            node = Node(tmp_path, f"n{i}", [first.address], writes=10, listen=nats_server.url)
            nodes.append(node)
        for node in nodes:
            node.entries(30)
        for node in nodes:
            assert node.stop() == 0
    finally:
        for node in nodes:
            node.close()


@pytest.mark.anyio
async def test_what_arrives_before_a_handshake_completes_is_bounded() -> None:
    """A half-open link (an opening answered, the third message not yet in) holds at
    most a MiB of what its inbox receives; past it the link ends."""

    class Connection:
        def __init__(self) -> None:
            self.links: dict[str, Any] = {}

        def inbox(self, link: str) -> str:
            return f"crdt-mesh.link.x.{link}"

    link = NatsLink(NatsTransport(), Connection())  # type: ignore[arg-type]
    for _ in range(17):
        link._deliver(b"\x00" * 65_000, "crdt-mesh.link.y.z")
    assert link._ended is not None and "before the handshake" in str(link._ended)
    assert len(link._handshake) <= 16


@pytest.mark.anyio
async def test_a_server_that_cannot_be_reached_is_a_typed_error_not_a_wait() -> None:
    """nats-py retries a first connection forever when reconnecting is allowed (as it
    is here, for connections that were up): a wrong address must not hang a node."""
    port = NatsServer().port  # free: nothing listens there
    limits = NatsLimits(connect_timeout=1.0)
    with anyio.fail_after(15), pytest.raises(TransportError, match="cannot reach"):
        await NatsTransport(limits, connect_options={}).listen(
            f"nats://127.0.0.1:{port}/x", Identity.generate()
        )


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA made here (trustme), a server certificate for 127.0.0.1 and a client one."""
    trustme = pytest.importorskip("trustme", reason="the dev extra installs trustme")
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    files = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key", "ccert", "ckey")}
    ca.cert_pem.write_to_path(files["ca"])
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(files["cert"])
    server.private_key_pem.write_to_path(files["key"])
    client = ca.issue_cert("crdt-mesh-client")
    client.cert_chain_pems[0].write_to_path(files["ccert"])
    client.private_key_pem.write_to_path(files["ckey"])
    return files


@pytest.mark.anyio
async def test_over_a_server_that_requires_tls_links_form_with_the_ca_from_the_environment(
    tls_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node reads NATS_CA as the nats command does; a transport that does not trust
    the server's CA is refused with a typed error, not left waiting."""
    server = NatsServer(tls=(tls_files["cert"], tls_files["key"]))
    server.start()
    try:
        untrusting = NatsTransport(NatsLimits(connect_timeout=2.0), connect_options={})
        with pytest.raises(TransportError, match=r"cannot reach .*CERTIFICATE_VERIFY_FAILED"):
            with anyio.fail_after(20):
                await untrusting.listen(server.url, Identity.generate())
        monkeypatch.setenv("NATS_CA", str(tls_files["ca"]))
        options = options_from_environment()
        assert isinstance(options["tls"], ssl.SSLContext)
        async with linked(server.url, options=None) as (dialled, accepted):
            await dialled.send(b"over TLS, and Noise inside it")
            with anyio.fail_after(10):
                assert await accepted.recv() == b"over TLS, and Noise inside it"
    finally:
        server.stop()


def test_nats_options_from_the_environment_are_checked_before_use(
    tls_files: dict[str, Path], tmp_path: Path
) -> None:
    assert options_from_environment({}) == {}
    with_client = options_from_environment(
        {
            "NATS_CA": str(tls_files["ca"]),
            "NATS_CERT": str(tls_files["ccert"]),
            "NATS_KEY": str(tls_files["ckey"]),
        }
    )
    assert isinstance(with_client["tls"], ssl.SSLContext)
    combined = tmp_path / "client.pem"  # the key in the certificate's file: NATS_KEY unset
    combined.write_bytes(tls_files["ccert"].read_bytes() + tls_files["ckey"].read_bytes())
    assert isinstance(options_from_environment({"NATS_CERT": str(combined)})["tls"], ssl.SSLContext)
    creds = tmp_path / "user.creds"
    creds.write_text("not checked here: the server judges it")
    assert options_from_environment({"NATS_CREDS": str(creds)}) == {"user_credentials": str(creds)}
    for wrong in (
        {"NATS_CERT": str(tls_files["ccert"])},  # its key nowhere
        {"NATS_KEY": str(tls_files["ckey"])},  # a key without its certificate
        {"NATS_CA": str(tmp_path / "missing.pem")},
        {"NATS_CA": str(creds)},  # not PEM
        {"NATS_CREDS": str(tmp_path / "missing.creds")},
    ):
        with pytest.raises(TransportError):
            options_from_environment(wrong)
