"""Hypothesis strategies: operations on documents, delivery schedules, hostile frames.

Import requires hypothesis (a test dependency, not a runtime one).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, TypeVar

from hypothesis import strategies as st

from .ops import Op
from .sim import Faults

T = TypeVar("T")

# pycrdt indexes Text by UTF-8 byte offset and panics on a slice inside a
# character, so text edits use ASCII; values in maps and arrays use any text.
_ascii = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_keys = st.sampled_from(["a", "b", "c", "d", "e"])
_scalars = st.one_of(
    st.integers(-1000, 1000),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
)
_where = st.floats(0, 1, exclude_max=True, allow_nan=False)


def ops() -> st.SearchStrategy[Op]:
    """Any single operation on the map, array and text roots."""
    return st.one_of(
        st.builds(Op, st.just("map_set"), _keys, _scalars),
        st.builds(Op, st.just("map_nested"), _keys, _scalars),
        st.builds(Op, st.just("map_delete"), _keys),
        st.builds(Op, st.just("array_insert"), value=_scalars, where=_where),
        st.builds(Op, st.just("array_delete"), where=_where),
        st.builds(
            Op, st.just("text_insert"), value=st.text(_ascii, min_size=1, max_size=6), where=_where
        ),
        st.builds(Op, st.just("text_delete"), where=_where, length=st.integers(1, 4)),
    )


def transactions(max_ops: int = 4) -> st.SearchStrategy[list[Op]]:
    """The operations of one transaction."""
    return st.lists(ops(), min_size=1, max_size=max_ops)


@st.composite
def deliveries(
    draw: st.DrawFn, items: Sequence[T], *, max_duplicates: int = 3, max_batches: int = 5
) -> list[list[T]]:
    """A delivery schedule of ``items``: any order, some duplicated, split into batches."""
    order = draw(st.permutations(list(items)))
    extra = draw(st.lists(st.sampled_from(list(items)), max_size=max_duplicates)) if items else []
    stream: list[Any] = list(order)
    for item in extra:
        stream.insert(draw(st.integers(0, len(stream))), item)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=max_batches - 1)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def faults(max_probability: float = 0.3) -> st.SearchStrategy[Faults]:
    """Network faults for :class:`~crdt_mesh.testing.sim.SimulatedMesh`."""
    probability = st.sampled_from([0.0, 0.0, 0.05, 0.1, max_probability])
    return st.builds(Faults, loss=probability, duplication=probability, reorder=probability)


# -- a hostile peer's frames --------------------------------------------------------------------

_bounds = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=3),
    st.binary(min_size=48, max_size=48),
)


@st.composite
def _reconcile_part(draw: st.DrawFn) -> list[Any]:
    lower, upper = sorted((draw(_bounds), draw(_bounds)))
    if draw(st.booleans()):
        return [0, lower, upper, draw(st.binary(min_size=16, max_size=16)), draw(st.integers(0, 9))]
    item = st.tuples(
        st.binary(min_size=48, max_size=48),
        st.integers(0, 50),
        st.binary(min_size=32, max_size=32),
        st.booleans(),
    ).map(list)
    return [1, lower, upper, draw(st.lists(item, max_size=3)), draw(st.booleans())]


@st.composite
def sync_frames(draw: st.DrawFn, entries: Sequence[bytes] = ()) -> bytes:
    """One frame a hostile peer might send on a sync link: well-formed CBOR of every
    message type (hello, reconcile, entries, broadcast), with values chosen to probe
    the rules: whole-range openers and items, repeated and overlapping parts, any
    round and step numbers, real ``entries`` and corrupted copies of them.
    """
    import cbor2

    from ..sync.messages import PROTOCOL_VERSION

    kind = draw(st.sampled_from(["hello", "opener", "whole", "reconcile", "entries", "broadcast"]))
    round_, step = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    if kind == "hello":
        version = draw(st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION, 1, 99]))
        return cbor2.dumps([0, version, draw(st.integers(0, 1 << 22))])
    if kind == "opener":  # a round opened with any fingerprint
        part = [0, b"", b"", draw(st.binary(min_size=16, max_size=16)), draw(st.integers(0, 9))]
        return cbor2.dumps([1, round_, 0, [part]])
    if kind == "whole":  # "the whole range, I have nothing, send it" — once or repeated
        copies = draw(st.integers(1, 64))
        part = [1, b"", b"", [], draw(st.booleans())]
        return cbor2.dumps([1, round_, step, [part] * copies])
    if kind == "reconcile":
        parts = draw(st.lists(_reconcile_part(), max_size=8))
        if draw(st.booleans()):
            parts.sort(key=lambda p: (p[1], p[2]))
        return cbor2.dumps([1, round_, step, parts])
    if kind == "entries":
        pool = list(entries)
        chosen: list[bytes] = draw(st.lists(st.sampled_from(pool), max_size=6)) if pool else []
        corrupt: bool = draw(st.booleans())
        if chosen and corrupt:
            i = draw(st.integers(0, len(chosen) - 1))
            flip = draw(st.integers(0, 1 << 16)) % len(chosen[i])  # whatever the length
            raw = bytearray(chosen[i])
            raw[flip] ^= 1 << draw(st.integers(0, 7))
            chosen[i] = bytes(raw)
        chosen += draw(st.lists(st.binary(max_size=40), max_size=2))
        return cbor2.dumps([2, chosen, draw(st.booleans())])
    return cbor2.dumps([3, draw(st.binary(max_size=64))])
