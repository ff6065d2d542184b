"""Units and GradCAM layer of any classifier, derived from one forward pass.

A unit is a parameter-owning child of the model (containers such as ``nn.Sequential`` are
opened, so VGG's ``features.0`` and ResNet's ``layer1.0`` are units), ordered by when the forward
pass first calls it, not by registration order (Inception v3 registers ``AuxLogits`` before
``Mixed_7a`` and an eval forward never calls it). A normalization layer called right after a unit
joins that unit (ResNet's ``bn1`` with ``conv1``). GradCAM's layer is the last unit whose output
is a 4-D (B, K, h, w) map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

log = logging.getLogger(__name__)

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class Derived:
    """What one probing forward pass found: units in call order, GradCAM's layer, modules never called."""

    units: dict[str, tuple[str, ...]]
    gradcam_layer: Optional[str]
    not_called: tuple[str, ...]
    output_shape: tuple[int, ...]


def _owns_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Parameter-owning children, containers opened, in registration order (path, module)."""
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if not _owns_parameters(child):
                continue
            if isinstance(child, CONTAINERS):
                walk(path, child)
            else:
                out.append((path, child))

    walk("", model)
    if not out and _owns_parameters(model):  # a bare layer (nn.Linear) as the model
        out.append(("", model))
    return out


def probe(model: nn.Module, example: torch.Tensor) -> Derived:
    """Run ``model`` once on ``example`` (eval mode, no gradients) and derive its units from the calls.

    Raises ValueError naming the input shape when the model rejects the input, and when it has no
    parameters. Hooks and the train/eval mode are restored, also after an error.
    """
    if not _owns_parameters(model):
        raise ValueError(f"model {type(model).__name__} has no parameters: there is nothing to randomize; "
                         "pass a trained torch.nn.Module classifier")
    found = candidates(model)
    order: list[str] = []
    dims: dict[str, int] = {}
    handles = []
    for path, module in found:
        def pre(_m, _inp, path=path):
            if path not in dims:
                order.append(path)
                dims[path] = -1

        def post(_m, _inp, out, path=path):
            if isinstance(out, torch.Tensor):
                dims[path] = out.dim()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example)
    except Exception as err:
        raise ValueError(f"the model rejects inputs of shape {tuple(example.shape[1:])} (one image, batch "
                         f"{example.shape[0]}): {type(err).__name__}: {str(err).splitlines()[0][:300]}; give "
                         "images of the shape the model was built for") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model returns {got} for a batch of images, not (batch, classes) logits; wrap it "
                         "so that forward returns one logit tensor")
    modules = dict(found)
    units: dict[str, tuple[str, ...]] = {}
    last = None
    for path in order:
        if last is not None and isinstance(modules[path], NORMS) and not isinstance(modules[last], NORMS):
            units[last] = units[last] + (path,)
            continue
        units[path or "model"] = (path,)
        last = path
    if not units:
        raise ValueError(f"model {type(model).__name__}: its forward pass calls none of its parameter-owning "
                         "modules, so no unit could be derived; declare them with model.units={name: [paths]}")
    gradcam = None
    for name, paths in units.items():
        if dims.get(paths[0]) == 4:
            gradcam = paths[-1] if dims.get(paths[-1]) == 4 else paths[0]
    not_called = tuple(p for p, _ in found if p not in dims)
    return Derived(units, gradcam, not_called, tuple(out.shape))


def check_units(model: nn.Module, units: dict[str, list[str]] | dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Declared ``model.units`` checked against the model: every path must name one of its modules."""
    if not isinstance(units, dict):
        raise ValueError(f"model.units={units!r} must map unit names to module paths, e.g. "
                         "model.units='{conv: [conv1, conv2], head: [fc]}', or be null to derive them")
    if not units:
        raise ValueError("model.units is empty; give {unit name: [module paths]} or leave it null to derive units")
    known = dict(model.named_modules())
    out: dict[str, tuple[str, ...]] = {}
    for name, paths in units.items():
        paths = (paths,) if isinstance(paths, str) else tuple(paths)
        for path in paths:
            if path not in known:
                close = [p for p in known if p and (path in p or p in path)][:5]
                raise ValueError(f"model.units.{name} has {path!r}, which the model does not have; its modules "
                                 f"include {close or [p for p in known if p][:8]}")
        out[str(name)] = paths
    return out


def check_gradcam_layer(model: nn.Module, layer: str, name: str, default: Optional[str]) -> str:
    """``model.gradcam_layer`` checked against the model's module paths."""
    if layer not in dict(model.named_modules()):
        raise ValueError(f"model.gradcam_layer={layer!r} is not a module of model {name!r}; its default is {default!r}")
    return layer


def units_table(units: dict[str, tuple[str, ...]], model: nn.Module) -> str:
    """A plain-text table of the units in forward order: name, module paths, parameter count."""
    rows = [("unit", "modules", "parameters")]
    for name, paths in units.items():
        n = sum(p.numel() for path in paths for p in model.get_submodule(path).parameters())
        rows.append((name, ", ".join(p or "<model>" for p in paths), f"{n:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def reset_init(module: nn.Module, generator: torch.Generator) -> None:
    """A module's own initializer (``reset_parameters`` of each submodule), drawn from ``generator``.

    PyTorch's initializers read the global generator; it is forked and seeded from ``generator`` for the
    call, so the draw is reproducible and the global state is left as it was. Normalization layers are
    left to the randomization (scale 1, shift 0; running statistics by ``randomization.batchnorm_stats``).
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                continue
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()


def without_initializer(modules: list[nn.Module]) -> list[str]:
    """Types of submodules that own parameters directly but have no ``reset_parameters``."""
    out = []
    for module in modules:
        for sub in module.modules():
            own = next(sub.parameters(recurse=False), None) is not None
            if own and not callable(getattr(sub, "reset_parameters", None)) and not isinstance(sub, NORMS):
                out.append(type(sub).__name__)
    return sorted(set(out))
