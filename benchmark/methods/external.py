"""Methods that compute their own maps: a user's callable, an object with ``attribute``, Captum, an import path.

The engine hands each one the stage's model (the live model with the stage's weights swapped in),
the inputs and the targets; its map goes through the same post-processing, scoring, calibration and
report as the engine's methods. The contract is Captum's: ``attribute(inputs, target)`` on an object,
or a function ``(model, x, target) -> map``; maps are (B, C, H, W), (B, 1, H, W) or (B, H, W).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from benchmark.methods.base import ExternalMethod


def _accepts_three(fn: Callable) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: let the probe call decide
        return True
    try:
        sig.bind(None, None, None)
        return True
    except TypeError:
        return False


def check_callable(fn: Any, key: str) -> None:
    """A method given as an object: a function (model, x, target) -> map, or an object with attribute()."""
    if hasattr(fn, "attribute") and callable(fn.attribute):
        return
    if not callable(fn):
        raise ValueError(f"{key}={fn!r} is a {type(fn).__name__}: give a method name (e.g. 'gradient'), a function "
                         "(model, x, target) -> map, or an object with attribute(inputs, target=...)")
    if not _accepts_three(fn):
        raise ValueError(f"{key}={getattr(fn, '__name__', fn)!r} does not take (model, x, target): its signature is "
                         f"{inspect.signature(fn)}; define it as def my_saliency(model, x, target) -> map")


@dataclass(frozen=True, eq=False)
class CallableMethod(ExternalMethod):
    """A function ``fn(model, x, target) -> map`` or an object with ``attribute(x, target=target)``.

    ``label``: the name in tables and figures (default: the function's ``__name__`` or the class name);
    ``signed``: whether the map's sign means something (the no-ABS comparison reads it).
    """

    fn: Any = None
    label: Optional[str] = None
    signed: bool = True
    modality = "any"

    @property
    def name(self) -> str:  # type: ignore[override]
        if self.label:
            return self.label
        return getattr(self.fn, "__name__", None) or type(self.fn).__name__.lower()

    def check(self) -> None:
        check_callable(self.fn, f"method {self.name!r}")

    def attribute(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if hasattr(self.fn, "attribute") and callable(self.fn.attribute):
            return self.fn.attribute(x, target=target)
        return self.fn(model, x, target)


def as_map(method: ExternalMethod, out: Any, x: torch.Tensor) -> torch.Tensor:
    """A method's output checked and laid out as (B, C or 1, H, W) float32 on the CPU; ValueError naming it."""
    name = method.name
    if isinstance(out, tuple) and len(out) == 1:
        out = out[0]
    if x.dim() == 3 and isinstance(out, torch.Tensor):  # text: one value per token row (benchmark.models.text)
        from benchmark.methods.tokens import token_rows

        L = token_rows(x)
        out = out.detach()
        if out.dim() == 3 and tuple(out.shape) == tuple(x.shape):  # per embedding value: summed per token
            from benchmark.methods.tokens import reduce_tokens

            out = reduce_tokens(out, x, "sum")
        if out.dim() == 2 and out.shape[1] == x.shape[1]:
            out = out[:, :L]
        if tuple(out.shape) != (len(x), L):
            raise ValueError(f"method {name!r} returned a map of shape {tuple(out.shape)} for {len(x)} sentences of {L} "
                             f"token rows; return (B, {L}) token values, or (B, {L + 3}, D + 3) like the inputs")
        return out.float().cpu()
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"method {name!r} returned a {type(out).__name__}, not a torch.Tensor map; return a tensor "
                         f"of shape {(len(x), 1) + tuple(x.shape[-2:])} or {tuple(x.shape)}")
    out = out.detach()
    if out.dim() == x.dim() - 1 and tuple(out.shape[1:]) == tuple(x.shape[2:]):
        out = out.unsqueeze(1)
    ok = out.dim() == x.dim() and out.shape[0] == x.shape[0] and out.shape[1] in (1, x.shape[1]) \
        and tuple(out.shape[2:]) == tuple(x.shape[2:])
    if not ok:
        raise ValueError(f"method {name!r} returned a map of shape {tuple(out.shape)} for inputs of shape "
                         f"{tuple(x.shape)}; return (B, C, H, W), (B, 1, H, W) or (B, H, W) with the inputs' size")
    return out.float().cpu()


def probe_method(method: ExternalMethod, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> None:
    """Run ``method`` once on the first input before any stage is computed: a non-tensor, a map of the wrong
    shape, or a non-finite map is an error naming the method."""
    try:
        out = method.attribute(model, x, target)
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"method {method.name!r} failed on the trained model's first input "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}); it is "
                         "called as fn(model, x, target) with x (B, C, H, W) and target (B,) class indices") from None
    m = as_map(method, out, x)
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"method {method.name!r} returned a map with NaN or Inf values on the trained model's "
                         "first input; fix the method (a division by zero, a log of 0?) before running the test")
