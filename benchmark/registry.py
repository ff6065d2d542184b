"""The one rule every registry (tests, models, methods, metrics) follows when something is added to it."""

from __future__ import annotations

import importlib
import importlib.metadata
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


# The entry-point group an installed package declares its plugin modules under (pyproject.toml:
# [project.entry-points."saliency_sanity_checks.plugins"] my_suite = "my_suite"); every run imports them.
ENTRY_POINT_GROUP = "saliency_sanity_checks.plugins"
_installed_loaded = False


def load_installed_plugins() -> None:
    """Import the plugin modules installed packages declare under ``ENTRY_POINT_GROUP`` (once per process); one that
    does not import is an error naming the entry point and its package."""
    global _installed_loaded
    if _installed_loaded:
        return
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as err:
            package = entry.dist.name if entry.dist is not None else "?"
            raise ValueError(f"the installed plugin {entry.name} = {entry.value!r} (entry point group "
                             f"{ENTRY_POINT_GROUP}, package {package!r}) does not import ({type(err).__name__}: "
                             f"{err}); fix or uninstall {package}") from None
    _installed_loaded = True


def load_plugins(modules: Any, key: str = "plugins") -> None:
    """Import the installed packages' plugins and the user's modules before the config is read, so the tests,
    methods, models and metrics they register (``checks.register``, ``register_method``, ``register_model``,
    ``register_metric``) are selectable by name."""
    if isinstance(modules, str) or not all(isinstance(m, str) and m for m in modules):
        raise ValueError(f"{key}={modules!r} must be a list of module names, e.g. {key}=[my_tests]")
    load_installed_plugins()
    for name in modules:
        import_module(name, key, list(modules))
