"""Saliency methods and controls, by registry key (the same name as conf/method/<key>.yaml)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from benchmark.methods.base import Method
from benchmark.methods.captum import CaptumMethod
from benchmark.methods.edge import Edge
from benchmark.methods.engine import IG_RULES, Engine
from benchmark.methods.gradcam import GradCAM
from benchmark.methods.gradient import Gradient
from benchmark.methods.gradient_x_input import GradientXInput
from benchmark.methods.guided_backprop import GuidedBackprop
from benchmark.methods.guided_gradcam import GuidedGradCAM
from benchmark.methods.ig_smoothgrad import IGSmoothGrad
from benchmark.methods.integrated_gradients import IntegratedGradients
from benchmark.methods.noise import Noise
from benchmark.methods.smoothgrad import SmoothGrad
from benchmark.methods.vargrad import VarGrad

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (Gradient, GradientXInput, IntegratedGradients, SmoothGrad, VarGrad, IGSmoothGrad,
                GuidedBackprop, GradCAM, GuidedGradCAM, Edge, Noise)
}
METHODS["captum"] = CaptumMethod
CONTROLS = frozenset(name for name, cls in METHODS.items() if not cls.uses_model)  # edge, noise


def build_method(name: str, settings: Mapping[str, Any] | None = None) -> Method:
    """One method from its registry key and settings, every setting checked."""
    if name not in METHODS:
        raise ValueError(f"method {name!r} is not a known method; use some of {sorted(METHODS)}")
    cls = METHODS[name]
    settings = dict(settings or {})
    allowed = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in settings.items():
        if key not in allowed:
            raise ValueError(
                f"method.{name}.{key}={value!r}: {name} has no setting {key!r}; its settings are "
                f"{sorted(allowed) or 'none'}"
            )
        if key in ("n_samples", "n_steps") and (not isinstance(value, int) or value < 1):
            raise ValueError(f"method.{name}.{key}={value!r} must be a positive whole number, e.g. 50")
        if key == "noise_level" and (not isinstance(value, (int, float)) or value <= 0):
            raise ValueError(f"method.{name}.{key}={value!r} must be a positive number, e.g. 0.15")
        if key == "baseline" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"method.{name}.baseline={value!r} must be a number (the constant baseline image), "
                             "e.g. 0.0")
        if key == "rule" and value not in IG_RULES:
            raise ValueError(f"method.{name}.rule={value!r} is not an IG rule; use one of {list(IG_RULES)}")
    method = cls(**settings)
    method.check()
    return method


def build_methods(spec: Mapping[str, Any]) -> list[Method]:
    """Methods from ``{name: settings}`` in the given order; an empty spec is an error."""
    if not spec:
        raise ValueError(
            "method is empty: choose at least one method, e.g. method=[gradient,smoothgrad]; "
            f"known methods are {sorted(METHODS)}"
        )
    return [build_method(name, settings) for name, settings in spec.items()]


__all__ = ["METHODS", "CONTROLS", "Method", "Engine", "build_method", "build_methods"]
