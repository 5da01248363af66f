"""Checks of public arguments: a wrong one is a typed error that names it.

Used at the door of every public call, before anything is read or written, so
that a caller's mistake surfaces as :class:`~crdt_mesh.errors.ArgumentTypeError`
(also a ``TypeError``) or a ``ValueError`` of ours naming the argument, never as
another library's exception from deep inside.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any, TypeVar

from .errors import ArgumentTypeError, ArgumentValueError, LocalError

T = TypeVar("T")


def of_type(name: str, value: Any, kind: type[T] | tuple[type, ...], expected: str) -> T:
    """``value`` if it is a ``kind``; else ArgumentTypeError naming ``name``."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise ArgumentTypeError(f"{name}: {expected}, not {_show(value)}")
    return value  # type: ignore[return-value]


def number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    above: float | None = None,
    error: type[LocalError] = ArgumentValueError,
) -> float:
    """``value`` as a finite float within the bounds given (``above``: strictly).

    Raises:
        ArgumentTypeError: not a number (a bool is not one).
        ``error`` (a ValueError): out of bounds, or not finite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArgumentTypeError(f"{name}: a number, not {_show(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise error(f"{name}: a finite number, not {value!r}")
    if low is not None and result < low:
        raise error(f"{name}: at least {low:g}, not {value!r}")
    if above is not None and result <= above:
        raise error(f"{name}: more than {above:g}, not {value!r}")
    if high is not None and result > high:
        raise error(f"{name}: at most {high:g}, not {value!r}")
    return result


def integer(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    error: type[LocalError] = ArgumentValueError,
) -> int:
    """``value`` if it is an int within the bounds given (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name}: an int, not {_show(value)}")
    if low is not None and value < low:
        raise error(f"{name}: at least {low}, not {value!r}")
    if high is not None and value > high:
        raise error(f"{name}: at most {high}, not {value!r}")
    return value


def strings(name: str, value: Any, *, allow_empty_items: bool = False) -> tuple[str, ...]:
    """A list or tuple of strings (a lone str is refused: it is not a list of them)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ArgumentTypeError(f"{name}: a list of strings, not {_show(value)}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise ArgumentTypeError(f"{name}: a list of strings, holding {_show(item)}")
        if not item and not allow_empty_items:
            raise ArgumentValueError(f"{name}: a list of non-empty strings")
    return items


def path(name: str, value: Any) -> str | os.PathLike[str]:
    """A filesystem path (str or os.PathLike)."""
    if not isinstance(value, str | os.PathLike):
        raise ArgumentTypeError(f"{name}: a path (str or os.PathLike), not {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}" if not isinstance(value, type) else text
