"""Membership as replicated state: each peer's record, and the peer set, over one replica.

Each peer publishes a signed record in a document only it can write
(``owner:<peer>:mesh:peer``). The peer set is a pure view over those records, so
every replica that holds the same entries shows the same peers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ...identity import PeerId
from ...ledger import Entry
from ...replica.index import DocumentIndex
from .model import PeerRecord, record_document, record_owner
from .rules import strings

if TYPE_CHECKING:
    from ...replica.replica import Replica

_ROOT = "record"


class MembershipBoard:
    """The peer records one replica holds (found through an index of their documents),
    each read once per change of its document: the peer set is read every gossip
    interval and on every probe, and records change rarely."""

    def __init__(self, replica: Replica, *, clock: Callable[[], float] = time.time) -> None:
        self.replica = replica
        self.clock = clock
        self._records = DocumentIndex(replica, record_owner)
        self._read: dict[PeerId, PeerRecord | None] = {}
        self._peers: list[PeerRecord] | None = None  # the peer set, left ones included
        self._unsubscribe = replica.on_commit(self._on_commit)

    def _on_commit(self, entries: list[Entry]) -> None:
        for entry in entries:
            owner = record_owner(entry.document)
            if owner is not None:
                self._read.pop(owner, None)
                self._peers = None

    def write(
        self, capabilities: Iterable[str], addresses: Iterable[str], *, left: bool = False
    ) -> PeerRecord:
        """Publish (or update) this replica's own record; its start time is kept."""
        return write_record(self.replica, capabilities, addresses, left=left, clock=self.clock)

    def record(self, peer: PeerId) -> PeerRecord | None:
        """The record ``peer`` published, as this replica holds it."""
        if peer not in self._read:
            self._read[peer] = read_record(self.replica, peer)
        return self._read[peer]

    def peers(self, *, include_left: bool = False) -> list[PeerRecord]:
        """The peer set, in peer id order (a pure view of replicated state)."""
        if self._peers is None:
            records = [self.record(peer) for peer in self._records.known_keys()]
            self._peers = sorted((r for r in records if r is not None), key=lambda r: str(r.peer))
        return [r for r in self._peers if include_left or not r.left]

    def close(self) -> None:
        self._unsubscribe()
        self._records.close()


def write_record(
    replica: Replica,
    capabilities: Iterable[str],
    addresses: Iterable[str],
    *,
    left: bool = False,
    clock: Callable[[], float] = time.time,
) -> PeerRecord:
    """Publish (or update) ``replica``'s own peer record; its start time is kept."""
    caps, addrs = strings(capabilities, "capabilities"), strings(addresses, "addresses")
    document = replica.document(record_document(replica.peer_id))
    root = document.map(_ROOT)
    started = (root.to_py() or {}).get("started_at")
    with document.transaction():
        root["capabilities"] = list(caps)
        root["addresses"] = list(addrs)
        root["started_at"] = started if started is not None else int(clock() * 1000)
        root["left"] = left
    record = read_record(replica, replica.peer_id)
    assert record is not None
    return record


def read_record(replica: Replica, peer: PeerId) -> PeerRecord | None:
    """The record ``peer`` published, as ``replica`` holds it (None if none, or malformed)."""
    doc_id = record_document(peer)
    if not replica.has_document(doc_id):
        return None
    root = replica.document(doc_id).map(_ROOT).to_py() or {}
    try:
        return PeerRecord(
            peer=peer,
            capabilities=tuple(str(c) for c in root.get("capabilities", [])),
            addresses=tuple(str(a) for a in root.get("addresses", [])),
            started_at=int(root.get("started_at", 0)),
            left=bool(root.get("left", False)),
        )
    except (TypeError, ValueError):
        return None  # a record its owner wrote badly: not a peer we can use


def peer_records(replica: Replica, *, include_left: bool = False) -> list[PeerRecord]:
    """The peer set of ``replica``, found by looking at every document once (for one-off
    use, as in simulations; a running service keeps a :class:`MembershipBoard`)."""
    owners = [o for d in replica.documents() if (o := record_owner(d)) is not None]
    records = [read_record(replica, peer) for peer in owners]
    return sorted(
        (r for r in records if r is not None and (include_left or not r.left)),
        key=lambda r: str(r.peer),
    )
