"""A model whose first layer absorbs a constant shift of its input (Kindermans et al. 2019, section 3).

f1 is a model whose input reaches its first layer, an affine layer ``z = W x + b`` (``nn.Linear`` or
``nn.Conv2d``), unchanged. f2 is f1 with that layer's bias moved by the shift m: ``z = W x + (b - W m)``, so
``f2(x + m) = f1(x)`` for every x. For a linear layer ``b - W m`` is a vector (exact). For a convolution ``W m``
is the convolution of the constant image m with f1's own padding, which differs near the borders (a zero-padded
window holds fewer values of m): f2's bias is a map, one value per output position, ``b - conv(m)``, and f2's
layer computes ``conv(x') - conv(m) + b`` with both convolutions on the same batch layout, so that where the
window of ``x' = x + m`` is constant (a blank background) the two cancel bit for bit and f2 gives f1's output
exactly. A first layer without a bias gains one (``b = 0``): f2 is then not of f1's exact form, and the test
says so.

``absorbed(model, layer, shift)`` swaps f2's layer in for the block and restores the original module after, also
after an error; the weights are never written. ``ShiftedInput`` is ``x -> f2(x + m)``, what the test observes.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.engine import prepared

AFFINE = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class FirstLayer:
    """The layer the model's input reaches first: its path, the module and its input's shape per image."""

    path: str
    module: nn.Module
    in_shape: tuple[int, ...]
    before: tuple[str, ...] = ()  # leaf modules without parameters called before it (a Flatten)

    @property
    def has_bias(self) -> bool:
        return getattr(self.module, "bias", None) is not None


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(p, m) for p, m in model.named_modules() if not list(m.children())]


def first_layer(model: nn.Module, example: torch.Tensor, name: str = "the model") -> FirstLayer:
    """The first ``nn.Linear`` / ``nn.Conv2d`` that ``model``'s forward pass calls on ``example`` (B, C, H, W),
    checked to receive the input itself (reshaped at most); ValueError naming the layer and the fix otherwise.

    One forward pass in eval mode without gradients; the hooks and the mode are restored, also after an error.
    """
    calls: list[tuple[str, nn.Module, Optional[torch.Tensor]]] = []
    handles = []
    for path, module in _leaves(model):
        def pre(m, inputs, path=path):
            calls.append((path, m, inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None))

        handles.append(module.register_forward_pre_hook(pre))
    try:
        with torch.no_grad(), prepared(model):
            model(example)
    finally:
        for h in handles:
            h.remove()
    index = next((i for i, (_, m, _) in enumerate(calls) if isinstance(m, AFFINE)), None)
    if index is None:
        raise ValueError(f"test=input_invariance moves the input's shift into the first layer's bias, and {name}'s "
                         "forward pass calls no nn.Linear or nn.Conv2d; use a model whose input first meets one")
    path, module, inp = calls[index]
    before = [(p, m) for p, m, _ in calls[:index]]
    owning = [p for p, m in before if any(True for _ in m.parameters(recurse=False)) or
              any(True for _ in m.buffers(recurse=False))]
    n = len(example)
    same = (inp is not None and inp.shape[0] == n and inp[0].numel() == example[0].numel()
            and torch.equal(inp.reshape(n, -1), example.reshape(n, -1)))
    if owning or not same:
        called = ", ".join(f"{p} ({type(m).__name__})" for p, m in before) or "none: a computation in forward()"
        raise ValueError(f"test=input_invariance needs the input to reach the first layer unchanged, and {name} "
                         f"changes it before {path!r} ({type(module).__name__}; modules called before it: {called}). "
                         "A normalization inside the model, (x - mean) / std, is itself a shift of the input; move "
                         "it into the data's preprocessing, or give the model from its first layer on")
    if sum(1 for _, m, _ in calls if m is module) > 1:
        raise ValueError(f"test=input_invariance moves the shift into the bias of {path!r}, and {name} calls it more "
                         "than once per forward pass (a shared layer): its bias cannot absorb the shift for one call "
                         "only; use a model whose first layer is called once")
    if isinstance(module, nn.Conv2d) and module.padding_mode not in ("zeros", "reflect", "replicate", "circular"):
        raise ValueError(f"{path!r} pads with {module.padding_mode!r}; test=input_invariance supports zeros, reflect, "
                         "replicate and circular padding")
    return FirstLayer(path, module, tuple(inp.shape[1:]), tuple(p for p, _ in before))


class ShiftAbsorbed(nn.Module):
    """f2's first layer: f1's ``layer`` (same weights) with its bias moved by the shift, ``b - W m``.

    ``shift`` is m as the layer receives it, shaped like one image's input to it (``FirstLayer.in_shape``). A
    linear layer gets the vector ``b - W m`` (computed in float64); a convolution computes
    ``conv(x) - conv(m) + b`` (see the module's docstring).
    """

    def __init__(self, layer: nn.Module, shift: torch.Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("shift", shift.to(layer.weight.device, layer.weight.dtype), persistent=False)
        if isinstance(layer, nn.Linear):
            w = layer.weight.detach().double()
            moved = -F.linear(shift.to(w.device, torch.float64), w)
            if layer.bias is not None:
                moved = moved + layer.bias.detach().double()
            self.register_buffer("bias_moved", moved.to(layer.weight.dtype), persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, self.layer.weight, self.bias_moved)
        constant = torch.empty_like(x).copy_(self.shift.expand_as(x))  # x's layout: the same kernel, the same sums
        out = self.layer._conv_forward(x, self.layer.weight, None) - self.layer._conv_forward(
            constant, self.layer.weight, None)
        if self.layer.bias is not None:
            out = out + self.layer.bias.view(1, -1, 1, 1)
        return out


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    head, _, leaf = path.rpartition(".")
    return (model.get_submodule(head) if head else model), leaf


@contextmanager
def absorbed(model: nn.Module, layer: FirstLayer, shift: torch.Tensor) -> Iterator[nn.Module]:
    """``model`` as f2 for the block: ``layer`` replaced by its ``ShiftAbsorbed`` (``shift``: m as the layer
    receives it); the original module is back afterwards, also after an error."""
    parent, leaf = _parent(model, layer.path)
    original = getattr(parent, leaf)
    if original is not layer.module:
        raise RuntimeError(f"{layer.path!r} is no longer the module found as the first layer")
    setattr(parent, leaf, ShiftAbsorbed(original, shift.reshape(layer.in_shape)))
    try:
        yield model
    finally:
        setattr(parent, leaf, original)


class ShiftedInput(nn.Module):
    """``x -> model(x + shift)``: f2 on the shifted images, observed as f1 is on the images (its logits, accuracy
    and classes). ``get_submodule`` reads the wrapped model's paths (the GradCAM layer)."""

    def __init__(self, model: nn.Module, shift: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        device = next(model.parameters()).device
        self.register_buffer("shift", shift.to(device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + self.shift)

    def get_submodule(self, target: str) -> nn.Module:
        return self.model.get_submodule(target)


@dataclass(frozen=True)
class Equivalence:
    """How closely f2(x + m) reproduces f1(x) on the run's images: the largest logit difference and the logits'
    scale (their largest magnitude)."""

    max_abs_difference: float
    logit_scale: float
    finite: bool

    @property
    def relative(self) -> float:
        return self.max_abs_difference / self.logit_scale if self.logit_scale > 0 else float("inf")


def equivalence(model: nn.Module, layer: FirstLayer, shift: torch.Tensor, x: torch.Tensor) -> Equivalence:
    """f1(x) against f2(x + m) for images x (B, C, H, W); ``shift`` (C, 1, 1) the shift image m."""
    device = next(model.parameters()).device
    x = x.to(device)
    m = shift.to(device)
    with torch.no_grad(), prepared(model):
        f1 = model(x).double()
        with absorbed(model, layer, m.expand_as(x[0])):
            f2 = model(x + m).double()
    finite = bool(torch.isfinite(f2).all() and torch.isfinite(f1).all())
    diff = float((f2 - f1).abs().max()) if finite else float("inf")
    return Equivalence(diff, float(f1.abs().max()), finite)
