"""How a config field enters the run id: a neutral group (runtime, paths, report: left out), a result key (hashed),
or a result key added later (hashed only away from its default, so earlier runs keep their ids)."""

from __future__ import annotations

from dataclasses import MISSING, field, fields, is_dataclass
from typing import Any

# The groups of keys that change no value: how a run computes (runtime), where it writes (paths), how its
# reports judge (report). Every other key is a result key: the run id hashes exactly those.
NEUTRAL_GROUPS = ("runtime", "paths", "report")


def neutral(group: str, default: Any = MISSING, factory: Any = MISSING) -> Any:
    """A config field in one of ``NEUTRAL_GROUPS`` (its group in the field's metadata)."""
    assert group in NEUTRAL_GROUPS, group
    return field(default=default, default_factory=factory, metadata={"group": group})


def hashed_unless_default(default: Any) -> Any:
    """A result key added after run ids were first issued: hashed into the run id only when it differs from
    ``default``, so every run made before it existed keeps its id (``hash_omitted``, ``store.config_hash``)."""
    return field(default=default, metadata={"hash": "unless_default"})


def hash_omitted(cfg: Any) -> list[tuple[str, str]]:
    """(group, key) of every ``hashed_unless_default`` key of ``cfg``'s groups that is at its default."""
    out = []
    for group in fields(cfg):
        value = getattr(cfg, group.name)
        if not is_dataclass(value):
            continue
        for f in fields(value):
            if f.metadata.get("hash") == "unless_default" and getattr(value, f.name) == f.default:
                out.append((group.name, f.name))
    return out


def neutral_keys(cls: type) -> frozenset[str]:
    """The keys whose field says they change no value (groups runtime, paths, report): left out of the run id."""
    return frozenset(f.name for f in fields(cls) if f.metadata.get("group") in NEUTRAL_GROUPS)
