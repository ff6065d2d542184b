"""Temporary changes to a model for the engine's passes, each undone on exit (also after an error).

``prepared`` (eval mode, no parameter gradients), ``channels_last`` (4-D parameters' layout),
``capture_output`` (a forward hook on one module) and ``swapped`` (a stage's tensors in place of the live
ones); several compose with ``ExitStack`` or nested ``with``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch import nn


@contextmanager
def prepared(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients for the block; both restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


@contextmanager
def channels_last(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """4-D parameters in channels-last layout for the block; each restored to its own layout after.

    Convolutions with channels-last weights and inputs run faster on a CPU (docs/performance.md).
    Values are untouched; only strides change.
    """
    if not enabled:
        yield model
        return
    changed = []
    for p in model.parameters():
        if p.dim() != 4:
            continue
        # Strides, not is_contiguous: a weight with one input channel (conv1 of the MNIST CNN) counts as
        # contiguous in both layouts, yet oneDNN picks its output layout from the actual strides.
        converted = p.data.to(memory_format=torch.channels_last)
        if converted.stride() != p.data.stride():
            changed.append((p, p.data))
            p.data = converted
    try:
        yield model
    finally:
        for p, original in changed:
            original.copy_(p.data)  # in case the block wrote to the parameter
            p.data = original


@contextmanager
def capture_output(module: Optional[nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Keep the output of ``module`` of the last forward pass; the hook is removed on exit."""
    store: dict[str, torch.Tensor] = {}
    if module is None:
        yield store
        return

    def hook(_m, _inp, out):
        store["out"] = out

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _like(live: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` with the live tensor's device, dtype and strides (channels-last or not); copied only if they differ."""
    if (value.device, value.dtype, value.stride()) == (live.device, live.dtype, live.stride()):
        return value
    return torch.empty_like(live).copy_(value)


@contextmanager
def swapped(state: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Each live tensor holds the given value for the block (a pointer swap); restored afterwards."""
    original = [(t, t.data) for t, _ in state]
    try:
        for t, value in state:
            t.data = value
        yield
    finally:
        for t, data in original:
            t.data = data
