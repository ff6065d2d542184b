"""Any ``captum.attr`` input attribution method, by class name (an adapter; needs the captum package).

    method=[gradient,captum_deeplift,captum_occlusion]
    +method.captum_occlusion.attribute_kwargs.sliding_window_shapes=[1,4,4]
    method=[gradient,captum] method.captum.attribution=DeepLift     (the generic slot)

The map is ``Attribution(model).attribute(x, target=target, **attribute_kwargs)``. Results are
reported under the name ``captum_<attribution>`` in lower case. Captum's own batching is used,
so no passes are shared with the suite's engine.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmark.methods.base import ExternalMethod


@dataclass(frozen=True)
class CaptumMethod(ExternalMethod):
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
            import captum.attr  # noqa: F401  (installed?)
        except ImportError:
            raise ValueError("method captum needs the captum package: pip install captum "
                             "(or pip install -e '.[dev]')") from None
        cls = input_attributions().get(self.attribution.lower())
        if cls is None:
            raise ValueError(f"method.captum.attribution={self.attribution!r} is not an input attribution "
                             "class of captum.attr; use e.g. Saliency, DeepLift, InputXGradient, Occlusion "
                             f"(all: {sorted(c.__name__ for c in input_attributions().values())})")
        return cls

    def attribute(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        algo = self.resolve()(model, **self.init_kwargs)
        return algo.attribute(x.detach().clone().requires_grad_(True), target=target, **self.attribute_kwargs)


def input_attributions() -> dict[str, type]:
    """captum.attr's input attribution classes by lower-case name (``deeplift`` -> DeepLift); {} without captum."""
    try:
        import captum.attr as attr
    except ImportError:
        return {}
    out = {}
    for name in dir(attr):
        cls = getattr(attr, name)
        if (isinstance(cls, type) and issubclass(cls, attr.Attribution) and hasattr(cls, "attribute")
                and not name.startswith(("Layer", "Neuron", "Internal")) and name not in ("Attribution",)
                and not inspect.isabstract(cls)):
            out[name.lower()] = cls
    return out


def captum_method(name: str, settings: dict[str, Any]) -> CaptumMethod:
    """``captum_<class>`` (e.g. captum_deeplift): a Captum class chosen by its registry key."""
    cls = input_attributions().get(name[len("captum_"):])
    if cls is None:
        if not input_attributions():
            raise ValueError(f"method {name!r} needs the captum package: pip install captum")
        raise ValueError(f"method {name!r} names no input attribution class of captum.attr; use captum_ and one of "
                         f"{sorted(input_attributions())}")
    given = settings.get("attribution")
    if given is not None and given.lower() != cls.__name__.lower():
        raise ValueError(f"method.{name}.attribution={given!r} contradicts the method's name; leave it out")
    return CaptumMethod(**{**settings, "attribution": cls.__name__})
