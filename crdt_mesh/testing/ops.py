"""Operations on documents, as plain values that hypothesis can generate and shrink."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pycrdt

from ..replica.document import Document

#: Root names used by generated operations, by root type.
MAP_ROOT, ARRAY_ROOT, TEXT_ROOT = "map", "array", "text"


@dataclass(frozen=True, slots=True)
class Op:
    """One change to a document.

    ``kind`` is one of ``map_set``, ``map_delete``, ``map_nested``,
    ``array_insert``, ``array_delete``, ``text_insert``, ``text_delete``.
    ``where`` is a fraction in [0, 1) that picks a position in the current
    content, so that an operation stays valid whatever state it meets.
    """

    kind: str
    key: str = ""
    value: Any = None
    where: float = 0.0
    length: int = 1


def _position(where: float, size: int, *, inclusive: bool) -> int:
    span = size + 1 if inclusive else size
    return min(int(where * span), max(span - 1, 0))


def apply_op(document: Document, op: Op) -> None:
    """Apply ``op`` to ``document`` (call it inside ``document.transaction()``)."""
    if op.kind == "map_set":
        document.map(MAP_ROOT)[op.key] = op.value
    elif op.kind == "map_nested":
        document.map(MAP_ROOT)[op.key] = pycrdt.Map(
            {"value": op.value, "list": pycrdt.Array([op.value])}
        )
    elif op.kind == "map_delete":
        root = document.map(MAP_ROOT)
        if op.key in root:
            del root[op.key]
    elif op.kind == "array_insert":
        array = document.array(ARRAY_ROOT)
        array.insert(_position(op.where, len(array), inclusive=True), op.value)
    elif op.kind == "array_delete":
        array = document.array(ARRAY_ROOT)
        if len(array):
            del array[_position(op.where, len(array), inclusive=False)]
    elif op.kind == "text_insert":
        text = document.text(TEXT_ROOT)
        text.insert(_position(op.where, len(text), inclusive=True), str(op.value))
    elif op.kind == "text_delete":
        text = document.text(TEXT_ROOT)
        if len(text):
            start = _position(op.where, len(text), inclusive=False)
            del text[start : min(start + op.length, len(text))]
    else:
        raise ValueError(f"unknown op kind {op.kind!r}")


def document_json(document: Document) -> dict[str, Any]:
    """Every root the document holds, as plain Python values, whatever its schema.

    A replica that only received a root does not know its type (Yrs learns it when
    the root is first read), so each root is read from the document's update as a
    map, as an array and as text, and shown as what its content is: a dict (map
    entries), a str (text) or a list (any other sequence). A root with both map
    entries and a sequence shows both (``{"map": ..., "sequence": ...}``). Empty
    roots are left out: a root nobody wrote to is the same as no root.
    """
    update = document.update()
    names = _fresh(update).keys()
    found: dict[str, Any] = {}
    for name in sorted(names):
        entries = _fresh(update).get(name, type=pycrdt.Map).to_py() or {}
        items = _fresh(update).get(name, type=pycrdt.Array).to_py() or []
        text = str(_fresh(update).get(name, type=pycrdt.Text))
        sequence: Any = items
        if items and text == "".join(x if isinstance(x, str) else "\0" for x in items):
            sequence = text  # string content only: a text
        if entries and items:
            found[name] = {"map": entries, "sequence": sequence}
        elif entries:
            found[name] = entries
        elif items:
            found[name] = sequence
    return found


def _fresh(update: bytes) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(update)
    return doc
