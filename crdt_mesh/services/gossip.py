"""Membership: who is in the mesh, as replicated state; peer discovery from it.

Each peer publishes a signed record in a document only it can write
(``owner:<peer>:mesh:peer``): its capabilities, addresses, start time, and
whether it left on purpose. The peer set is a pure view over those records
(DESIGN invariant 6), so every replica that holds the same entries shows the
same peers. Records spread like any other document: anti-entropy plus eager push.

Discovery in the manner of HyParView (Leitão, Pereira, Rodrigues, DSN 2007):
the links a mesh keeps are its *active view* (bounded by ``P2P_MAX_PEERS``);
the records it knows but is not linked to are its *passive view*. Every gossip
interval the mesh dials a random passive peer while the active view has room;
a full active view is left alone, but for a rare swap of one active peer for a
passive one (a shuffle), so that the overlay does not set in stone.

Epidemic broadcast (``propagate``): a message signed by its origin, not stored
in the ledger (DESIGN invariant 7), sent to ``fanout`` random linked peers, each
of which delivers it once (de-duplicated by id) and forwards it while its TTL
in hops lasts. Replicated state does not depend on it: anti-entropy underneath
converges even where a broadcast is lost.

Not here yet: failure detection (SWIM/Lifeguard probes).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import cbor2
import nacl.bindings
import nacl.exceptions

from ..config import Feature, MeshConfig
from ..errors import MeshError
from ..events import P2PEvents
from ..identity import PeerId
from ..ledger import DocumentId, Entry, Policy

if TYPE_CHECKING:
    from ..mesh import Mesh

log = logging.getLogger(__name__)

RECORD_DOCUMENT = "mesh:peer"
_ROOT = "record"
_BROADCAST_DOMAIN = b"crdt_mesh/broadcast/v1\x00"
MAX_TTL = 16
MAX_FANOUT = 8
MAX_BROADCAST = 64 * 1024
_SEEN = 10_000  # message ids remembered for de-duplication
#: Chance, per gossip interval, that a full active view swaps one peer for a passive one.
SHUFFLE_PROBABILITY = 0.1


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """A broadcast as a receiver sees it: verified, delivered once."""

    id: bytes
    origin: PeerId
    type: str
    payload: Any
    created_at: int
    ttl: int  # hops it may still travel after this one


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """One peer's published record (a view: built from its replicated document)."""

    peer: PeerId
    capabilities: tuple[str, ...]
    addresses: tuple[str, ...]
    started_at: int
    left: bool


def record_document(peer: PeerId) -> DocumentId:
    """The document in which ``peer`` publishes its record (only it may write it)."""
    return DocumentId(Policy.OWNER, RECORD_DOCUMENT, peer)


class GossipService:
    """``mesh.gossip``: join, leave, the peer set, and discovery. Off unless
    ``P2P_ENABLED`` and ``P2P_GOSSIP`` are on (or the mesh has no config)."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh
        self._known: dict[PeerId, bool] = {}  # peer -> left, as last announced by events
        self._dialling: set[PeerId] = set()
        self._unsubscribe = mesh.replica.on_commit(self._on_commit)
        self.shuffles = 0
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._handlers: list[Callable[[GossipMessage], Any]] = []
        self.delivered = 0
        self.dropped = 0

    @property
    def _config(self) -> MeshConfig | None:
        return self._mesh.config

    def _require(self) -> None:
        if self._config is not None:
            self._config.require(Feature.GOSSIP)

    # -- commands -----------------------------------------------------------------------

    def join(
        self, capabilities: Iterable[str] = (), listen_address: str | None = None
    ) -> PeerRecord:
        """Publish (or update) this peer's record.

        Raises:
            FeatureDisabledError: gossip is off.
            ValueError: a capability or address is not a non-empty string.
        """
        self._require()
        caps = _strings(capabilities, "capability")
        address = listen_address or self._mesh.address
        addresses = _strings([address] if address else [], "address")
        record = self._write(caps, addresses, left=False)
        self._mesh.start_discovery()
        return record

    def leave(self) -> PeerRecord:
        """Say, in the record, that this peer left on purpose (it is not probed)."""
        self._require()
        current = self.record(self._mesh.replica.peer_id)
        caps = current.capabilities if current else ()
        addresses = current.addresses if current else ()
        return self._write(caps, addresses, left=True)

    def _write(
        self, caps: tuple[str, ...], addresses: tuple[str, ...], *, left: bool
    ) -> PeerRecord:
        replica = self._mesh.replica
        document = replica.document(record_document(replica.peer_id))
        root = document.map(_ROOT)
        started = (root.to_py() or {}).get("started_at")
        with document.transaction():
            root["capabilities"] = list(caps)
            root["addresses"] = list(addresses)
            root["started_at"] = started if started is not None else int(time.time() * 1000)
            root["left"] = left
        record = self.record(replica.peer_id)
        assert record is not None
        return record

    # -- views --------------------------------------------------------------------------

    def record(self, peer: PeerId) -> PeerRecord | None:
        """The record ``peer`` published, as this replica holds it (None if none)."""
        replica = self._mesh.replica
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

    def peers(self, *, include_left: bool = False) -> list[PeerRecord]:
        """Every peer whose record this replica holds (a pure view of replicated state)."""
        self._require()
        records = []
        for doc in self._mesh.replica.documents():
            if doc.policy is Policy.OWNER and doc.name == RECORD_DOCUMENT and doc.owner is not None:
                record = self.record(doc.owner)
                if record is not None and (include_left or not record.left):
                    records.append(record)
        return sorted(records, key=lambda r: str(r.peer))

    def with_capabilities(self, *capabilities: str) -> list[PeerRecord]:
        """Live peers that declared every one of ``capabilities``."""
        wanted = set(capabilities)
        return [r for r in self.peers() if wanted <= set(r.capabilities)]

    # -- events -------------------------------------------------------------------------

    def _on_commit(self, entries: list[Entry]) -> None:
        authors = {
            e.document.owner
            for e in entries
            if e.document.name == RECORD_DOCUMENT and e.document.policy is Policy.OWNER
        }
        for peer in authors:
            if peer is None:
                continue
            record = self.record(peer)
            if record is None:
                continue
            previously_left = self._known.get(peer)
            self._known[peer] = record.left
            if peer == self._mesh.replica.peer_id:
                continue
            if not record.left and previously_left in (None, True):
                self._mesh.events.emit(P2PEvents.PEER_DISCOVERED, record)
            elif record.left and previously_left is False:
                self._mesh.events.emit(P2PEvents.PEER_LOST, record)

    # -- epidemic broadcast -------------------------------------------------------------

    def on(self, event: str, handler: Callable[[GossipMessage], Any]) -> Callable[[], None]:
        """``on("message", handler)``: ``handler`` receives each broadcast once.

        Raises:
            FeatureDisabledError: gossip is off.
            ValueError: ``event`` is not ``"message"``.
        """
        self._require()
        if event != "message":
            raise ValueError(f"unknown gossip event {event!r} (only 'message')")
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    def propagate(self, type: str, payload: Any = None, *, ttl: int = 5, fanout: int = 3) -> bytes:
        """Broadcast a signed, ephemeral message; returns its id.

        Args:
            type: a :class:`~crdt_mesh.types.GossipMessageType` (or another name).
            payload: any CBOR-encodable value.
            ttl: hops it may travel (at most MAX_TTL).
            fanout: peers each hop sends it to (at most MAX_FANOUT).

        Raises:
            FeatureDisabledError: gossip is off.
            ValueError: bad ttl, fanout or type, or a payload too large.
        """
        self._require()
        if not isinstance(type, str) or not type:
            raise ValueError("a message type is a non-empty string")
        if not 1 <= ttl <= MAX_TTL or not 1 <= fanout <= MAX_FANOUT:
            raise ValueError(f"ttl is 1..{MAX_TTL} and fanout 1..{MAX_FANOUT}")
        identity = self._mesh.replica.identity
        body = cbor2.dumps(
            [1, identity.peer_id.key, str(type), payload, int(time.time() * 1000), os.urandom(8)],
            canonical=True,
        )
        if len(body) > MAX_BROADCAST:
            raise ValueError(f"broadcast of {len(body)} bytes exceeds {MAX_BROADCAST}")
        signature = identity.sign(_BROADCAST_DOMAIN + body)
        message_id = hashlib.blake2b(body, digest_size=16).digest()
        self._remember(message_id)
        self._forward(cbor2.dumps([body, signature, ttl, fanout]), fanout, exclude=None)
        return message_id

    def receive(self, sender: PeerId, data: bytes) -> None:
        """A broadcast frame from ``sender``: verify, deliver once, forward while TTL lasts."""
        try:
            body, signature, ttl, fanout = cbor2.loads(data)
            version, origin_key, kind, payload, created, _nonce = cbor2.loads(body)
            if version != 1 or not isinstance(kind, str) or not isinstance(created, int):
                raise ValueError("bad broadcast")
            if not (
                isinstance(ttl, int) and isinstance(fanout, int) and len(body) <= MAX_BROADCAST
            ):
                raise ValueError("bad broadcast")
            origin = PeerId(origin_key)
            nacl.bindings.crypto_sign_open(signature + _BROADCAST_DOMAIN + body, origin.key)
        except (ValueError, TypeError, nacl.exceptions.CryptoError, cbor2.CBORDecodeError) as exc:
            self.dropped += 1
            log.warning("dropped a broadcast from %s: %s", sender.short, exc)
            return
        message_id = hashlib.blake2b(body, digest_size=16).digest()
        if message_id in self._seen or origin == self._mesh.replica.peer_id:
            return
        self._remember(message_id)
        ttl, fanout = min(ttl, MAX_TTL), max(1, min(fanout, MAX_FANOUT))
        message = GossipMessage(message_id, origin, kind, payload, created, ttl - 1)
        self.delivered += 1
        for handler in list(self._handlers):
            try:
                handler(message)
            except Exception:
                log.exception("gossip message handler failed")
        self._mesh.events.emit(P2PEvents.MESSAGE_RECEIVED, message)
        if ttl > 1:
            self._forward(cbor2.dumps([body, signature, ttl - 1, fanout]), fanout, exclude=sender)

    def _remember(self, message_id: bytes) -> None:
        self._seen[message_id] = None
        while len(self._seen) > _SEEN:
            self._seen.popitem(last=False)

    def _forward(self, frame: bytes, fanout: int, exclude: PeerId | None) -> None:
        self._mesh.broadcast(frame, fanout, exclude=exclude)

    # -- discovery (run by the mesh) ----------------------------------------------------

    async def run(self, interval: float) -> None:
        """Keep the active view filled from the passive view, and shuffle it."""
        while True:
            await anyio.sleep(interval)
            try:
                await self.maintain()
            except Exception:  # a maintenance step must never take the mesh down
                log.exception("gossip maintenance failed")

    async def maintain(self) -> None:
        """One HyParView-style step: fill the active view; shuffle when it is full."""
        mesh = self._mesh
        me = mesh.replica.peer_id
        active = set(mesh.peers)
        passive = [
            r
            for r in self.peers()
            if r.peer != me
            and r.peer not in active
            and r.peer not in self._dialling
            and r.addresses
        ]
        if not passive:
            return
        candidate = mesh.rng.choice(passive)
        if len(active) >= mesh.max_peers:
            # A full active view is left alone most of the time (links that carry
            # traffic should be stable); now and then one active peer is swapped for
            # a passive one, so the overlay does not set in stone.
            if mesh.rng.random() >= SHUFFLE_PROBABILITY:
                return
            victim = mesh.rng.choice(sorted(active, key=str))
            await mesh.disconnect(victim)
            self.shuffles += 1
        self._dialling.add(candidate.peer)
        try:
            for address in candidate.addresses:
                try:
                    await mesh.connect(address)
                    break
                except MeshError as exc:
                    log.info("dial %s at %s failed: %s", candidate.peer.short, address, exc)
        finally:
            self._dialling.discard(candidate.peer)

    def close(self) -> None:
        self._unsubscribe()


def _strings(values: Iterable[Any], what: str) -> tuple[str, ...]:
    out = tuple(values)
    for value in out:
        if not isinstance(value, str) or not value:
            raise ValueError(f"a {what} is a non-empty string, not {value!r}")
    return out
