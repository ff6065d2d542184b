"""Models the suite did not define: a user's ``module:attribute``, any torchvision classifier, an instance.

Each becomes an ``Architecture`` around the one built instance, with its units derived from a forward
pass (``benchmark.models.derive``) unless ``model.units`` declares them.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from benchmark.registry import import_module
from benchmark.models.derive import check_gradcam_layer, check_units, probe, reset_init, units_table

log = logging.getLogger(__name__)


def import_target(spec: Optional[str], key: str) -> Any:
    """``package.module:attribute`` imported; the current folder is importable, as for ``python -m``."""
    if not spec or not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"{key}={spec!r} must be an import path 'module:attribute', e.g. my_models:make_net "
                         "(a module importable from the current folder or the installed packages)")
    module_name, _, attr = spec.partition(":")
    module = import_module(module_name, key, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            raise ValueError(f"{key}={spec!r}: module {module_name!r} has no attribute {attr!r}; it has "
                             f"{difflib.get_close_matches(part, names, n=5, cutoff=0.3) or names[:8]}")
        obj = getattr(obj, part)
    return obj


def build_target(spec: Optional[str]) -> nn.Module:
    """The ``nn.Module`` that ``model.target`` names (a module instance, a class or a factory called without
    arguments)."""
    obj = import_target(spec, "model.target")
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise ValueError(f"model.target={spec!r} is a {type(obj).__name__}, not a torch.nn.Module or a function "
                             "returning one")
        try:
            obj = obj()
        except Exception as err:
            raise ValueError(f"model.target={spec!r} failed when called without arguments ({type(err).__name__}: "
                             f"{err}); point it at a function that builds the model") from None
    if not isinstance(obj, nn.Module):
        raise ValueError(f"model.target={spec!r} returned a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_torchvision_arch(arch: Optional[str]) -> str:
    names = torchvision_names()
    if arch not in names:
        close = difflib.get_close_matches(str(arch), names, n=5, cutoff=0.5)
        raise ValueError(f"model.arch={arch!r} is not a torchvision classification model; "
                         f"{'close matches: ' + ', '.join(close) if close else 'e.g. resnet18, vgg11, densenet121'} "
                         "(torchvision.models.list_models() lists them all)")
    return arch


def build_torchvision_any(arch: str, weights: Optional[str], num_classes: int = 1000) -> tuple[nn.Module, str]:
    """A torchvision classifier by name with ``weights``: a weights name (DEFAULT, IMAGENET1K_V1, ...), a
    state-dict file, or None (random, the offline smoke path). Returns the model and where its weights came from."""
    import torchvision

    from benchmark.checkpoints import load_weights

    check_torchvision_arch(arch)
    enum = torchvision.models.get_model_weights(arch)
    if weights is not None and not Path(weights).expanduser().is_file():
        if weights != "DEFAULT" and weights not in enum.__members__:
            raise ValueError(f"model.weights={weights!r} is neither a file nor a weights name of {arch}; use one of "
                             f"{['DEFAULT'] + [w.name for w in enum]} or a path to a state dict")
        w = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
        try:
            model = torchvision.models.get_model(arch, weights=w)
        except Exception as err:  # offline: the download fails
            raise ValueError(f"model.weights={weights!r}: torchvision could not load {enum.__name__}.{w.name} "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); download it once online or "
                             "give a state-dict file") from None
        return model, f"torchvision {enum.__name__}.{w.name}"
    kwargs = {"aux_logits": False, "init_weights": False} if arch in ("inception_v3", "googlenet") else {}
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    if weights is not None:
        model.load_state_dict(load_weights(weights, model))
        return model, f"file {weights}"
    log.warning("%s has random weights (model.weights=null): a smoke run, not a sanity check of a trained model",
                arch)
    return model, "random (model.weights=null): no pretrained weights loaded"


def torchvision_preprocessing(arch: str):
    """Resize and crop of the model's default weights (torchvision's metadata, no download), ImageNet scaling."""
    import torchvision

    from benchmark.models.imagenet import Preprocessing

    try:
        t = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        resize = t.resize_size[0] if isinstance(t.resize_size, (list, tuple)) else int(t.resize_size)
        crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else int(t.crop_size)
        return Preprocessing(resize=int(resize), crop=int(crop))
    except Exception:  # a model without weights metadata
        return Preprocessing(resize=256, crop=224)


def architecture_of(model: nn.Module, example: torch.Tensor, name: str, *, units: Optional[dict] = None,
                    gradcam_layer: Optional[str] = None, source: str = "given", preprocessing: Any = None,
                    notes: str = "", quiet: bool = False, build: Any = None):
    """The ``Architecture`` of one built model: units declared (``units``) or derived, checked with one forward.

    ``example``: (B, C, H, W) inputs the model must accept. GradCAM's layer: ``gradcam_layer`` or the
    derived default (the last unit with a 4-D output; none for models without one). ``build``: how to make a
    fresh instance (a factory's model, trained here); default: this instance every time.
    """
    from benchmark.models import Architecture

    derived = probe(model, example)
    declared = check_units(model, units) if units is not None else None
    chosen = declared if declared is not None else derived.units
    layer = (derived.gradcam_layer if gradcam_layer is None
             else check_gradcam_layer(model, gradcam_layer, name, derived.gradcam_layer))
    if not quiet:
        log.info("model %s: %d units (%s), in forward order:\n%s%s", name, len(chosen),
                 "declared" if declared is not None else "derived from the forward pass", units_table(chosen, model),
                 f"\nnever called by the forward pass (not randomized): {', '.join(derived.not_called)}"
                 if derived.not_called else "")
    return Architecture(
        name=name,
        build=build or (lambda c, k: model),
        units=chosen,
        gradcam_layer=layer,
        init_module=reset_init,
        input_size=tuple(example.shape[-2:]),
        notes=notes,
        source=source,
        preprocessing=preprocessing,
        derived={"units_derived": declared is None, "not_called": list(derived.not_called),
                 "num_classes": int(derived.output_shape[1])},
    )
