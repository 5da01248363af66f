"""Entries packed for the wire: what entries travelling together share, sent once.

Entries that cross a link together mostly share their author, their document,
their chain and their group signature; each entry's stored bytes repeat all of
it (a small update signed in a group of 50 is 25 bytes of payload in 393 bytes).
A pack sends what is shared once:

=========  ==================================================================
pack       ``[author, [group, ...], [run, ...]]``: the entries of one author
group      ``[signature, depth, [hash, ...]]``: one signature group, with the
           Merkle nodes its packed entries do not give (see below)
run        ``[document, seq, prev, [entry, ...]]``: consecutive entries of one
           feed; the first has ``seq`` and ``prev``, each next one seq + 1 and
           the id of the one before
entry      ``[timestamp, kind, acl, payload, signature]`` signed alone, or
           ``[timestamp, kind, acl, payload, group, index]`` in a group (the
           group's place in the pack, the entry's leaf in the group);
           ``timestamp`` is the difference from the previous entry of the run
=========  ==================================================================

A group's hashes are the nodes needed to reach its root from the leaves of its
packed entries, in the order a walk from the leaves up, level by level and
left to right, first needs them: a whole group needs none but those of its
padding. Unpacking rebuilds each entry's canonical bytes, id and path to its
group's root: the same :class:`Entry` that :meth:`Entry.decode` gives for those
bytes, not yet verified (ingest verifies it, as it verifies decoded bytes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import InvalidEntry
from ..identity import PeerId
from .entry import (
    _ARRAY_10,
    _KINDS,
    _SIG_HEADER,
    MAX_BATCH_DEPTH,
    MAX_ENTRY_SIZE,
    Entry,
    EntryKind,
    _auth_field,
    _encode_body,
    _entry_id,
    _leaf,
    _node,
)
from .ids import DocumentId

#: Bytes of a group proof in an entry's encoding, less its index: array, signature,
#: array of siblings; and of each sibling.
_PROOF_HEAD = 1 + 2 + 64 + 1
_SIBLING = 2 + 32
#: An entry's own fields, in the order of :class:`Entry`: seq, prev, timestamp, kind,
#: acl, payload.
_Fields = tuple[int, bytes, int, EntryKind, int, bytes]


def pack(entries: Sequence[Entry]) -> list[list[Any]]:
    """``entries`` as packs, one per author, in the order each author first appears;
    an author's entries in the order of their feeds and seqs (so that consecutive
    entries form runs, however they were given).

    Every entry must be signed. Unpacking gives the same entries (a copy of one
    entry is sent once).
    """
    by_author: dict[PeerId, list[Entry]] = {}
    seen: set[bytes] = set()
    for entry in entries:
        if not entry.signature:
            raise InvalidEntry("only signed entries are packed", **entry.where())
        if entry.id not in seen:
            seen.add(entry.id)
            by_author.setdefault(entry.author, []).append(entry)
    return [
        _pack_author(author, sorted(own, key=lambda e: (e.document.key, e.seq)))
        for author, own in by_author.items()
    ]


def _pack_author(author: PeerId, entries: list[Entry]) -> list[Any]:
    groups: dict[tuple[bytes, int], int] = {}
    members: list[dict[int, Entry]] = []
    runs: list[list[Any]] = []
    items: list[list[Any]] = []
    last: Entry | None = None
    for entry in entries:
        if (
            last is None
            or entry.document != last.document
            or entry.seq != last.seq + 1
            or entry.prev != last.id
        ):
            items = []
            runs.append([entry.document.text, entry.seq, entry.prev, items])
            delta = entry.timestamp
        else:
            delta = entry.timestamp - last.timestamp
        last = entry
        fields: list[Any] = [delta, int(entry.kind), entry.acl, entry.payload]
        if entry.proof is None:
            items.append([*fields, entry.signature])
            continue
        index, siblings = entry.proof
        key = (entry.signature, len(siblings))
        number = groups.setdefault(key, len(groups))
        if number == len(members):
            members.append({})
        members[number][index] = entry
        items.append([*fields, number, index])
    packed_groups = [
        [signature, depth, list(_needed(members[number], depth))]
        for (signature, depth), number in groups.items()
    ]
    return [author.key, packed_groups, runs]


def _needed(members: dict[int, Entry], depth: int) -> Iterator[bytes]:
    """The nodes of a group that its ``members`` do not give, in the walk's order: each
    taken from the path of an entry below the node whose sibling it is."""
    below = dict(sorted(members.items()))
    for level in range(depth):
        above: dict[int, Entry] = {}
        for index, entry in below.items():
            if index ^ 1 not in below:
                assert entry.proof is not None
                yield entry.proof[1][level]
            above.setdefault(index >> 1, entry)
        below = above


def unpack(value: Any, *, max_bytes: int, max_entries: int) -> list[Entry]:
    """The entries of one pack, not yet verified, in the order they were packed.

    Raises:
        InvalidEntry: the pack is malformed, an entry in it is, or it holds more
            than ``max_entries`` entries or more than ``max_bytes`` bytes of them
            encoded (checked before the work of unpacking them).
    """
    if not isinstance(value, list) or len(value) != 3:
        raise InvalidEntry("a pack is [author, groups, runs]")
    author_key, raw_groups, runs = value
    try:
        author = PeerId(author_key)
    except (TypeError, ValueError) as exc:
        raise InvalidEntry(f"a pack's author: {exc}") from None
    if not isinstance(raw_groups, list) or not isinstance(runs, list) or not runs:
        raise InvalidEntry("a pack's groups and runs are lists, with at least one run")
    if any(not isinstance(r, list) or len(r) != 4 or not isinstance(r[3], list) for r in runs):
        raise InvalidEntry("a run is [document, seq, prev, [entry, ...]]")
    if sum(len(run[3]) for run in runs) > max_entries:
        raise InvalidEntry(f"a pack holds more than {max_entries} entries")
    groups = [_group(raw) for raw in raw_groups]
    members: list[dict[int, int]] = [{} for _ in groups]  # per group: leaf -> slot
    #: each entry, or what a grouped one is made of until its group's paths are known
    slots: list[Entry | tuple[DocumentId, _Fields, bytes, bytes]] = []
    budget = max_bytes
    for doc_text, seq, prev, items in runs:
        document = _document(doc_text)
        if not items:
            raise InvalidEntry("a run holds at least one entry")
        timestamp = 0
        for item in items:
            if not isinstance(item, list) or len(item) not in (5, 6):
                raise InvalidEntry("a packed entry has 5 or 6 fields")
            delta, kind, acl, payload = item[:4]
            if type(delta) is not int or type(kind) is not int or not 0 <= kind < len(_KINDS):
                raise InvalidEntry("a packed entry's timestamp and kind are integers")
            timestamp += delta
            fields: _Fields = (seq, prev, timestamp, _KINDS[kind], acl, payload)
            body = _encode_body(doc_text, author.key, *fields)
            entry_id = _entry_id(body)
            if len(item) == 5:
                signature = item[4]
                if not isinstance(signature, bytes) or len(signature) != 64:
                    raise InvalidEntry("signature must be 64 bytes", document=doc_text, seq=seq)
                encoded = bytes((_ARRAY_10,)) + body[1:] + _SIG_HEADER + signature
                size = len(encoded)
                slots.append(Entry(document, author, *fields, signature, encoded, entry_id))
            else:
                number, index = item[4], item[5]
                if type(number) is not int or not 0 <= number < len(groups):
                    raise InvalidEntry("a packed entry names a group the pack lacks")
                depth = groups[number][1]
                if type(index) is not int or not 0 <= index < (1 << depth):
                    raise InvalidEntry("a packed entry's index is out of its group")
                if index in members[number]:
                    raise InvalidEntry("two packed entries at one leaf of a group")
                members[number][index] = len(slots)
                size = len(body) + _PROOF_HEAD + (1 if index < 24 else 2) + _SIBLING * depth
                slots.append((document, fields, body, entry_id))
            if size > MAX_ENTRY_SIZE:
                raise InvalidEntry(f"entry of {size} bytes exceeds {MAX_ENTRY_SIZE}")
            budget -= size
            if budget < 0:
                raise InvalidEntry(f"a pack's entries exceed {max_bytes} bytes")
            prev, seq = entry_id, seq + 1
    for number, (signature, depth, hashes) in enumerate(groups):
        if not members[number]:
            raise InvalidEntry("a pack's group has no entry")
        ids = {}
        for index, slot in members[number].items():
            held = slots[slot]
            assert isinstance(held, tuple)
            ids[index] = held[3]
        for index, siblings in _paths(ids, depth, hashes):
            slot = members[number][index]
            document, fields, body, entry_id = slots[slot]  # type: ignore[misc]
            proof = (index, siblings)
            encoded = bytes((_ARRAY_10,)) + body[1:] + _auth_field(signature, proof)
            slots[slot] = Entry(document, author, *fields, signature, encoded, entry_id, proof)
    return slots  # type: ignore[return-value]  # every slot is an entry by now


def _document(doc_text: Any) -> DocumentId:
    try:
        document = DocumentId.parse(doc_text)
    except (TypeError, ValueError) as exc:
        raise InvalidEntry(f"a run's document: {exc}") from None
    if document.text != doc_text:
        raise InvalidEntry(f"document id {doc_text!r} is not in canonical form")
    return document


def _group(raw: Any) -> tuple[bytes, int, list[bytes]]:
    if not isinstance(raw, list) or len(raw) != 3:
        raise InvalidEntry("a pack's group is [signature, depth, hashes]")
    signature, depth, hashes = raw
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise InvalidEntry("a group's signature must be 64 bytes")
    if type(depth) is not int or not 1 <= depth <= MAX_BATCH_DEPTH:
        raise InvalidEntry(f"a group's depth is 1..{MAX_BATCH_DEPTH}")
    if not isinstance(hashes, list) or len(hashes) > (1 << depth):
        raise InvalidEntry("a group's hashes are a list, at most one per leaf")
    if not all(isinstance(h, bytes) and len(h) == 32 for h in hashes):
        raise InvalidEntry("a group's hashes are 32 bytes each")
    return signature, depth, hashes


def _paths(
    ids: dict[int, bytes], depth: int, hashes: list[bytes]
) -> Iterator[tuple[int, tuple[bytes, ...]]]:
    """Each leaf's index and sibling path, from the ids of the entries at the leaves
    and the group's ``hashes`` (consumed in the walk's order; all of them, exactly)."""
    given = iter(hashes)
    known = {index: _leaf(entry_id) for index, entry_id in sorted(ids.items())}
    levels: list[dict[int, bytes]] = []
    for _ in range(depth):
        level = dict(known)
        above: dict[int, bytes] = {}
        for index, node in known.items():
            sibling = level.get(index ^ 1)
            if sibling is None:
                sibling = next(given, None)
                if sibling is None:
                    raise InvalidEntry("a pack's group lacks a hash it needs")
                level[index ^ 1] = sibling
            if index & 1 == 0 or index ^ 1 not in known:
                above[index >> 1] = _node(node, sibling) if index & 1 == 0 else _node(sibling, node)
        levels.append(level)
        known = above
    if next(given, None) is not None:
        raise InvalidEntry("a pack's group has hashes it does not need")
    for index in ids:
        yield index, tuple(levels[level][(index >> level) ^ 1] for level in range(depth))
