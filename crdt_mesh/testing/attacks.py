"""A hostile peer's attacks, to check that a node holds: the tests and the hostile
benchmark run them against live nodes, and you can run them against your own.

Each attack is a coroutine that dials a node through any
:class:`~crdt_mesh.transport.Transport` (or, for the handshake stall, opens raw
TCP connections) and returns what it observed. They are the five holes of
crdt_mesh's issue 10, closed since; ``docs/security.md`` says what a node promises.

* :func:`amplify` - ask for the whole key range many times in one frame (now a
  protocol breach), then claim to lack everything round after round.
* :func:`stall_handshakes` - open TCP connections and send nothing, or a byte at a time.
* :func:`flood_pending` - send entries signed by the attacker's own key whose first
  entry never comes, to fill the node's pending area.
* :func:`copy_sealed_bid` - copy a rival's sealed bid into one's own section.
* :func:`abuse_broadcasts` - relay a broadcast past its signed hop ceiling, and
  replay one older than the window.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import anyio
import cbor2
import pycrdt

from ..errors import LinkClosed, MeshError
from ..identity import Identity, PeerId
from ..ledger import ZERO_HASH, DocumentId, Entry, Policy, client_id_for
from ..replica.replica import Replica
from ..runtime.transport import Link, Transport
from ..services.gossip.epidemic import Broadcaster
from ..services.tasks import TaskRef
from ..sync.index import KEY_MAX
from ..sync.messages import (
    PROTOCOL_VERSION,
    Broadcast,
    Entries,
    Fingerprint,
    Hello,
    Items,
    Reconcile,
    decode,
    encode,
)

_WHOLE = (b"", KEY_MAX)


@dataclass(frozen=True, slots=True)
class AmplifyResult:
    """What :func:`amplify` saw: whether the repeated-range frame was refused, the
    bytes of entries it was sent in each greedy round, and of those, the entries that
    came again in the same round and their bytes (an entry the node committed while it
    answered may come both pushed and in the answer)."""

    breach_refused: bool
    entry_bytes_by_round: tuple[int, ...]
    copies_by_round: tuple[int, ...] = ()
    copy_bytes_by_round: tuple[int, ...] = ()


async def _hello(link: Link) -> None:
    await link.send(encode(Hello(PROTOCOL_VERSION, 1 << 20)))


class _Received:
    """The entries of one round, by their stored bytes (packed, they took fewer)."""

    def __init__(self) -> None:
        self.entries: set[bytes] = set()
        self.bytes = 0
        self.copies = 0
        self.copy_bytes = 0

    def add(self, message: Entries) -> None:
        for item in message.items:
            stored = item.encoded if isinstance(item, Entry) else bytes(item)
            self.bytes += len(stored)
            if stored in self.entries:
                self.copies += 1
                self.copy_bytes += len(stored)
            else:
                self.entries.add(stored)


async def _next_reconcile(link: Link, counted: _Received) -> Reconcile:
    """Read frames until a reconcile arrives; count the entries seen."""
    while True:
        message = decode(await link.recv())
        if isinstance(message, Entries):
            counted.add(message)
        elif isinstance(message, Reconcile):
            return message


async def _drain(link: Link, counted: _Received, quiet: float, limit: float = 5.0) -> None:
    """Read entries frames until none came for ``quiet`` seconds (or ``limit`` passed:
    a node whose peers keep writing pushes fresh entries all the time)."""
    with anyio.move_on_after(limit):
        while True:
            with anyio.move_on_after(quiet) as scope:
                message = decode(await link.recv())
                if isinstance(message, Entries):
                    counted.add(message)
            if scope.cancelled_caught:
                return


async def amplify(
    transport: Transport,
    address: str,
    identity: Identity,
    *,
    greedy_rounds: int = 3,
    quiet: float = 0.5,
) -> AmplifyResult:
    """Open a round, answer it with 1,024 parts that each ask for the whole range (the
    frame that once made a node queue its store 1,024 times), then, on a new link,
    claim to lack everything in ``greedy_rounds`` rounds and count what comes back."""
    opener = encode(Reconcile(1, 0, (Fingerprint(*_WHOLE, b"\x00" * 16, 0),)))
    breach_refused = False
    link = await transport.dial(address, identity)
    try:
        await _hello(link)
        await link.send(opener)
        with anyio.fail_after(10):
            await _next_reconcile(link, _Received())
        flood = cbor2.dumps([1, 1, 2, [[1, b"", b"", [], False]] * 1024])
        await link.send(flood)
        with anyio.move_on_after(5.0):
            try:
                while True:
                    await link.recv()
            except LinkClosed:
                breach_refused = True
    finally:
        await link.aclose()
    sent: list[int] = []
    copies: list[tuple[int, int]] = []
    try:
        link = await transport.dial(address, identity)
    except MeshError:
        return AmplifyResult(breach_refused, ())
    try:
        await _hello(link)
        for round_ in range(1, greedy_rounds + 1):
            counted = _Received()
            await link.send(encode(Reconcile(round_, 0, (Fingerprint(*_WHOLE, b"\x00" * 16, 0),))))
            with anyio.fail_after(10):
                questions = await _next_reconcile(link, counted)
            answer = tuple(
                Items(q.lower, q.upper, (), isinstance(q, Fingerprint)) for q in questions.parts
            )
            await link.send(encode(Reconcile(round_, 2, answer)))
            await _drain(link, counted, quiet)
            sent.append(counted.bytes)
            copies.append((counted.copies, counted.copy_bytes))
    except LinkClosed:
        pass
    finally:
        await link.aclose()
    return AmplifyResult(
        breach_refused, tuple(sent), tuple(c for c, _ in copies), tuple(b for _, b in copies)
    )


async def stall_handshakes(
    host: str,
    port: int,
    *,
    count: int,
    seconds: float,
    trickle: bool = False,
    local_host: str | None = None,
) -> int:
    """Hold ``count`` TCP connections open for ``seconds`` without completing a
    handshake (sending nothing, or with ``trickle`` a byte a second), opening another
    whenever the node closes one (as a slowloris keeps its slots full). Returns how
    many the node closed (or refused) before the end."""
    closed = 0

    async def one() -> None:
        nonlocal closed
        deadline = anyio.current_time() + seconds
        while (left := deadline - anyio.current_time()) > 0:
            try:
                stream = await anyio.connect_tcp(host, port, local_host=local_host)
            except OSError:
                closed += 1
                await anyio.sleep(min(left, 0.25))
                continue
            async with stream:
                with anyio.move_on_after(left):
                    try:
                        while True:
                            if trickle:
                                await stream.send(b"\x00")
                            with anyio.move_on_after(1.0):
                                await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        closed += 1
            await anyio.sleep(min(max(0.0, deadline - anyio.current_time()), 0.25))

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return closed


def gapped_entries(identity: Identity, *, feeds: int, length: int, size: int) -> list[Entry]:
    """Entries 2..``length`` of ``feeds`` open documents by ``identity``, each with a
    payload of about ``size`` bytes: their first entry never comes."""
    out: list[Entry] = []
    for f in range(feeds):
        document = DocumentId(Policy.OPEN, f"junk-{os.urandom(4).hex()}-{f}")
        doc: pycrdt.Doc[pycrdt.Map[str]] = pycrdt.Doc(
            client_id=client_id_for(document, identity.peer_id)
        )
        root = doc.get("m", type=pycrdt.Map)
        prev = ZERO_HASH
        for seq in range(1, length + 1):
            state = doc.get_state()
            root[str(seq)] = os.urandom(size // 2).hex()
            entry = Entry.create(
                identity, document, seq, prev, doc.get_update(state), timestamp=seq
            )
            prev = entry.id
            if seq > 1:
                out.append(entry)
    return out


async def flood_pending(
    transport: Transport,
    address: str,
    identity: Identity,
    entries: Sequence[Entry],
    *,
    hold: float,
) -> bool:
    """Send ``entries`` (see :func:`gapped_entries`) and keep the link ``hold`` seconds
    (a node forgets what a closed link left waiting). True if the node closed it."""
    link = await transport.dial(address, identity)
    try:
        await _hello(link)
        batch: list[bytes] = []
        for entry in entries:
            batch.append(entry.encoded)
            if sum(map(len, batch)) > 200_000:
                await link.send(encode(Entries(tuple(batch))))
                batch = []
        if batch:
            await link.send(encode(Entries(tuple(batch))))
        with anyio.move_on_after(hold):
            while True:
                await link.recv()
    except LinkClosed:
        return True
    finally:
        await link.aclose()
    return False


def copy_sealed_bid(replica: Replica, task: TaskRef, rival: PeerId) -> None:
    """Copy ``rival``'s sealed bid on ``task`` into the offers of ``replica``'s
    identity, unread (the board's view then lists it among the rejected)."""
    theirs = replica.document(task.offers(rival)).array("bids").to_py()
    if not theirs:
        raise ValueError("no sealed bid of the rival here yet")
    mine = replica.document(task.offers(replica.peer_id))
    with mine.transaction():
        mine.array("bids").append(dict(theirs[0]))


async def abuse_broadcasts(
    transport: Transport,
    address: str,
    identity: Identity,
    *,
    frames: int = 12,
    hold: float = 2.0,
) -> bool:
    """Send broadcasts relayed past their signed hop ceiling, and one from long ago.
    True if the node closed the link (it refused this peer)."""
    wall = int(time.time() * 1000)
    origin = Broadcaster(identity, now=wall - 3_600_000)
    link = await transport.dial(address, identity)
    try:
        await _hello(link)
        for i in range(frames):
            origin.originate("x", i, ttl=2, fanout=1, created_at=wall, pick=_to_node, members=1)
            ((_, frame),) = origin.outbox()
            body, signature, _hops = cbor2.loads(frame)
            await link.send(_ephemeral(cbor2.dumps([body, signature, 5])))  # past ttl 2
        old = wall - 3_000_000  # long before any window
        origin.originate("x", "old", ttl=2, fanout=1, created_at=old, pick=_to_node, members=1)
        ((_, frame),) = origin.outbox()
        await link.send(_ephemeral(frame))
        with anyio.move_on_after(hold):
            while True:
                await link.recv()
    except LinkClosed:
        return True
    finally:
        await link.aclose()
    return False


def _to_node(count: int, avoid: Collection[PeerId]) -> list[PeerId]:
    """The broadcaster's pick: one placeholder target (the frame goes to the node)."""
    return [PeerId(b"\x01" * 32)][:count]


def _ephemeral(frame: bytes) -> bytes:
    """A broadcast on the gossip channel, as a sync broadcast message."""
    return encode(Broadcast(b"B" + frame))


__all__ = [
    "AmplifyResult",
    "abuse_broadcasts",
    "amplify",
    "copy_sealed_bid",
    "flood_pending",
    "gapped_entries",
    "stall_handshakes",
]
