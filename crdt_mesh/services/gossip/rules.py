"""Membership's small pure rules: sampling a few members out of many without a
filtered copy, and checking the strings a record holds. (The detector and the
broadcaster, the larger rules, are :mod:`.swim` and :mod:`.epidemic`.)"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Sequence
from typing import Any, TypeVar

from ...arguments import strings as checked_strings

T = TypeVar("T")


def sample_distinct(
    rng: random.Random, members: Sequence[T], count: int, avoid: Collection[T] = ()
) -> list[T]:
    """Up to ``count`` distinct random ``members``, none of ``avoid``.

    Small views are filtered and sampled; large ones are drawn from directly,
    so that picking 3 of 10,000 costs 3 draws, not a copy of the list.
    """
    if len(members) <= 4 * (count + len(avoid)):
        pool = [m for m in members if m not in avoid]
        return rng.sample(pool, min(count, len(pool)))
    picked: list[T] = []
    while len(picked) < count:
        member = members[rng.randrange(len(members))]
        if member not in avoid and member not in picked:
            picked.append(member)
    return picked


def strings(values: Iterable[Any], what: str) -> tuple[str, ...]:
    """``values`` as a tuple of non-empty strings.

    Raises:
        ArgumentTypeError: not a list of strings (a lone str is not one).
        ArgumentValueError: an empty string.
    """
    return checked_strings(what, values)
