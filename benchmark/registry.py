"""The one rule every registry (tests, models, methods, metrics) follows when something is added to it."""

from __future__ import annotations

from typing import Any, Iterable, TypeVar

T = TypeVar("T")


def add(table: dict[str, Any], name: str, entry: T, kind: str, reserved: Iterable[str] = ()) -> T:
    """``table[name] = entry``; a name already taken (or reserved) is an error naming the kind."""
    if name in table or name in tuple(reserved):
        raise ValueError(f"{kind} {name!r} is registered already; choose another name")
    table[name] = entry
    return entry
