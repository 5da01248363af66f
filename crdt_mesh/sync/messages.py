"""Wire messages of the sync protocol: CBOR arrays, checked on decode.

=============  =============================================================
message        CBOR
=============  =============================================================
hello          ``[0, version, max_frame]``
reconcile      ``[1, round, step, [part, ...]]``; an empty list ends a round
entries        ``[2, [entry or fork proof bytes, or pack, ...], pushed]``
broadcast      ``[3, bytes]``: an ephemeral signed gossip message (not stored)
=============  =============================================================

``round`` numbers the rounds of one link (the dialling side counts them from
1); ``step`` numbers the messages of a round, 0 for the opener. A message is
an answer to exactly one message of the other side, so a duplicate or a late
message of an abandoned round is recognised and dropped, never re-answered.

A reconcile part is either a fingerprint ``[0, lower, upper, fp16, count]`` or
the items of a range ``[1, lower, upper, [[key, seq, id, frozen], ...], reply]``.
Ranges are ``[lower, upper)`` over 48-byte feed keys. A bound is a byte string
of at most 48 bytes (a split point is the shortest prefix that separates two
keys); an empty ``upper`` means "above every key", and a ``lower`` of null
means "the previous part's ``upper``" (parts of a split are contiguous).
The parts of one message are in key order and never overlap: that is checked
here, so that no message can ask twice about the same feeds.

Entries of signature groups, given as :class:`Entry` objects, are sent packed
(one pack per author: see :mod:`crdt_mesh.ledger.packing`) and unpacked on
decode: most of a grouped entry is its group's signature and Merkle path, which
a pack sends once. An entry signed alone travels as its bytes: packing it would
save its author, document and prev, but cost the receiver a rebuild of every
copy it already holds (a copy of bytes is known by their digest, without
decoding). Fork proofs and bytes given are sent as they are.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import cbor2

from ..errors import InvalidEntry, RemoteError
from ..ledger import MAX_ENTRY_SIZE, Entry
from ..ledger.packing import pack, unpack
from .index import KEY_MAX, KEY_SIZE, FeedItem

#: Version 2 numbers rounds and steps (version 1 did not: a repeated part made a
#: node queue its whole store again, per part); version 3 says whether an entries
#: frame was pushed (news the receiver passes on) or asked for by a round; version 4
#: packs entries (what entries travelling together share is sent once).
PROTOCOL_VERSION = 4
#: Largest frame a session accepts by default: one entry of the largest size fits.
MAX_FRAME = MAX_ENTRY_SIZE + 64 * 1024
#: Parts in one reconcile message. An honest message has at most one part per
#: differing range at one level of splitting, so this many parts need two peers that
#: each hold over 16,384 feeds the other lacks (then the round fails and is retried;
#: see docs/protocol.md).
MAX_PARTS = 16 * 1024
MAX_ITEMS = 4096
#: Entries (or fork proofs) in one entries frame: bounds the work one frame causes.
MAX_ENTRIES = 4096


class ProtocolError(RemoteError):
    """A peer sent a frame that breaks the sync protocol; its link should be closed."""


class Kind(enum.IntEnum):
    HELLO = 0
    RECONCILE = 1
    ENTRIES = 2
    BROADCAST = 3


class PartKind(enum.IntEnum):
    FINGERPRINT = 0
    ITEMS = 1


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    max_frame: int


@dataclass(frozen=True, slots=True)
class Fingerprint:
    lower: bytes
    upper: bytes
    fingerprint: bytes
    count: int


@dataclass(frozen=True, slots=True)
class Items:
    lower: bytes
    upper: bytes
    items: tuple[FeedItem, ...]
    reply: bool


Part = Fingerprint | Items


@dataclass(frozen=True, slots=True)
class Reconcile:
    round: int
    step: int
    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Entries:
    #: entries (sent packed) and the bytes of entries or fork proofs (sent as they are)
    items: tuple[Entry | bytes, ...]
    #: pushed as news (the receiver relays what it commits of them), not asked for
    pushed: bool = False


@dataclass(frozen=True, slots=True)
class Broadcast:
    data: bytes


Message = Hello | Reconcile | Entries | Broadcast


def _upper_out(upper: bytes) -> bytes:
    return b"" if upper == KEY_MAX else upper


def encode(message: Message) -> bytes:
    """The CBOR frame of ``message``."""
    if isinstance(message, Hello):
        return cbor2.dumps([Kind.HELLO, message.version, message.max_frame])
    if isinstance(message, Entries):
        grouped = [i for i in message.items if isinstance(i, Entry) and i.proof is not None]
        raw = [
            i.encoded if isinstance(i, Entry) else i
            for i in message.items
            if not isinstance(i, Entry) or i.proof is None
        ]
        return cbor2.dumps([Kind.ENTRIES, raw + pack(grouped), message.pushed])
    if isinstance(message, Broadcast):
        return cbor2.dumps([Kind.BROADCAST, message.data])
    parts: list[list[Any]] = []
    previous_upper: bytes | None = None
    for part in message.parts:
        lower = None if part.lower == previous_upper else part.lower
        upper = _upper_out(part.upper)
        previous_upper = part.upper
        if isinstance(part, Fingerprint):
            parts.append([PartKind.FINGERPRINT, lower, upper, part.fingerprint, part.count])
        else:
            items = [[i.key, i.seq, i.id, i.frozen] for i in part.items]
            parts.append([PartKind.ITEMS, lower, upper, items, part.reply])
    return cbor2.dumps([Kind.RECONCILE, message.round, message.step, parts])


def decode(frame: bytes, *, max_unpacked: int = MAX_FRAME) -> Message:
    """Decode one frame; packed entries are unpacked (not verified), to at most
    ``max_unpacked`` bytes of encoded entries.

    Raises:
        ProtocolError: the frame is not a well-formed message.
    """
    try:
        value = cbor2.loads(frame)
    except Exception as exc:  # cbor2 raises several types; all mean "malformed"
        raise ProtocolError(f"malformed frame: {exc}") from None
    try:
        return _message(value, max_unpacked)
    except ProtocolError:
        raise
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from None


def _message(value: Any, max_unpacked: int) -> Message:
    if not isinstance(value, list) or not value:
        raise ProtocolError("a message is a non-empty array")
    kind = value[0]
    if kind == Kind.HELLO and len(value) == 3:
        version, max_frame = _int(value[1]), _int(value[2])
        return Hello(version, max_frame)
    if kind == Kind.ENTRIES and len(value) == 3:
        items, pushed = value[1], value[2]
        if not isinstance(items, list):
            raise ProtocolError("entries are a list of byte strings and packs")
        if not isinstance(pushed, bool):
            raise ProtocolError("an entries frame says whether it was pushed: true or false")
        return Entries(_entries(items, max_unpacked), pushed)
    if kind == Kind.BROADCAST and len(value) == 2:
        if not isinstance(value[1], bytes):
            raise ProtocolError("a broadcast carries a byte string")
        return Broadcast(value[1])
    if kind == Kind.RECONCILE and len(value) == 4:
        round_, step, parts = _int(value[1]), _int(value[2]), value[3]
        if not isinstance(parts, list) or len(parts) > MAX_PARTS:
            raise ProtocolError(f"reconcile holds a list of at most {MAX_PARTS} parts")
        decoded: list[Part] = []
        previous_upper: bytes | None = None
        for raw in parts:
            part = _part(raw, previous_upper)
            if previous_upper is not None and part.lower < previous_upper:
                raise ProtocolError("reconcile parts overlap or are out of order")
            decoded.append(part)
            previous_upper = part.upper
        return Reconcile(round_, step, tuple(decoded))
    raise ProtocolError(f"unknown message {kind!r}")


def _entries(items: list[Any], max_unpacked: int) -> tuple[Entry | bytes, ...]:
    out: list[Entry | bytes] = []
    for item in items:
        if isinstance(item, bytes):
            out.append(item)
        else:
            try:
                unpacked = unpack(item, max_bytes=max_unpacked, max_entries=MAX_ENTRIES - len(out))
            except InvalidEntry as exc:
                raise ProtocolError(f"a bad pack of entries: {exc}") from None
            max_unpacked -= sum(len(e.encoded) for e in unpacked)
            out.extend(unpacked)
        if len(out) > MAX_ENTRIES:
            raise ProtocolError(f"an entries frame holds at most {MAX_ENTRIES} items")
    return tuple(out)


def _part(value: Any, previous_upper: bytes | None) -> Part:
    if not isinstance(value, list) or len(value) != 5:
        raise ProtocolError("a reconcile part is an array of 5")
    if value[1] is None:
        if previous_upper is None:
            raise ProtocolError("the first part must state its lower bound")
        lower = previous_upper
    else:
        lower = _bound(value[1])
    kind, upper = value[0], _bound(value[2]) or KEY_MAX
    if lower >= upper:
        raise ProtocolError("empty or inverted range")
    if kind == PartKind.FINGERPRINT:
        fingerprint, count = value[3], _int(value[4])
        if not isinstance(fingerprint, bytes) or len(fingerprint) != 16:
            raise ProtocolError("a fingerprint is 16 bytes")
        return Fingerprint(lower, upper, fingerprint, count)
    if kind == PartKind.ITEMS:
        raw, reply = value[3], value[4]
        if not isinstance(raw, list) or len(raw) > MAX_ITEMS or not isinstance(reply, bool):
            raise ProtocolError(f"items are a list of at most {MAX_ITEMS}")
        items = tuple(_item(i) for i in raw)
        if any(not lower <= i.key < upper for i in items):
            raise ProtocolError("an item lies outside its range")
        return Items(lower, upper, items, reply)
    raise ProtocolError(f"unknown part kind {kind!r}")


def _item(value: Any) -> FeedItem:
    if not isinstance(value, list) or len(value) != 4 or not isinstance(value[3], bool):
        raise ProtocolError("an item is [key, seq, id, frozen]")
    key = value[0]
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ProtocolError(f"a feed key is {KEY_SIZE} bytes")
    return FeedItem(key, _int(value[1]), value[2], value[3])


def _bound(value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) > KEY_SIZE:
        raise ProtocolError(f"a range bound is at most {KEY_SIZE} bytes")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ProtocolError(f"expected a non-negative integer, got {value!r}")
    return value
