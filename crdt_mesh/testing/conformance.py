"""A conformance suite for transports: the same tests against every adapter.

Subclass :class:`TransportConformance` in a test module, say how to make your
transport and its addresses, and pytest runs every test below against it, on
asyncio and on trio::

    from crdt_mesh.testing.conformance import TransportConformance

    class TestUnixTransport(TransportConformance):
        def make_transport(self):
            return UnixTransport()

        def listen_address(self):
            return f"unix://{tempfile.mktemp()}"

        def unreachable_address(self):
            return "unix:///nonexistent/socket"

Each test makes a listener and links of its own and closes them, pass or fail.
Requires pytest and the anyio pytest plugin (both test dependencies).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from ..errors import LinkClosed, TransportError
from ..identity import Identity
from ..runtime.transport import Link, Listener, Transport


class TransportConformance:
    """Tests every transport must pass. Override the three methods below."""

    pytestmark = pytest.mark.anyio
    #: the largest frame the tests send (your transport's limit, if lower)
    large_frame = 1 << 20

    def make_transport(self) -> Transport:
        raise NotImplementedError

    def listen_address(self) -> str:
        """A fresh address to listen on (a port of 0 is fine)."""
        raise NotImplementedError

    def unreachable_address(self) -> str:
        """An address nobody listens on: a dial to it must fail."""
        raise NotImplementedError

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    # -- helpers ---------------------------------------------------------------------------

    @asynccontextmanager
    async def pair(self) -> AsyncIterator[tuple[Link, Link, Identity, Identity]]:
        """(dialled link, accepted link, dialler's identity, listener's identity)."""
        server_id, client_id = Identity.generate(), Identity.generate()
        transport = self.make_transport()
        listener = await transport.listen(self.listen_address(), server_id)
        opened: list[Any] = [listener]
        try:
            accepted: list[Link] = []
            async with anyio.create_task_group() as tg:

                async def accept() -> None:
                    accepted.append(await listener.accept())

                tg.start_soon(accept)
                with anyio.fail_after(10):
                    dialled = await transport.dial(listener.address, client_id)
                opened.append(dialled)
            opened.append(accepted[0])
            yield dialled, accepted[0], client_id, server_id
        finally:
            with anyio.CancelScope(shield=True):
                for resource in reversed(opened):
                    with contextlib.suppress(Exception):
                        await resource.aclose()

    # -- the tests --------------------------------------------------------------------------

    async def test_links_name_the_peer_at_the_other_end(self) -> None:
        async with self.pair() as (dialled, accepted, client, server):
            assert dialled.remote == server.peer_id
            assert accepted.remote == client.peer_id

    async def test_frames_arrive_whole_and_in_order_both_ways(self) -> None:
        frames = [bytes([i % 256]) * (i * 37 % 5000) for i in range(200)]
        async with self.pair() as (dialled, accepted, _, _):
            got: list[bytes] = []
            # Read while sending: a link may hold only a socket buffer's worth in flight.
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:

                    async def receive() -> None:
                        for _ in frames:
                            got.append(await accepted.recv())

                    tg.start_soon(receive)
                    for frame in frames:
                        await dialled.send(frame)
            assert got == frames
            await accepted.send(b"back")
            with anyio.fail_after(10):
                assert await dialled.recv() == b"back"

    async def test_a_large_frame_arrives_whole(self) -> None:
        frame = bytes(range(256)) * (self.large_frame // 256)
        async with self.pair() as (dialled, accepted, _, _):
            got: list[bytes] = []
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:

                    async def receive() -> None:
                        got.append(await accepted.recv())

                    tg.start_soon(receive)
                    await dialled.send(frame)
            assert got == [frame]

    async def test_concurrent_sends_each_arrive_in_their_own_order(self) -> None:
        async with self.pair() as (dialled, accepted, _, _):

            async def sender(tag: int) -> None:
                for n in range(50):
                    await dialled.send(bytes([tag]) + n.to_bytes(2, "big"))

            got: list[bytes] = []

            async def receive() -> None:
                for _ in range(250):
                    got.append(await accepted.recv())

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(receive)
                    for tag in range(5):
                        tg.start_soon(sender, tag)
            for tag in range(5):
                mine = [int.from_bytes(f[1:], "big") for f in got if f[0] == tag]
                assert mine == list(range(50))

    @pytest.mark.parametrize("closer", ["dialler", "listener's side"])
    async def test_closing_either_end_ends_the_other(self, closer: str) -> None:
        async with self.pair() as (dialled, accepted, _, _):
            gone, other = (dialled, accepted) if closer == "dialler" else (accepted, dialled)
            await gone.aclose()
            await gone.aclose()  # idempotent
            with pytest.raises(LinkClosed):
                await gone.send(b"after close")
            with anyio.fail_after(10), pytest.raises(LinkClosed):
                await other.recv()
            with anyio.fail_after(10):
                assert [f async for f in other] == []  # iteration ends

    async def test_a_dial_that_cannot_succeed_is_a_transport_error(self) -> None:
        transport = self.make_transport()
        with anyio.fail_after(20), pytest.raises(TransportError):
            await transport.dial(self.unreachable_address(), Identity.generate())

    async def test_serve_hands_over_links_concurrently_and_ends_when_closed(self) -> None:
        server = Identity.generate()
        transport = self.make_transport()
        listener: Listener = await transport.listen(self.listen_address(), server)
        served: list[Link] = []
        release = anyio.Event()

        async def handler(link: Link) -> None:
            served.append(link)
            await release.wait()  # a handler that takes its time holds up no other
            await link.aclose()

        ended: list[BaseException] = []

        async def serve() -> None:
            try:
                await listener.serve(handler)
            except TransportError as exc:
                ended.append(exc)

        links: list[Link] = []
        clients = [Identity.generate() for _ in range(3)]
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                with anyio.fail_after(10):
                    for client in clients:
                        links.append(await transport.dial(listener.address, client))
                    while len(served) < 3:
                        await anyio.sleep(0.01)
                release.set()
                await listener.aclose()
                with anyio.fail_after(10):
                    while not ended:
                        await anyio.sleep(0.01)
        finally:
            with anyio.CancelScope(shield=True):
                for link in links:
                    await link.aclose()
                await listener.aclose()
        assert {link.remote for link in served} == {c.peer_id for c in clients}
        assert isinstance(ended[0], TransportError)


__all__ = ["TransportConformance"]
