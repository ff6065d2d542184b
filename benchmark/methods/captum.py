"""Any ``captum.attr`` input attribution method, by class name (an adapter; needs the captum package).

    method=[gradient,captum] method.captum.attribution=DeepLift
    method.captum.attribute_kwargs='{baselines: 0.0}'

The map is ``Attribution(model).attribute(x, target=target, **attribute_kwargs)``. Results are
reported under the name ``captum_<attribution>`` in lower case. Captum's own batching is used,
so no passes are shared with the suite's engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from benchmark.methods.base import Method


@dataclass(frozen=True)
class CaptumMethod(Method):
    attribution: str = "Saliency"
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    attribute_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"captum_{self.attribution.lower()}"

    def __hash__(self) -> int:
        return hash((self.attribution, repr(sorted(self.init_kwargs.items())),
                     repr(sorted(self.attribute_kwargs.items()))))

    def check(self) -> None:
        self.resolve()

    def resolve(self) -> type:
        try:
            import captum.attr as attr
        except ImportError:
            raise ValueError("method captum needs the captum package: pip install captum "
                             "(or pip install -e '.[dev]')") from None
        cls = getattr(attr, self.attribution, None)
        if not isinstance(cls, type) or not hasattr(cls, "attribute") or self.attribution.startswith("Layer") \
                or self.attribution.startswith("Neuron"):
            raise ValueError(f"method.captum.attribution={self.attribution!r} is not an input attribution "
                             "class of captum.attr; use e.g. Saliency, DeepLift, InputXGradient, Occlusion")
        return cls

    def attribute(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        algo = self.resolve()(model, **self.init_kwargs)
        return algo.attribute(x.detach().clone().requires_grad_(True), target=target, **self.attribute_kwargs)
