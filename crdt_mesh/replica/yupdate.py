"""What a Yrs v1 update writes, checked without integrating it into a document.

``pycrdt.get_update(update, state)`` drops every struct that ``state`` already
covers and keeps the whole delete set. Asked with the author's own client id at
the largest clock, it leaves exactly the structs of *other* clients: none may
remain (client-id binding, invariant 3 of docs/architecture.md), and what is left is the
delete set. Asked with a document's state, it tells whether the document integrated
all of the update or keeps some of it pending (missing dependencies).

(``pycrdt.get_state(update)`` is no substitute: it only counts structs that
start at clock 0, so it misses clients whose structs start later.)
"""

from __future__ import annotations

import pycrdt

from ..errors import ClientIdViolation, InvalidUpdate

_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError)
_MAX_CLOCK = (1 << 53) - 1

Ranges = list[tuple[int, int, int]]
_OWN_STATE: dict[int, bytes] = {}  # client id -> its state vector at the largest clock


def _read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise InvalidUpdate("truncated varuint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise InvalidUpdate("varuint too long")


def _write_varuint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def parse_state_vector(state: bytes) -> dict[int, int]:
    """Decode a v1 state vector: client id -> next clock."""
    count, pos = _read_varuint(state, 0)
    clocks: dict[int, int] = {}
    for _ in range(count):
        client, pos = _read_varuint(state, pos)
        clocks[client], pos = _read_varuint(state, pos)
    if pos != len(state):
        raise InvalidUpdate("trailing bytes after state vector")
    return clocks


def encode_state_vector(clocks: dict[int, int]) -> bytes:
    """Encode client id -> clock as a v1 state vector."""
    out = bytearray()
    _write_varuint(out, len(clocks))
    for client, clock in sorted(clocks.items()):
        _write_varuint(out, client)
        _write_varuint(out, clock)
    return bytes(out)


def _diff(update: bytes, state: bytes) -> bytes:
    try:
        return pycrdt.get_update(update, state)
    except _PASS_THROUGH:
        raise
    except BaseException as exc:  # pyo3 panics derive from BaseException
        raise InvalidUpdate(f"not a Yrs v1 update: {exc}") from exc


def _split(rest: bytes) -> tuple[bool, Ranges]:
    """(whether structs remain, the delete set) of a diffed update."""
    if rest == b"\x00\x00":
        return False, []  # the usual answer: nothing left, nothing deleted
    structs, pos = _read_varuint(rest, 0)
    if structs:
        return True, []
    clients, pos = _read_varuint(rest, pos)
    ranges: Ranges = []
    for _ in range(clients):
        client, pos = _read_varuint(rest, pos)
        count, pos = _read_varuint(rest, pos)
        for _ in range(count):
            clock, pos = _read_varuint(rest, pos)
            length, pos = _read_varuint(rest, pos)
            ranges.append((client, clock, length))
    return False, ranges


def check_update(update: bytes, client_id: int) -> None:
    """Check that ``update`` is a Yrs v1 update writing structs of ``client_id`` only.

    Raises:
        InvalidUpdate: the bytes are not a Yrs v1 update.
        ClientIdViolation: the update writes as another client.
    """
    own = _OWN_STATE.get(client_id)
    if own is None:
        if len(_OWN_STATE) > 4096:
            _OWN_STATE.clear()
        own = _OWN_STATE[client_id] = encode_state_vector({client_id: _MAX_CLOCK})
    if _diff(update, own)[:1] != b"\x00":  # a struct count of zero is the single byte 0
        raise ClientIdViolation(
            f"update writes as client ids other than its author's ({client_id})"
        )


def is_integrated(update: bytes, doc_state: bytes) -> bool:
    """True if a document whose state vector is ``doc_state`` integrated all of ``update``.

    Yrs keeps structs (and deletes) whose dependencies are missing in a pending
    area that ``get_update`` does not export; such an update must be replayed
    after a restart rather than trusted to the cached state.
    """
    pending_structs, deletes = _split(_diff(update, doc_state))
    if pending_structs:
        return False
    if not deletes:
        return True
    clocks = parse_state_vector(doc_state)
    return all(clocks.get(c, 0) >= clock + length for c, clock, length in deletes)
