"""Function modes active inside the engine's passes: guided ReLUs, and the few-channel convolution's input gradient.

Both intercept at the function level (``TorchFunctionMode``), not by hooking modules, so they hold for
models that call ``F.relu`` (torchvision's Inception v3) as for ``nn.ReLU`` modules, and end with the block.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from benchmark.engine.kernels import conv2d_input_grad
from benchmark.runtime import memory_format_of


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0).to(grad.dtype)


_RELUS = {F.relu, torch.relu, torch.Tensor.relu}
_INPLACE_RELUS = {torch.relu_, torch.Tensor.relu_, F.relu_}


class guided_relus(TorchFunctionMode):
    """Every ReLU in the block (nn.ReLU, F.relu, torch.relu, Tensor.relu) becomes guided.

    Intercepting at the function level, not by hooking nn.ReLU modules, keeps Guided Backprop
    right on models that call F.relu (torchvision's Inception v3).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inplace = func in _INPLACE_RELUS or (func is F.relu and (kwargs.get("inplace") or
                                                                 (len(args) > 1 and args[1])))
        if inplace:  # keep the in-place contract: callers may discard the return value
            x = args[0]
            return x.copy_(_GuidedReLU.apply(x))
        if func in _RELUS:
            return _GuidedReLU.apply(args[0])
        return func(*args, **kwargs)


class _FewChannelConv(torch.autograd.Function):
    """``F.conv2d`` whose input gradient is ``conv2d_input_grad`` (weight and bias need none)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(weight)
        ctx.geometry = (tuple(x.shape), stride, padding, dilation, memory_format_of(x))
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return conv2d_input_grad(grad, weight, *ctx.geometry), None, None, None, None, None


FEW_CHANNELS = 3  # at most this many input channels: conv2d_input_grad is faster than oneDNN's kernel on a CPU


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class few_channel_convs(TorchFunctionMode):
    """2-D convolutions with at most ``FEW_CHANNELS`` input channels take their input gradient from
    ``conv2d_input_grad`` in the block; every other call runs unchanged.

    oneDNN computes the input gradient of such a convolution (the first layer of an image model) far
    slower than the convolution itself on a CPU (docs/performance.md). Only where the weights and bias
    need no gradient, on a CPU, with zero padding given as numbers and groups 1; values equal PyTorch's up
    to float32 rounding (about 1e-6 relative, the order of the sums differs).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
            a = dict(zip(names, args), **kwargs)
            x, weight, bias = a["input"], a["weight"], a.get("bias")
            padding = a.get("padding", 0)
            if (a.get("groups", 1) == 1 and not isinstance(padding, str) and x.dim() == 4
                    and x.device.type == "cpu" and weight.shape[1] <= FEW_CHANNELS and x.requires_grad
                    and not weight.requires_grad and (bias is None or not bias.requires_grad)):
                return _FewChannelConv.apply(x, weight, bias, _pair(a.get("stride", 1)), _pair(padding),
                                             _pair(a.get("dilation", 1)))
        return func(*args, **kwargs)
