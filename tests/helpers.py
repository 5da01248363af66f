"""Crafting entries by hand, the way a misbehaving peer would; a still clock; a sync
that needs no network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import cbor2
import pycrdt

from crdt_mesh import DocumentId, Entry, Identity, PeerId, Policy, Replica, client_id_for
from crdt_mesh.ledger import ZERO_HASH

NOTES = DocumentId(Policy.OPEN, "notes")


def update_as(client_id: int, key: str = "k", value: Any = "v", base: bytes | None = None) -> bytes:
    """A Yrs update writing ``map[key] = value`` as ``client_id`` (on top of ``base``)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    if base:
        doc.apply_update(base)
    state = doc.get_state()
    doc.get("map", type=pycrdt.Map)[key] = value
    return doc.get_update(state)


def feed(identity: Identity, n: int, document: DocumentId = NOTES, **fields: Any) -> list[Entry]:
    """``n`` valid chained entries by ``identity`` writing as its own client id."""
    client = client_id_for(document, identity.peer_id)
    entries: list[Entry] = []
    state = b""
    for seq in range(1, n + 1):
        update = update_as(client, f"k{seq}", seq, base=state or None)
        state = pycrdt.merge_updates(state, update) if state else update
        prev = entries[-1].id if entries else ZERO_HASH
        entries.append(Entry.create(identity, document, seq, prev, update, timestamp=seq, **fields))
    return entries


def claimed_by(encoded: bytes, author: PeerId) -> bytes:
    """An encoded entry that names ``author`` as its writer, its signature unchanged."""
    fields = cbor2.loads(encoded)
    fields[2] = author.key
    return cbor2.dumps(fields, canonical=True)


def forged_by(signer: Identity, entry: Entry) -> bytes:
    """``entry`` signed by ``signer`` but claiming its author: valid bytes, a bad signature."""
    forged = Entry.create(
        signer, entry.document, entry.seq, entry.prev, entry.payload, timestamp=entry.timestamp
    )
    return claimed_by(forged.encoded, entry.author)


async def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait until ``condition()`` holds, or fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


def forked(identity: Identity, document: DocumentId = NOTES) -> tuple[list[Entry], Entry]:
    """Three chained entries by ``identity``, and a second, different entry 2."""
    entries = feed(identity, 3, document)
    other = Entry.create(
        identity,
        document,
        2,
        entries[0].id,
        update_as(client_id_for(document, identity.peer_id), "other", 1, base=entries[0].payload),
        timestamp=99,
    )
    return entries, other


class Clock:
    """A clock that moves only when a test moves it (``clock.now += 60``)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sync_as_peers(*replicas: Replica) -> None:
    """Every replica gets what the others would offer it over a link: the entries of
    the documents that both ends may read (read policies obeyed, as sync obeys them)."""
    for _ in range(2):
        for a in replicas:
            for b in replicas:
                if a is b:
                    continue
                offered = [
                    e
                    for e in a.missing_from(b.heads())
                    if isinstance(e, Entry)
                    and a.readable_by(e.document, b.peer_id)
                    and b.readable_by(e.document, a.peer_id)
                ]
                b.ingest(offered).raise_first()


def sync(*replicas: Replica) -> None:
    """Every replica gets every entry the others hold."""
    for _ in range(2):
        for a in replicas:
            for b in replicas:
                if a is not b:
                    b.ingest(a.missing_from(b.heads())).raise_first()


def entries_in(items: Any) -> list[Entry]:
    """The entries among an entries frame's items (unpacked, or bytes decoded); fork
    proofs aside."""
    return [
        item if isinstance(item, Entry) else Entry.decode(item, verify=False)
        for item in items
        if isinstance(item, Entry) or item[:1] != b"\x83"
    ]
