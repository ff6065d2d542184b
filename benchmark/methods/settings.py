"""One typed settings node per method, made from the method's dataclass: the command line's schema and defaults.

``benchmark.cli`` stores each node in Hydra's ConfigStore as the option ``method=<name>``, so the method's dataclass
is the only place its settings and defaults are written. A method with an image class and a text twin
(``benchmark.methods.text``) gets one node with the fields of both; where both have a field, the image class's
default is the node's, and a field of the text twin alone defaults to null, the text method's own default
(``reduction``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Dict, Optional, Union

_PRIMITIVES = (int, float, bool, str)


def _omegaconf_type(hint: Any) -> Any:
    """The hint as a type OmegaConf can check: a primitive, an Optional primitive, a string-keyed dict; else Any."""
    if hint in _PRIMITIVES:
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in _PRIMITIVES:
            return Optional[rest[0]]
    if origin is dict and args[:1] == (str,):
        return Dict[str, Any]
    return Any


def _merged_type(a: Any, b: Any) -> Any:
    """One field's type when an image class and its text twin both declare it (``None``: a field the image class
    only carries, always None, e.g. ``reduction``)."""
    if a == b:
        return a
    for none, other in ((a, b), (b, a)):
        if none is type(None) and other in _PRIMITIVES:
            return Optional[other]
    return Any


def _default(f: dataclasses.Field) -> Any:
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return list(value) if isinstance(value, tuple) else value


def settings_schema(name: str, classes: list[type]) -> type:
    """A plain dataclass ``<Class>Settings`` with the settings (``init`` fields) of ``classes``, the first class's
    default first."""
    spec: dict[str, tuple[Any, Any]] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            hint = hints[f.name] if hints[f.name] is not None else type(None)
            if f.name in spec:
                spec[f.name] = (_merged_type(spec[f.name][0], hint), spec[f.name][1])
            elif cls is classes[0]:
                spec[f.name] = (hint, _default(f))
            else:  # a text twin's own setting: null, the text method's default (an image model refuses a value)
                spec[f.name] = (_merged_type(type(None), hint), None)
    made = []
    for key, (hint, default) in spec.items():
        typ = _omegaconf_type(hint) if hint is not type(None) else Optional[str]
        if isinstance(default, (list, dict)):
            made.append((key, typ, dataclasses.field(default_factory=lambda d=default: type(d)(d))))
        else:
            made.append((key, typ, dataclasses.field(default=default)))
    schema = dataclasses.make_dataclass(f"{classes[0].__name__}Settings", made,
                                        namespace={"__doc__": f"The settings of method {name!r} (from "
                                                              f"{', '.join(c.__name__ for c in classes)})."})
    schema.__module__ = __name__
    return schema


def method_nodes() -> dict[str, type]:
    """``{method name: settings schema}`` for every registered method, image and text, and the ``captum`` and
    ``custom`` slots."""
    from benchmark.methods import METHODS, TEXT_METHODS

    out = {}
    for name in sorted(set(METHODS) | set(TEXT_METHODS)):
        out[name] = settings_schema(name, [c for c in (METHODS.get(name), TEXT_METHODS.get(name)) if c is not None])
    return out


def check_nodes(method: Any) -> None:
    """Refuse a setting a method's typed node does not have. Hydra's ``+method.<name>.<key>=...`` adds it to the
    node anyway, and turning the config into objects would drop it without a word."""
    from omegaconf import OmegaConf

    for name, node in method.items():
        schema = OmegaConf.get_type(node)
        if not (dataclasses.is_dataclass(schema) and schema.__module__ == __name__):
            continue
        allowed = [f.name for f in dataclasses.fields(schema)]
        for key in node:
            if key not in allowed:
                raise ValueError(f"method.{name}.{key}={node[key]!r}: {name} has no setting {key!r}; its settings are "
                                 f"{sorted(allowed) or 'none'}")


def as_settings(node: Any) -> Any:
    """A method's settings as a plain dict (a settings dataclass from the typed config, or a mapping as given)."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}
    return node
