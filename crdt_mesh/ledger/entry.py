"""Signed, hash-chained entries, alone or in signature groups.

Pure values: no I/O, no clock, no LMDB. An :class:`Entry` is the unit that is
stored and replicated; its bytes are canonical CBOR, so each entry has exactly
one encoding, and its id (BLAKE2b-256 of its nine signed fields) is stable.

An entry is authenticated either by its own Ed25519 signature or, when it was
committed in a group with others (:meth:`Replica.batch`), by one signature
over the Merkle root of the group's entry ids plus the entry's path to that
root. A group of 50 then costs one signature to make and one to check, not 50,
and each entry still proves on its own that its author wrote it.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from typing import Any, TypeGuard

import cbor2

from ..errors import ChainError, InvalidEntry, InvalidSignature
from ..identity import Domain, Identity, PeerId, open_signed
from .ids import DocumentId

ENTRY_VERSION = 2  # 2: ids hash the nine signed fields; group signatures
#: Largest encoded entry accepted, in bytes. Bigger changes must be split.
MAX_ENTRY_SIZE = 4 * 1024 * 1024
ZERO_HASH = bytes(32)

# Domain separation (identity.Domain): a signature over an entry can never be
# replayed as a signature over any other kind of message this library signs.
#: A signed group holds at most 2**MAX_BATCH_DEPTH entries (a larger batch is signed in
#: several groups): paths stay short (6 hashes), and one signature per 64 entries costs little.
MAX_BATCH_DEPTH = 6
_PAD_LEAF = hashlib.blake2b(b"\x02", digest_size=32).digest()
_VERIFIED_ROOTS: OrderedDict[bytes, None] = OrderedDict()  # signed group roots checked
_VERIFIED_ROOTS_MAX = 4096
_ENTRY_FIELDS = 10
_ARRAY_10 = 0x8A
_SIG_HEADER = b"\x58\x40"  # CBOR byte string of 64 bytes
_HASH_HEADER = b"\x58\x20"  # CBOR byte string of 32 bytes


class EntryKind(enum.IntEnum):
    """What an entry's payload holds."""

    UPDATE = 0  # a Yrs v1 update
    ACL = 1  # the member list of a ``members`` document (owner only)


_KINDS = tuple(EntryKind)  # by value: EntryKind(n) is slow on a hot path


@dataclass(frozen=True, slots=True, repr=False)
class Entry:
    """One signed, hash-chained ledger entry: one document transaction.

    Build one with :meth:`create` (signs) or :meth:`decode` (verifies); the
    constructor is for those two and checks only types.
    """

    document: DocumentId
    author: PeerId
    seq: int
    prev: bytes
    timestamp: int
    kind: EntryKind
    acl: int
    payload: bytes
    signature: bytes
    encoded: bytes = field(repr=False, compare=False)
    id: bytes = field(repr=False, compare=False)
    #: (index, sibling hashes) when a group signature covers this entry; None when
    #: the entry is signed on its own
    proof: tuple[int, tuple[bytes, ...]] | None = field(default=None, repr=False, compare=False)

    def __init__(
        self,
        document: DocumentId,
        author: PeerId,
        seq: int,
        prev: bytes,
        timestamp: int,
        kind: EntryKind,
        acl: int,
        payload: bytes,
        signature: bytes,
        encoded: bytes,
        id: bytes,
        proof: tuple[int, tuple[bytes, ...]] | None = None,
    ) -> None:
        # Written out, through each slot's own setter: the __init__ a frozen dataclass
        # generates looks object.__setattr__ up for each field, and an entry is built
        # for every entry decoded (this takes 40 % less time).
        s = _SLOT_SETTERS
        s[0](self, document)
        s[1](self, author)
        s[2](self, seq)
        s[3](self, prev)
        s[4](self, timestamp)
        s[5](self, kind)
        s[6](self, acl)
        s[7](self, payload)
        s[8](self, signature)
        s[9](self, encoded)
        s[10](self, id)
        s[11](self, proof)

    def __repr__(self) -> str:
        return (
            f"Entry({self.document.text!r}, {self.author.short}, seq={self.seq}, {self.kind.name})"
        )

    def where(self) -> dict[str, Any]:
        """The fields that name this entry in an error."""
        return {"document": self.document.text, "author": self.author.short, "seq": self.seq}

    @classmethod
    def create(
        cls,
        identity: Identity,
        document: DocumentId,
        seq: int,
        prev: bytes,
        payload: bytes,
        *,
        timestamp: int,
        kind: EntryKind = EntryKind.UPDATE,
        acl: int = 0,
    ) -> Entry:
        """Sign a new entry by ``identity``.

        Raises:
            InvalidEntry: a field is out of range or the entry is too large.
        """
        draft = cls.unsigned(
            identity.peer_id, document, seq, prev, payload, timestamp=timestamp, kind=kind, acl=acl
        )
        return _sign_alone(identity, draft)

    @classmethod
    def unsigned(
        cls,
        author: PeerId,
        document: DocumentId,
        seq: int,
        prev: bytes,
        payload: bytes,
        *,
        timestamp: int,
        kind: EntryKind = EntryKind.UPDATE,
        acl: int = 0,
    ) -> Entry:
        """An entry not signed yet: its id is final; :func:`seal` signs it with its group.

        Raises:
            InvalidEntry: a field is out of range.
        """
        body = _encode_body(document.text, author.key, seq, prev, timestamp, kind, acl, payload)
        return cls(
            document, author, seq, prev, timestamp, kind, acl, payload, b"", body, _entry_id(body)
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview, *, verify: bool = True) -> Entry:
        """Decode and verify an encoded entry.

        Any input either returns an entry whose signature verified or raises
        :class:`InvalidEntry` (or its subclass :class:`InvalidSignature`).
        ``verify=False`` is only for bytes this replica verified before (its own
        store), or for a caller that calls :meth:`verify` itself before use.
        """
        if type(data) is not bytes:  # (a union in isinstance is built on each call)
            if not isinstance(data, bytes | bytearray | memoryview):
                raise InvalidEntry(f"an entry is bytes, not {type(data).__name__}")
            data = bytes(data)
        if len(data) > MAX_ENTRY_SIZE:
            raise InvalidEntry(f"entry of {len(data)} bytes exceeds {MAX_ENTRY_SIZE}")
        if not data or data[0] != _ARRAY_10:
            raise InvalidEntry("not an encoded entry (expected a CBOR array of 10)")
        try:
            items = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several types; all mean "malformed"
            raise InvalidEntry(f"malformed CBOR: {exc}") from None
        if not isinstance(items, list) or len(items) != _ENTRY_FIELDS:
            raise InvalidEntry("not an encoded entry (expected a CBOR array of 10)")
        version, doc_text, author_key, seq, prev, timestamp, kind, acl, payload, signature = items
        if version != ENTRY_VERSION:
            raise InvalidEntry(f"unsupported entry version {version!r}")
        try:
            document = DocumentId.parse(doc_text)
            author = _author(author_key)
            entry_kind = (
                _KINDS[kind] if type(kind) is int and 0 <= kind < len(_KINDS) else EntryKind(kind)
            )
        except (ValueError, TypeError) as exc:
            raise InvalidEntry(f"bad field: {exc}") from None
        if document.text != doc_text:
            raise InvalidEntry(f"document id {doc_text!r} is not in canonical form")
        proof: tuple[int, tuple[bytes, ...]] | None = None
        if isinstance(signature, list):  # [signature, index, siblings]: a group's proof
            signature, proof = _parse_proof(signature, document.text, seq)
        if not isinstance(signature, bytes) or len(signature) != 64:
            raise InvalidEntry("signature must be 64 bytes", document=document.text, seq=seq)
        try:
            body = _encode_body(
                doc_text, author_key, seq, prev, timestamp, entry_kind, acl, payload
            )
        except InvalidEntry as exc:
            raise InvalidEntry(str(exc), document=document.text, author=author.short) from None
        if bytes((_ARRAY_10,)) + body[1:] + _auth_field(signature, proof) != data:
            raise InvalidEntry(
                "entry is not in canonical encoding",
                document=document.text,
                author=author.short,
                seq=seq,
            )
        entry = cls(
            document,
            author,
            seq,
            prev,
            timestamp,
            entry_kind,
            acl,
            payload,
            signature,
            data,
            _entry_id(body),
            proof,
        )
        if verify:
            entry.verify()
        return entry

    @classmethod
    def from_store(cls, data: bytes) -> Entry:
        """An entry from bytes that :meth:`decode` checked before (a replica's own
        store): read without checking them again, at a fraction of the cost."""
        fields = cbor2.loads(data)
        doc_text, author_key, seq, prev, timestamp, kind, acl, payload, auth = fields[1:]
        proof = None
        if isinstance(auth, list):
            auth, index, siblings = auth
            proof = (index, tuple(siblings))
        size = len(_auth_field(auth, proof)) if proof else len(_SIG_HEADER) + 64
        return cls(
            DocumentId.parse(doc_text),
            PeerId(author_key),
            seq,
            prev,
            timestamp,
            _KINDS[kind],
            acl,
            payload,
            auth,
            data,
            _entry_id(b"\x89" + data[1:-size]),
            proof,
        )

    def signed_message(self) -> tuple[bytes, bytes]:
        """(signature + signed bytes, author key): what ``crypto_sign_open`` checks.

        For an entry signed on its own, the signed bytes are its nine fields; for
        one signed with its group, the group's root as this entry's path gives it.
        """
        if not self.signature:
            raise InvalidSignature("entry is not signed yet", **self.where())
        if self.proof is None:
            body = self.encoded[1 : -len(_SIG_HEADER) - 64]
            return self.signature + Domain.ENTRY.value + b"\x89" + body, self.author.key
        index, siblings = self.proof
        node = _leaf(self.id)
        for level, sibling in enumerate(siblings):
            node = _node(sibling, node) if (index >> level) & 1 else _node(node, sibling)
        signed = Domain.ENTRY_GROUP.value + _root_message(self.author, len(siblings), node)
        return self.signature + signed, self.author.key

    def verify(self) -> None:
        """Check the signature against the author's key.

        A group's root, once checked, is remembered (bounded): the other entries of
        the group then cost a few hashes, not a signature check.

        Raises:
            InvalidSignature: the author did not sign these bytes.
        """
        signed, key = self.signed_message()
        if self.proof is not None and signed in _VERIFIED_ROOTS:
            return
        if not open_signed(key, signed):
            raise InvalidSignature("bad signature", **self.where())
        if self.proof is not None:
            _VERIFIED_ROOTS[signed] = None
            if len(_VERIFIED_ROOTS) > _VERIFIED_ROOTS_MAX:
                _VERIFIED_ROOTS.popitem(last=False)

    def follows(self, previous: Entry | None) -> None:
        """Check that this entry extends ``previous`` (None: the feed is empty).

        Raises:
            ChainError: wrong seq, or ``prev`` is not the hash of ``previous``.
        """
        expected_seq = 1 if previous is None else previous.seq + 1
        expected_prev = ZERO_HASH if previous is None else previous.id
        if self.seq != expected_seq:
            raise ChainError(f"expected seq {expected_seq}", **self.where())
        if self.prev != expected_prev:
            raise ChainError("prev does not hash the previous entry", **self.where())


_SLOT_SETTERS = tuple(getattr(Entry, f.name).__set__ for f in fields(Entry))


#: Authors of the entries decoded lately, by key: a batch holds few authors, and
#: building and checking a PeerId for each entry cost a sixth of decoding it.
_AUTHORS: dict[bytes, PeerId] = {}
_AUTHORS_MAX = 4096


def _author(key: object) -> PeerId:
    """The PeerId of ``key`` (raises as PeerId does for a key that is not one)."""
    author = _AUTHORS.get(key) if type(key) is bytes else None
    if author is None:
        author = PeerId(key)  # type: ignore[arg-type]  # checked here
        if len(_AUTHORS) >= _AUTHORS_MAX:
            _AUTHORS.clear()
        _AUTHORS[author.key] = author
    return author


def _is_integer(value: object) -> TypeGuard[int]:
    """An int that is not a bool (callers test ``type(value) is int`` first: the
    usual case, and much cheaper)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _encode_body(
    doc_text: str,
    author_key: bytes,
    seq: object,
    prev: object,
    timestamp: object,
    kind: EntryKind,
    acl: object,
    payload: object,
) -> bytes:
    """Canonical CBOR of the 9 signed fields (an array of 9)."""
    if not (type(seq) is int or _is_integer(seq)) or not 1 <= seq < 2**63:
        raise InvalidEntry(f"seq must be an integer >= 1, not {seq!r}")
    if not isinstance(prev, bytes) or len(prev) != 32:
        raise InvalidEntry("prev must be 32 bytes")
    if seq == 1 and prev != ZERO_HASH:
        raise InvalidEntry("the first entry of a feed has a zero prev")
    if not (type(timestamp) is int or _is_integer(timestamp)) or not 0 <= timestamp < 2**63:
        raise InvalidEntry(f"timestamp must be a non-negative integer, not {timestamp!r}")
    if not (type(acl) is int or _is_integer(acl)) or not 0 <= acl < 2**63:
        raise InvalidEntry(f"acl must be a non-negative integer, not {acl!r}")
    if not isinstance(payload, bytes):
        raise InvalidEntry("payload must be bytes")
    return cbor2.dumps(
        [ENTRY_VERSION, doc_text, author_key, seq, prev, timestamp, int(kind), acl, payload],
        canonical=True,
    )


def seal(identity: Identity, entries: list[Entry]) -> list[Entry]:
    """Sign a group of unsigned entries of ``identity`` with one signature.

    One entry is signed on its own; more get one signature over the Merkle root
    of their ids and each its path to the root. Groups larger than
    2**MAX_BATCH_DEPTH are split.

    Raises:
        InvalidEntry: an entry is not ``identity``'s, is signed already, or would
            exceed MAX_ENTRY_SIZE with its proof.
    """
    out: list[Entry] = []
    limit = 1 << MAX_BATCH_DEPTH
    for start in range(0, len(entries), limit):
        out.extend(_seal_group(identity, entries[start : start + limit]))
    return out


def _seal_group(identity: Identity, group: list[Entry]) -> list[Entry]:
    for entry in group:
        if entry.author != identity.peer_id or entry.signature:
            raise InvalidEntry("only unsigned entries of this identity are sealed", **entry.where())
    if len(group) == 1:
        return [_sign_alone(identity, group[0])]
    depth = math.ceil(math.log2(len(group)))
    levels = [[_leaf(e.id) for e in group] + [_PAD_LEAF] * ((1 << depth) - len(group))]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([_node(below[i], below[i + 1]) for i in range(0, len(below), 2)])
    signature = identity.sign(
        Domain.ENTRY_GROUP, _root_message(identity.peer_id, depth, levels[-1][0])
    )
    sealed = []
    for index, entry in enumerate(group):
        siblings = tuple(levels[level][(index >> level) ^ 1] for level in range(depth))
        proof = (index, siblings)
        encoded = bytes((_ARRAY_10,)) + entry.encoded[1:] + _auth_field(signature, proof)
        if len(encoded) > MAX_ENTRY_SIZE:
            raise InvalidEntry(f"entry of {len(encoded)} bytes exceeds {MAX_ENTRY_SIZE}")
        sealed.append(
            Entry(
                entry.document,
                entry.author,
                entry.seq,
                entry.prev,
                entry.timestamp,
                entry.kind,
                entry.acl,
                entry.payload,
                signature,
                encoded,
                entry.id,
                proof,
            )
        )
    return sealed


def _sign_alone(identity: Identity, draft: Entry) -> Entry:
    """An unsigned entry (whose ``encoded`` is its nine fields) signed on its own."""
    body = draft.encoded
    signature = identity.sign(Domain.ENTRY, body)
    encoded = bytes((_ARRAY_10,)) + body[1:] + _SIG_HEADER + signature
    if len(encoded) > MAX_ENTRY_SIZE:
        raise InvalidEntry(
            f"entry of {len(encoded)} bytes exceeds {MAX_ENTRY_SIZE}", **draft.where()
        )
    return Entry(  # not dataclasses.replace: this is on every signed write's path
        draft.document,
        draft.author,
        draft.seq,
        draft.prev,
        draft.timestamp,
        draft.kind,
        draft.acl,
        draft.payload,
        signature,
        encoded,
        draft.id,
    )


def _entry_id(body: bytes) -> bytes:
    """An entry's id: the hash of its nine signed fields (not of how it is signed)."""
    return hashlib.blake2b(body, digest_size=32).digest()


def _leaf(entry_id: bytes) -> bytes:
    return hashlib.blake2b(b"\x00" + entry_id, digest_size=32).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.blake2b(b"\x01" + left + right, digest_size=32).digest()


def _root_message(author: PeerId, depth: int, root: bytes) -> bytes:
    return bytes((depth,)) + author.key + root


def _auth_field(signature: bytes, proof: tuple[int, tuple[bytes, ...]] | None) -> bytes:
    """The encoded tenth field: the signature, or [signature, index, siblings].

    Written out by hand (it is on every entry's hot path); the same bytes as
    canonical CBOR, which a test checks.
    """
    if proof is None:
        return _SIG_HEADER + signature
    index, siblings = proof
    if index < 24:
        encoded_index = bytes((index,))
    elif index < 256:
        encoded_index = b"\x18" + bytes((index,))
    else:
        return cbor2.dumps([signature, index, list(siblings)], canonical=True)
    head = b"\x83" + _SIG_HEADER + signature + encoded_index + bytes((0x80 + len(siblings),))
    return head + b"".join(_HASH_HEADER + h for h in siblings)


def _parse_proof(
    field_value: list[Any], document: str, seq: object
) -> tuple[object, tuple[int, tuple[bytes, ...]]]:
    if len(field_value) != 3:
        raise InvalidEntry("a group proof is [signature, index, siblings]", document=document)
    signature, index, siblings = field_value
    if not isinstance(siblings, list) or not 1 <= len(siblings) <= MAX_BATCH_DEPTH:
        raise InvalidEntry(f"a group proof has 1..{MAX_BATCH_DEPTH} siblings", document=document)
    if not all(isinstance(h, bytes) and len(h) == 32 for h in siblings):
        raise InvalidEntry("a group proof's siblings are 32-byte hashes", document=document)
    if type(index) is not int or not 0 <= index < (1 << len(siblings)):
        raise InvalidEntry("a group proof's index is out of range", document=document)
    return signature, (index, tuple(siblings))
