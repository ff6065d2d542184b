"""The one rule every registry (tests, models, methods, metrics) follows when something is added to it."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, TypeVar

T = TypeVar("T")


def add(table: dict[str, Any], name: str, entry: T, kind: str, reserved: Iterable[str] = ()) -> T:
    """``table[name] = entry``; a name already taken (or reserved) is an error naming the kind."""
    if name in table or name in tuple(reserved):
        raise ValueError(f"{kind} {name!r} is registered already; choose another name")
    table[name] = entry
    return entry


def import_module(name: str, key: str, value: Any) -> ModuleType:
    """``importlib.import_module(name)`` with the current folder importable, as for ``python -m``; a module that does
    not import is an error naming ``key`` and ``value``."""
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(name)
    except Exception as err:
        raise ValueError(f"{key}={value!r}: module {name!r} does not import ({type(err).__name__}: {err}); "
                         "run from the folder that holds it or install it") from None


def load_plugins(modules: Any, key: str = "plugins") -> None:
    """Import the user's modules before the config is read, so the tests, methods, models and metrics they register
    (``checks.register``, ``register_method``, ``register_model``, ``register_metric``) are selectable by name."""
    if isinstance(modules, str) or not all(isinstance(m, str) and m for m in modules):
        raise ValueError(f"{key}={modules!r} must be a list of module names, e.g. {key}=[my_tests]")
    for name in modules:
        import_module(name, key, list(modules))
