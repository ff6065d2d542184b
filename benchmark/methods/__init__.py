"""Saliency methods and controls, by registry key (the command line's option ``method=<key>``, its typed settings node
made from the class by ``benchmark.methods.settings``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from benchmark.methods.base import ExternalMethod, Method
from benchmark.methods.captum import CaptumMethod, captum_method
from benchmark.methods.edge import Edge
from benchmark.methods.custom import CustomMethod
from benchmark.methods.external import CallableMethod
from benchmark.sampling import IG_RULES
from benchmark.methods.gradcam import GradCAM
from benchmark.methods.gradient import Gradient
from benchmark.methods.gradient_x_input import GradientXInput
from benchmark.methods.guided_backprop import GuidedBackprop
from benchmark.methods.guided_gradcam import GuidedGradCAM
from benchmark.methods.ig_smoothgrad import IGSmoothGrad
from benchmark.methods.integrated_gradients import IntegratedGradients, ShiftedIntegratedGradients
from benchmark.methods.noise import Noise
from benchmark.methods.meaningful_perturbation import MeaningfulPerturbation
from benchmark.methods.perturbation import LeaveOneOut, Lime, Occlusion
from benchmark.methods.propagation import LRP, DeepLift
from benchmark.methods.smoothgrad import SmoothGrad
from benchmark.methods.text import TEXT_METHODS
from benchmark.methods.vargrad import VarGrad

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (Gradient, GradientXInput, IntegratedGradients, SmoothGrad, VarGrad, IGSmoothGrad,
                GuidedBackprop, GradCAM, GuidedGradCAM, Edge, Noise, Occlusion, LeaveOneOut, Lime,
                MeaningfulPerturbation, LRP, DeepLift, ShiftedIntegratedGradients)
}
METHODS["captum"] = CaptumMethod  # the generic slot; captum_<class> names one class each
METHODS["custom"] = CustomMethod
# edge, noise, idf: model-independent maps
CONTROLS = frozenset(name for reg in (METHODS, TEXT_METHODS) for name, cls in reg.items() if not cls.uses_model)


def register_method(cls: type[Method]) -> type[Method]:
    """Add a method class under its ``name`` (a class decorator); a taken name is an error."""
    from benchmark.registry import add

    return add(METHODS, cls.name, cls, "method")


def build_method(name: str, settings: Mapping[str, Any] | None = None, modality: str = "image") -> Method:
    """One method from its registry key and settings, every setting checked. ``modality="text"``: the token-level
    twin where the method has one (``benchmark.methods.text``); a text-only name builds its text method on any model
    (``Method.skip`` then names the mismatch)."""
    settings = dict(settings or {})
    if "reduction" in settings and name in TEXT_METHODS and name in METHODS:  # a text setting of a shared method
        reduction = settings.pop("reduction")
        if reduction is not None and modality != "text":
            raise ValueError(f"method.{name}.reduction={reduction!r} applies to text models (token maps); remove it")
        if reduction is not None:
            settings["reduction"] = reduction
    if name in TEXT_METHODS and (modality == "text" or name not in METHODS):
        cls = TEXT_METHODS[name]
        _check_keys(name, cls, settings)
        method = cls(**settings)
        method.check()
        return method
    if name.startswith("captum_") and name not in METHODS:
        _check_keys(name, CaptumMethod, settings)
        method = captum_method(name, settings)
        method.check()
        return method
    if name not in METHODS and "target" in settings:  # +method.<name>.target=module:fn: a custom method named <name>
        _check_keys(name, CustomMethod, settings)
        method = CustomMethod(**{"label": name, **settings})
        method.check()
        if method.name != name:
            raise ValueError(f"method.{name}.label={method.name!r} differs from the method's key; leave label out (the "
                             f"key {name!r} names it)")
        return method
    if name not in METHODS:
        raise ValueError(f"method {name!r} is not a known method; use some of {sorted(METHODS)} (text models: "
                         f"{sorted(TEXT_METHODS)}), captum_<class> "
                         "(a captum.attr class, e.g. captum_deeplift), custom (method.custom.target=module:fn) or "
                         f"your own under any name (+method.{name}.target=module:fn)")
    cls = METHODS[name]
    _check_keys(name, cls, settings)
    method = cls(**settings)
    method.check()
    return method


def _check_keys(name: str, cls: type, settings: dict[str, Any]) -> None:
    allowed = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in settings.items():
        if key not in allowed:
            raise ValueError(
                f"method.{name}.{key}={value!r}: {name} has no setting {key!r}; its settings are "
                f"{sorted(allowed) or 'none'}"
            )
        if key in ("n_samples", "n_steps") and (not isinstance(value, int) or value < 1):
            raise ValueError(f"method.{name}.{key}={value!r} must be a positive whole number, e.g. 50")
        if key == "noise_level" and (not isinstance(value, (int, float)) or not 0 < value < float("inf")):
            raise ValueError(f"method.{name}.{key}={value!r} must be a positive number, e.g. 0.15")
        ig = issubclass(cls, (IntegratedGradients, IGSmoothGrad))  # lrp and deeplift check their own rule, baseline
        if key == "baseline" and ig and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"method.{name}.baseline={value!r} must be a number (the constant baseline image), "
                             "e.g. 0.0")
        if key == "rule" and ig and value not in IG_RULES:
            raise ValueError(f"method.{name}.rule={value!r} is not an IG rule; use one of {list(IG_RULES)}")


def build_methods(spec: Mapping[str, Any], modality: str = "image") -> list[Method]:
    """Methods from ``{name: settings}`` in the given order; an empty spec is an error."""
    if not spec:
        raise ValueError(
            "method is empty: choose at least one method, e.g. method=[gradient,smoothgrad]; "
            f"known methods are {sorted(METHODS)}"
        )
    return [build_method(name, settings, modality) for name, settings in spec.items()]


def as_method(item: Any, modality: str = "image") -> Method:
    """A method as the Python API takes it: a registry key, a Method, a function (model, x, target) -> map, or an
    object with attribute(inputs, target=...)."""
    if isinstance(item, Method):
        item.check()
        return item
    if isinstance(item, str):
        return build_method(item, modality=modality)
    method = CallableMethod(item)
    method.check()
    return method


__all__ = ["METHODS", "TEXT_METHODS", "CONTROLS", "CallableMethod", "CustomMethod", "ExternalMethod", "Method",
           "as_method", "build_method", "build_methods", "register_method"]
