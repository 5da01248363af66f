"""Hypothesis strategies for operations on documents and for delivery schedules.

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
