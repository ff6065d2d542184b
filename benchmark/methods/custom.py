"""A method by import path: ``method=[gradient,custom] method.custom.target=my_methods:saliency``, or several under
names of their own: ``method=[gradient] +method.mine.target=my_methods:saliency +method.theirs.target=lib:explain``.

The target is a function ``(model, x, target) -> map``, or a class built as ``cls(model, **init_kwargs)``
whose ``attribute(x, target=...)`` gives the map (Captum's contract). Reported under ``label``, or the
target's attribute name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from benchmark.methods.base import ExternalMethod
from benchmark.methods.external import CallableMethod, check_callable


@dataclass(frozen=True, eq=False)
class CustomMethod(ExternalMethod):
    """``method.custom.target=my_methods:saliency``: a function (model, x, target) -> map by import path, or a
    class built as ``cls(model, **init_kwargs)`` whose ``attribute(x, target=target)`` gives the map."""

    target: Optional[str] = None
    label: Optional[str] = None
    signed: bool = True
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    registry_name = "custom"
    modality = "any"

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.label or (self.target or "custom").partition(":")[2].split(".")[-1] or "custom"

    def resolve(self) -> Any:
        from benchmark.models.external import import_target

        key = f"method.{self.label if self.label and self.registry_name != self.label else 'custom'}.target"
        obj = import_target(self.target, key)
        if not isinstance(obj, type):
            check_callable(obj, key)
        return obj

    def check(self) -> None:
        self.resolve()

    def attribute(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        obj = self.resolve()
        if isinstance(obj, type):
            return obj(model, **self.init_kwargs).attribute(x, target=target)
        return CallableMethod(obj).attribute(model, x, target)
