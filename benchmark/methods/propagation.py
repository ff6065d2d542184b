"""Propagation methods: LRP (zennit's rules and composites) and DeepLIFT with the Rescale rule.

- ``lrp``: Layer-wise Relevance Propagation (Bach et al. 2015) by zennit. The output relevance is the target's
  logit at the target class and zero elsewhere (one-hot(target) x f(x), Captum ``LRP``'s choice); the map is the
  input relevance, (B, C, H, W). Rules (``rule``): ``epsilon`` (zennit ``Epsilon`` on every convolution and
  linear layer), ``zplus`` (``ZPlus`` on them), ``alpha1beta0`` (``AlphaBeta(1, 0)`` on them), ``epsilon_plus``
  and ``epsilon_plus_flat`` (zennit's composites ``EpsilonPlus``: ZPlus on convolutions, Epsilon on linear
  layers; ``EpsilonPlusFlat``: the same with ``Flat`` on the first convolution or linear layer). ``epsilon``
  is the Epsilon rule's stabilizer (zennit's default 1e-6); the other rules keep zennit's stabilizer 1e-6.
  Every rule set passes relevance through activation and batch-norm modules (zennit's ``Pass``), sums
  ``zennit.layer.Sum`` modules and average pooling in proportion (``Norm``), and runs zennit's
  ``ResNetCanonizer``: batch norms merged into the convolution or linear layer before them
  (``SequentialMergeBatchNorm``) and torchvision ResNet blocks' residual additions made ``Sum`` modules.
  Everything else (max-pooling, reshapes, concatenations, functional average pooling, additions outside
  torchvision's ResNet blocks) takes the plain gradient.
- ``deeplift``: DeepLIFT (Shrikumar et al. 2017) with the Rescale rule, Captum ``DeepLift``'s arithmetic on any
  spelling of ReLU and max-pooling (``rescale_rule``): input and baseline run as one batch, each ReLU's
  multiplier is (relu(x) - relu(x0)) / (x - x0), and max-pooling takes Captum's max-pool rule, which keeps the
  sum (with overlapping windows each window adds its share, where Captum's unpooling keeps one). The map is
  (x - x0) times the multipliers; it sums to f(x)[t] - f(x0)[t]. Baseline (``baseline``): ``zero`` or ``blur``
  (each channel Gaussian-blurred, scipy, ``blur_sigma`` pixels, reflected at the border; by default 10 px at
  224, scaled to the image, as the perturbation methods' blur fill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from zennit.canonizers import Canonizer
from zennit.composites import EpsilonPlus, EpsilonPlusFlat, LayerMapComposite, layer_map_base
from zennit.core import Composite
from zennit.rules import AlphaBeta, Epsilon, ZPlus
from zennit.torchvision import ResNetCanonizer
from zennit.types import BatchNorm, Linear

from benchmark.methods.base import ExternalMethod
from benchmark.methods.masks import blurred

LRP_RULES = ("epsilon", "zplus", "alpha1beta0", "epsilon_plus", "epsilon_plus_flat")
# Modules with parameters of their own that every rule set covers: convolutions and linear layers get the rule,
# batch norms are merged into the layer before them (or passed through), PReLU is passed through like ReLU.
LRP_COVERED = (Linear, BatchNorm, nn.PReLU)


def _positive(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < math.inf


def lrp_composite(rule: str, epsilon: float = 1e-6) -> Composite:
    """zennit's composite for ``rule`` (one of LRP_RULES), with zennit's ResNetCanonizer."""
    canonizers: list[Canonizer] = [ResNetCanonizer()]
    if rule == "epsilon_plus":
        return EpsilonPlus(epsilon=epsilon, canonizers=canonizers)
    if rule == "epsilon_plus_flat":
        return EpsilonPlusFlat(epsilon=epsilon, canonizers=canonizers)
    hook = {"epsilon": Epsilon(epsilon=epsilon), "zplus": ZPlus(), "alpha1beta0": AlphaBeta(alpha=1.0, beta=0.0)}[rule]
    return LayerMapComposite(layer_map_base() + [(Linear, hook)], canonizers=canonizers)


def check_lrp_model(model: nn.Module) -> None:
    """ValueError naming the first module with parameters of its own that no LRP rule covers (an LSTM, an
    embedding, a layer norm, a custom parametrized module): its relevance would be the plain gradient."""
    for name, module in model.named_modules():
        if next(module.parameters(recurse=False), None) is not None and not isinstance(module, LRP_COVERED):
            kind = type(module).__name__
            raise ValueError(f"method lrp: module {name or '(the model itself)'!r} ({kind}) has parameters and no LRP "
                             "rule covers it (rules cover convolutions, linear layers and batch norm); replace the "
                             f"layer, or compute LRP with a zennit composite that maps {kind} (method=custom)")


@dataclass(frozen=True)
class LRP(ExternalMethod):
    """LRP by zennit's rules (module docstring); the map is the input relevance.

    Models that call ``F.relu`` (the MNIST CNN) get the same relevance as their nn.ReLU twins under zennit's
    ``Pass`` rule. zennit's rules on convolution and linear modules return the relevance as the gradient of their
    input; the plain ReLU backward multiplies it by (input > 0), where Pass keeps it whole. The two differ only
    where the ReLU's output is 0, and there the relevance is 0 already: every rule here gives a layer's input
    that input times a factor (Epsilon, ZPlus, AlphaBeta; Flat acts on the model's input only), and a max-pool
    between them routes relevance to a 0 only from a window whose maximum, the layer's input, is 0.
    """

    name = "lrp"
    rule: str = "epsilon_plus_flat"
    epsilon: float = 1e-6  # the Epsilon rule's stabilizer (zennit's default), in epsilon, epsilon_plus(_flat)

    def check(self) -> None:
        if self.rule not in LRP_RULES:
            raise ValueError(f"method.lrp.rule={self.rule!r} is not an LRP rule; use one of {list(LRP_RULES)}")
        if not _positive(self.epsilon):
            raise ValueError(f"method.lrp.epsilon={self.epsilon!r} must be a positive number, e.g. 1e-6 (zennit's "
                             "default)")

    def attribute(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_lrp_model(model)
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad(), lrp_composite(self.rule, self.epsilon).context(model):
            out = model(x)
            relevance = F.one_hot(target.to(out.device), out.shape[1]).to(out.dtype) * out.detach()
            (grad,) = torch.autograd.grad(out, x, grad_outputs=relevance)
        return grad


EPS = 1e-10  # Captum DeepLift's: where |x - x0| is below it, the multiplier is the gradient


def _halves_delta(t: torch.Tensor) -> torch.Tensor:
    """For ``t`` = [input half; baseline half]: input - baseline, repeated for both halves (Captum's layout)."""
    a, a0 = t.chunk(2)
    return torch.cat([a - a0] * 2)


class _RescaleReLU(torch.autograd.Function):
    """ReLU whose backward multiplier is (relu(x) - relu(x0)) / (x - x0), the gradient where |x - x0| < EPS."""

    @staticmethod
    def forward(ctx, x):
        out = x.clamp(min=0)
        ctx.save_for_backward(_halves_delta(x), _halves_delta(out), x > 0)
        return out

    @staticmethod
    def backward(ctx, grad):
        d_in, d_out, positive = ctx.saved_tensors
        return torch.where(d_in.abs() < EPS, grad * positive.to(grad.dtype), grad * d_out / d_in)


def _unpool(values: torch.Tensor, indices: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Each pooled value added at its window's maximum (max-pooling's backward)."""
    flat = values.new_zeros(shape[:2] + (math.prod(shape[2:]),))
    return flat.scatter_add_(2, indices.flatten(2), values.flatten(2)).view(shape)


class _RescaleMaxPool(torch.autograd.Function):
    """Max-pooling with Captum DeepLift's rule: with y, y0 the pooled input and baseline and m = max(y, y0), the
    input half's change m - y0 goes to the input's maxima and the baseline half's y - m to the baseline's; their
    sum over the window divided by x - x0 is the multiplier (the gradient where |x - x0| < EPS)."""

    @staticmethod
    def forward(ctx, x, pool, kernel_size, stride, padding, dilation, ceil_mode):
        out, indices = pool(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)
        y, y0 = out.chunk(2)
        m = torch.max(y, y0)
        ctx.save_for_backward(indices, _halves_delta(x), torch.cat([m - y0, y - m]))
        ctx.shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        indices, d_in, d_out = ctx.saved_tensors
        u = sum(_unpool(grad * d_out, indices, ctx.shape).chunk(2))
        multiplier = torch.where(d_in.abs() < EPS, _unpool(grad, indices, ctx.shape), torch.cat([u, u]) / d_in)
        return multiplier, None, None, None, None, None, None


_RELUS = {F.relu, torch.relu, torch.Tensor.relu}
_INPLACE_RELUS = {F.relu_, torch.relu_, torch.Tensor.relu_}
_POOLS = {F.max_pool1d: F.max_pool1d, F.max_pool2d: F.max_pool2d, F.max_pool3d: F.max_pool3d,
          torch.max_pool1d: F.max_pool1d, torch.max_pool2d: F.max_pool2d, torch.max_pool3d: F.max_pool3d}
_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
# Nonlinearities without a rule here: they would take the plain gradient, so the map would not be DeepLIFT's.
_OTHER_NONLINEAR = {torch.sigmoid, torch.Tensor.sigmoid, torch.sigmoid_, torch.Tensor.sigmoid_, torch.tanh,
                    torch.Tensor.tanh, torch.tanh_, torch.Tensor.tanh_, F.gelu, F.silu, F.elu, F.leaky_relu, F.softplus,
                    F.mish, F.hardswish, F.hardtanh, F.relu6, F.selu, F.celu, F.softmax, F.log_softmax, torch.softmax,
                    torch.Tensor.softmax, F.threshold, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
                    F.adaptive_max_pool3d}


class rescale_rule(TorchFunctionMode):
    """For the block: every ReLU (nn.ReLU, F.relu, torch.relu, Tensor.relu, in place or not) and max-pooling
    (nn.MaxPool1d/2d/3d, F.max_pool*, without ``return_indices``) on a batch [inputs; baselines] applies Captum
    DeepLift's rule in the backward pass (``_RescaleReLU``, ``_RescaleMaxPool``).

    Function-level, like ``benchmark.engine.modes.guided_relus``: Captum hooks nn.ReLU and nn.MaxPool2d modules
    only, so on a model calling F.relu its DeepLift is the gradient times (x - x0). Other nonlinearities raise a
    ValueError. Activations must keep the batch first.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _INPLACE_RELUS or (func is F.relu and (kwargs.get("inplace") or (len(args) > 1 and args[1]))):
            return args[0].copy_(_RescaleReLU.apply(args[0]))  # in place: callers may discard the return value
        if func in _RELUS:
            return _RescaleReLU.apply(args[0])
        if func in _POOLS:
            a = dict(zip(_POOL_ARGS, args), **kwargs)
            if not a.get("return_indices"):
                return _RescaleMaxPool.apply(a["input"], _POOLS[func], a["kernel_size"], a.get("stride") or None,
                                             a.get("padding", 0), a.get("dilation", 1), a.get("ceil_mode", False))
        if func in _OTHER_NONLINEAR:
            raise ValueError(f"method deeplift: the model calls {getattr(func, '__name__', func)}, and this DeepLIFT "
                             "has the Rescale rule for ReLU and max-pooling only; use captum_deeplift on a model "
                             "with that nonlinearity as an nn module")
        return func(*args, **kwargs)


BASELINES = ("zero", "blur")


@dataclass(frozen=True)
class DeepLift(ExternalMethod):
    """DeepLIFT, Rescale rule (module docstring): input and baseline run as one batch [x; x0] under
    ``rescale_rule``, and the map is (x - x0) times the gradient of both halves' target logits at x (Captum's).

    It equals Captum's DeepLift on the model's nn.ReLU / nn.MaxPool2d twin wherever Captum applies its own rules;
    where an nn.ReLU's output tensor is the next nn.MaxPool2d's input, Captum's ReLU hook reads the gradient
    before the max-pool's hook rewrites it, and its map no longer sums to f(x)[t] - f(x0)[t].
    """

    name = "deeplift"
    baseline: str = "zero"
    blur_sigma: Optional[float] = None  # pixels, for baseline=blur; None: 10 px at 224, scaled to the image

    def check(self) -> None:
        if self.baseline not in BASELINES:
            raise ValueError(f"method.deeplift.baseline={self.baseline!r} is not a DeepLIFT baseline; use one of "
                             f"{list(BASELINES)}")
        if self.blur_sigma is not None and not _positive(self.blur_sigma):
            raise ValueError(f"method.deeplift.blur_sigma={self.blur_sigma!r} must be a positive number of pixels, "
                             "e.g. 2.0, or null for the default (10 px at 224, scaled)")

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The baseline x0 for inputs ``x``."""
        return torch.zeros_like(x) if self.baseline == "zero" else blurred(x, self.blur_sigma)

    def attribute(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        x0 = self.reference(x)
        both = torch.cat([x, x0]).requires_grad_(True)
        with torch.enable_grad():
            with rescale_rule():
                out = model(both)
            t = target.to(out.device).repeat(2)
            (grad,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), both)
        return (x - x0) * grad[: len(x)]
