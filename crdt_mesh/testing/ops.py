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
    """The content of the generated roots as plain Python values."""
    return {
        MAP_ROOT: document.map(MAP_ROOT).to_py(),
        ARRAY_ROOT: document.array(ARRAY_ROOT).to_py(),
        TEXT_ROOT: str(document.text(TEXT_ROOT)),
    }
