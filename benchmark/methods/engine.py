"""One attribution engine: every requested method from the fewest forward/backward passes.

Work is a stream of *items* (one input the model must see, with the gradient it contributes):
the plain gradient is one item per image, SmoothGrad / VarGrad one per noisy sample, IG one
per path step, IG-SmoothGrad one per (sample, step). Items of all images and all unguided
primitives are packed into chunks sized to a memory budget and run as one batch each; guided
items run in their own chunks with every ReLU guided. Each item's gradient is folded into
running sums (and sums of squares for VarGrad) at once, so memory does not grow with the
number of samples or steps.

Several stages of a randomization test can be explained at once (``explain_stages``): every chunk
goes through each stage's model in turn, and the steps of the model a stage leaves unchanged are
computed once for all of them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from benchmark import rng
from benchmark.runtime import memory_format_of
from benchmark.methods.base import ExternalMethod, GradientPass, Method, NoisyGradients, PathGradients, Primitive
from benchmark.methods.external import as_map

IG_RULES = ("linspace", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def path_alphas(n_steps: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on [0, 1] and their weights for the IG integral.

    ``linspace`` is the paper's code (PAIR saliency: linspace(0, 1, n), equal weights); the
    others follow Captum's names and definitions.
    """
    n = n_steps
    if n < 1:
        raise ValueError(f"n_steps={n} must be at least 1")
    if rule == "linspace":
        a, w = np.linspace(0.0, 1.0, n), np.full(n, 1.0 / n)
    elif rule == "riemann_left":
        a, w = np.arange(n) / n, np.full(n, 1.0 / n)
    elif rule == "riemann_right":
        a, w = np.arange(1, n + 1) / n, np.full(n, 1.0 / n)
    elif rule == "riemann_middle":
        a, w = (np.arange(n) + 0.5) / n, np.full(n, 1.0 / n)
    elif rule == "riemann_trapezoid":
        if n < 2:
            raise ValueError("rule 'riemann_trapezoid' needs n_steps >= 2")
        # Captum's definition: steps of 1/n with the two ends halved (weights sum to 1 - 1/n)
        a, w = np.linspace(0.0, 1.0, n), np.full(n, 1.0 / n)
        w[0] = w[-1] = 0.5 / n
    elif rule == "gausslegendre":
        x, wx = np.polynomial.legendre.leggauss(n)
        a, w = (x + 1) / 2, wx / 2
    else:
        raise ValueError(f"rule={rule!r} is not an IG rule; use one of {list(IG_RULES)}")
    return torch.tensor(a, dtype=torch.float32), torch.tensor(w, dtype=torch.float32)


def noise_scale(x: torch.Tensor, noise_level: float) -> torch.Tensor:
    """Per-image noise sd: noise_level * (max x - min x), as the PAIR saliency package."""
    flat = x.flatten(1)
    return noise_level * (flat.max(1).values - flat.min(1).values)


def standard_noise(seed: int, image_id: int, sample: int, shape: Sequence[int]) -> torch.Tensor:
    """The standard normal draw behind noisy sample ``sample`` of image ``image_id``."""
    return torch.randn(tuple(shape), generator=rng.generator(seed, "input_noise", image_id, sample))


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


def conv2d_input_grad(grad: torch.Tensor, weight: torch.Tensor, input_shape: Sequence[int],
                      stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                      memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Gradient of a 2-D convolution (groups 1, zero padding) with respect to its input.

    One matrix product gives every kernel tap's contribution at every output position (the weight's
    transpose times the output gradient); each tap's plane is then added into the input positions it
    read. Returns (B, C, H, W), dense, in ``memory_format``.
    """
    n, c_out, h_out, w_out = grad.shape
    _, c_in, kh, kw = weight.shape
    h, w = input_shape[-2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    cols = weight.reshape(c_out, -1).t() @ grad.permute(1, 0, 2, 3).reshape(c_out, -1)
    cols = cols.view(c_in, kh, kw, n, h_out, w_out)
    out = grad.new_zeros(c_in, n, h + 2 * ph, w + 2 * pw)
    for i in range(kh):
        rows = slice(i * dh, i * dh + sh * (h_out - 1) + 1, sh)
        for j in range(kw):
            out[:, :, rows, j * dw : j * dw + sw * (w_out - 1) + 1 : sw] += cols[:, i, j]
    return out[:, :, ph : ph + h, pw : pw + w].permute(1, 0, 2, 3).contiguous(memory_format=memory_format)


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
    slower than the convolution itself: for the MNIST CNN's conv1 on 128 images, 11.1 ms against 1.1 ms
    forward on 2 cores; a matrix product and shifted sums take 3.0 ms. Only where the weights and bias
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

    Convolutions with channels-last weights and inputs run faster on a CPU (measured on the MNIST
    CNN, 2 cores, batch 256: 0.41 ms per forward+backward item against 0.46 ms plain, and 0.54 ms
    when conv1's one-channel weight was left plain).
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


@dataclass
class NoisyStats:
    mean: torch.Tensor
    var: torch.Tensor


@dataclass
class Results:
    """What methods read: primitive results, the inputs and the GradCAM layer's tensors."""

    inputs: torch.Tensor
    image_ids: torch.Tensor
    seed: int
    stage_key: str
    values: dict[Primitive, Any] = field(default_factory=dict)
    layer_activation: Optional[torch.Tensor] = None
    layer_gradient: Optional[torch.Tensor] = None

    def __getitem__(self, primitive: Primitive) -> Any:
        return self.values[primitive]


@dataclass
class _Segment:
    """A run of items of one image; each target sums rows [0, limit) into an accumulator."""

    row: int  # image row in the batch
    length: int
    make: Callable[[], tuple[torch.Tensor, Optional[torch.Tensor]]]  # inputs, multipliers
    targets: list[tuple[Any, int, bool]]  # (accumulator key, limit, also squares)
    capture: bool = False


def estimate_item_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes one item costs in a forward+backward pass, from a probe of activation sizes."""
    total = [example[:1].numel() * 4]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    # saved activations, their gradients, and temporaries of the backward pass
    return 3 * total[0]


class Engine:
    """Compute maps of many methods on one model for a batch of images."""

    def __init__(self, model: nn.Module, methods: Sequence[Method], *, target_layer: Optional[nn.Module] = None,
                 seed: int = 0, memory_budget_mb: int = 1024, max_chunk: Optional[int] = None,
                 layout: str = "auto", conv_input_grad: str = "auto") -> None:
        self.model = model
        self.methods = list(methods)
        self.target_layer = target_layer
        self.seed = seed
        self.memory_budget = memory_budget_mb * 2**20
        # Small batches keep a CPU's caches warm (256 measured best for the MNIST CNN on 2
        # cores); a GPU wants large ones.
        device = next(model.parameters()).device
        self.max_chunk = max_chunk or (256 if device.type == "cpu" else 4096)
        # "auto": channels-last for convolutional models (measured faster), plain otherwise.
        if layout not in ("auto", "plain", "channels_last"):
            raise ValueError(f"layout={layout!r} must be one of auto, plain, channels_last")
        self.channels_last = layout == "channels_last" or (layout == "auto" and _has_conv(model))
        # "auto": convolutions with few input channels take their input gradient from conv2d_input_grad
        # on a CPU (few_channel_convs); "aten": PyTorch's own kernel everywhere.
        if conv_input_grad not in ("auto", "aten"):
            raise ValueError(f"conv_input_grad={conv_input_grad!r} must be one of auto, aten")
        self.few_channel_convs = conv_input_grad == "auto" and device.type == "cpu" and any(
            isinstance(m, nn.Conv2d) and m.in_channels <= FEW_CHANNELS for m in model.modules())
        self.primitives: list[Primitive] = []
        self._chunks: dict[tuple[int, ...], int] = {}
        for m in self.methods:
            if m.needs_target_layer and target_layer is None:
                raise ValueError(f"method {m.name!r} needs a target layer and the model declares none")
            for p in m.primitives():
                if p not in self.primitives:
                    self.primitives.append(p)
        self.passes_per_image = self._count_items()

    def _noise_groups(self) -> dict[float, list[NoisyGradients]]:
        """NoisyGradients requests by noise level: one set of samples (the most asked for) per level."""
        groups: dict[float, list[NoisyGradients]] = {}
        for p in self.primitives:
            if isinstance(p, NoisyGradients):
                groups.setdefault(p.noise_level, []).append(p)
        return groups

    def _count_items(self) -> int:
        n = sum(max(p.n_samples for p in ps) for ps in self._noise_groups().values())
        for p in self.primitives:
            if isinstance(p, GradientPass):
                n += 1
            elif isinstance(p, PathGradients):
                n += p.n_steps * max(1, p.n_samples)
        return n

    # -- item streams -------------------------------------------------------------------
    def _segments(self, x: torch.Tensor, image_ids: torch.Tensor, guided: bool) -> list[_Segment]:
        segs: list[_Segment] = []
        capture = self.target_layer is not None and any(m.needs_target_layer for m in self.methods)
        device = x.device
        noise_groups = {} if guided else self._noise_groups()
        for row in range(len(x)):
            xi, iid = x[row], int(image_ids[row])
            for p in self.primitives:
                if isinstance(p, GradientPass) and p.guided == guided:
                    segs.append(_Segment(row, 1, (lambda xi=xi: (xi[None], None)), [((p, row), 1, False)],
                                         capture=capture and not guided))
            if guided:
                continue
            for level, ps in noise_groups.items():
                n = max(p.n_samples for p in ps)
                sd = float(noise_scale(xi[None], level))

                def make(xi=xi, iid=iid, n=n, sd=sd):
                    z = torch.stack([standard_noise(self.seed, iid, j, xi.shape) for j in range(n)])
                    return xi[None] + sd * z.to(device), None

                segs.append(_Segment(row, n, make, [((p, row), p.n_samples, True) for p in ps]))
            for p in self.primitives:
                if isinstance(p, PathGradients):
                    alphas, weights = path_alphas(p.n_steps, p.rule)
                    alphas, weights = alphas.to(device), weights.to(device)
                    shape = (-1,) + (1,) * xi.dim()
                    base = torch.full_like(xi, p.baseline)
                    if p.n_samples == 0:
                        starts = [xi]
                        scale = 1.0
                    else:
                        sd = float(noise_scale(xi[None], p.noise_level))
                        starts = [xi + sd * standard_noise(self.seed, iid, j, xi.shape).to(device)
                                  for j in range(p.n_samples)]
                        scale = 1.0 / p.n_samples
                    for xs in starts:
                        def make(xs=xs, base=base, alphas=alphas, weights=weights, scale=scale, shape=shape):
                            diff = xs - base
                            inputs = base[None] + alphas.view(shape) * diff[None]
                            return inputs, (weights.view(shape) * scale) * diff[None]

                        segs.append(_Segment(row, p.n_steps, make, [((p, row), p.n_steps, False)]))
        return segs

    def _chunk_size(self, x: torch.Tensor, shared: bool = False) -> int:
        """Items per chunk. ``shared``: stages together hold the shared steps' graph beside a stage's own,
        up to twice a pass's activations, so the budget is halved (the 256-item cap on CPU usually binds
        first: the MNIST models' chunks are the same either way)."""
        key = tuple(x.shape[1:])
        if key not in self._chunks:
            self._chunks[key] = estimate_item_bytes(self.model, x)
        budget = self.memory_budget // 2 if shared else self.memory_budget
        return int(max(1, min(self.max_chunk, budget // max(1, self._chunks[key]))))

    def _run(self, x: torch.Tensor, plans: Sequence["StagePlan"], segs: list[_Segment], guided: bool,
             steps: Sequence[Callable], out: list["_StageSums"]) -> None:
        if not segs:
            return
        chunk = self._chunk_size(x, shared=len(steps) > 1 and len(plans) > 1)
        pieces: list[tuple[_Segment, int, int, torch.Tensor, Optional[torch.Tensor]]] = []
        filled = 0
        for seg in segs:
            inputs, mult = seg.make()
            start = 0
            while start < seg.length:
                take = min(seg.length - start, chunk - filled)
                pieces.append((seg, start, start + take, inputs[start : start + take],
                               None if mult is None else mult[start : start + take]))
                filled += take
                start += take
                if filled == chunk:
                    self._pass(plans, pieces, guided, steps, out)
                    pieces, filled = [], 0
        if pieces:
            self._pass(plans, pieces, guided, steps, out)

    def _pass(self, plans, pieces, guided, steps, out) -> None:
        """One chunk through every stage's model: the steps below a stage's cut are run once, for all."""
        batch = torch.cat([p[3] for p in pieces]).detach()
        if self.channels_last and batch.dim() == 4:
            batch = batch.to(memory_format=torch.channels_last)
        batch.requires_grad_(True)
        capture = any(p[0].capture for p in pieces)
        mode = guided_relus() if guided else nullcontext()
        convs = few_channel_convs() if self.few_channel_convs else nullcontext()
        with capture_output(self.target_layer if capture else None) as store, mode, convs:
            start = time.perf_counter()
            shared = [batch]  # shared[i]: the input of step i, the same in every stage whose cut is >= i
            for step in steps[: max(plan.cut for plan in plans)]:
                shared.append(step(shared[-1]))
            shared_capture = store.get("out")
            # Deepest cut first (it is charged with the shared steps); after each stage, the shared
            # activations no later stage reads are dropped, and with them their part of the retained graph.
            order = sorted(range(len(plans)), key=lambda k: -plans[k].cut)
            out[order[0]].seconds += time.perf_counter() - start
            for i, k in enumerate(order):
                plan = plans[k]
                start = time.perf_counter()
                tgt = torch.cat([plan.target[p[0].row].expand(p[2] - p[1]) for p in pieces])
                with swapped(plan.state):
                    store.clear()
                    h = shared[plan.cut]
                    for step in steps[plan.cut :]:
                        h = step(h)
                    selected = h.gather(1, tgt[:, None]).sum()
                    layer_out = store.get("out", shared_capture)
                    if capture and layer_out is None:
                        raise RuntimeError("the GradCAM layer's forward hook did not fire: declare a module the "
                                           "model (or its steps()) calls itself, not a container of modules it calls")
                    wrt = [batch] + ([layer_out] if capture else [])
                    last = i == len(order) - 1
                    grads = torch.autograd.grad(selected, wrt, retain_graph=not last)
                out[k].add(pieces, grads, layer_out)
                del h, selected, wrt, layer_out, grads
                if not last:
                    del shared[plans[order[i + 1]].cut + 1 :]
                out[k].seconds += time.perf_counter() - start

    # -- public ---------------------------------------------------------------------------
    def explain(self, x: torch.Tensor, target: torch.Tensor, image_ids: torch.Tensor,
                stage_key: str = "stage0") -> dict[str, torch.Tensor]:
        """Maps of every method for images x (B, C, H, W) and target classes (B,).

        ``image_ids`` (B,) identify the images for noise draws, so an image gets the same noise
        whatever batch it is in; ``stage_key`` only seeds the noise control.
        Returns method name -> (B, C or 1, H, W) float32 on the CPU.
        """
        return self.explain_stages(x, image_ids, [StagePlan(stage_key, target)])[0]

    def explain_stages(self, x: torch.Tensor, image_ids: torch.Tensor,
                       plans: Sequence["StagePlan"]) -> list[dict[str, torch.Tensor]]:
        """Maps of every method for several stages' models at once, one dict per plan (see ``explain``).

        Each plan's model is the live model with ``plan.state`` swapped in, and that state may only
        touch steps at or after ``plan.cut`` of ``model.steps()``: the steps before the cut are
        computed once per chunk and their activations (and their part of the backward graph) serve
        every plan. A model without ``steps()`` runs whole, once per plan (cut 0). The maps equal
        those of ``explain`` on each stage's model in turn, bit for bit: the same chunks, the same
        operations on the same values.
        """
        device = next(self.model.parameters()).device
        x = x.to(device)
        plans = [StagePlan(p.key, p.target.to(device), p.state, p.cut) for p in plans]
        if len(plans) > 1 and hasattr(self.model, "steps"):
            steps = [fn for _, fn in self.model.steps()]
        else:
            steps = [self.model]
            plans = [StagePlan(p.key, p.target, p.state, 0) for p in plans]
        for p in plans:
            if not 0 <= p.cut <= len(steps):
                raise ValueError(f"stage {p.key!r}: cut {p.cut} is outside the model's {len(steps)} steps")
        sums = [_StageSums(len(x)) for _ in plans]
        if any(m.uses_model for m in self.methods):
            layout = self.channels_last and x.dim() == 4
            with prepared(self.model), channels_last(self.model, layout):
                like: dict[int, torch.Tensor] = {}  # one copy in the live layout per distinct value
                for p in plans:
                    for t, v in p.state:
                        if id(v) not in like:
                            like[id(v)] = _like(t, v)
                run_plans = [StagePlan(p.key, p.target, [(t, like[id(v)]) for t, v in p.state], p.cut) for p in plans]
                for guided in (False, True):
                    self._run(x, run_plans, self._segments(x, image_ids, guided), guided, steps, sums)
        self.stage_seconds = [s.seconds for s in sums]
        return [self._combine(x, image_ids, plan, acc) for plan, acc in zip(plans, sums)]

    def _combine(self, x: torch.Tensor, image_ids: torch.Tensor, plan: "StagePlan",
                 sums: "_StageSums") -> dict[str, torch.Tensor]:
        acc, acc_sq = sums.acc, sums.acc_sq
        results = Results(inputs=x, image_ids=image_ids, seed=self.seed, stage_key=plan.key)
        for p in self.primitives:
            if p not in acc:  # no method of this set ran a pass (none uses the model)
                continue
            if isinstance(p, NoisyGradients):
                mean = acc[p] / p.n_samples
                var = acc_sq[p] / p.n_samples - mean * mean
                results.values[p] = NoisyStats(mean.float(), var.float())
            else:
                results.values[p] = acc[p].float()
        results.layer_activation, results.layer_gradient = sums.layer_activation, sums.layer_gradient
        if self.channels_last and sums.layer_activation is not None and sums.layer_activation.dim() == 4:
            # the layout the passes produced them in, so GradCAM sums in the same order as on the passes' tensors
            results.layer_activation = sums.layer_activation.contiguous(memory_format=torch.channels_last)
            results.layer_gradient = sums.layer_gradient.contiguous(memory_format=torch.channels_last)
        out: dict[str, torch.Tensor] = {}
        for m in self.methods:
            if isinstance(m, ExternalMethod):
                with prepared(self.model), swapped(plan.state):
                    out[m.name] = as_map(m, m.attribute(self.model, x, plan.target), x)
            else:
                out[m.name] = m.combine(results).detach().float().cpu()
        return out


@dataclass
class StagePlan:
    """One stage's model for ``Engine.explain_stages``.

    ``state``: (live tensor, this stage's value) pairs swapped in for the stage; ``cut``: index of
    the first step of ``model.steps()`` the state touches (the number of steps for an unchanged model).
    """

    key: str
    target: torch.Tensor
    state: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
    cut: int = 0


@dataclass
class _StageSums:
    """Running sums of one stage's gradients, (images, ...) float64 per primitive, and the GradCAM layer's tensors.

    Allocated once per stage: small tensors created chunk after chunk would scatter through the
    heap between the passes' large transient ones and make it grow.
    """

    n_images: int
    acc: dict[Any, torch.Tensor] = field(default_factory=dict)
    acc_sq: dict[Any, torch.Tensor] = field(default_factory=dict)
    layer_activation: Optional[torch.Tensor] = None
    layer_gradient: Optional[torch.Tensor] = None
    seconds: float = 0.0

    def _slot(self, table: dict[Any, torch.Tensor], p: Any, like: torch.Tensor) -> torch.Tensor:
        if p not in table:
            table[p] = torch.zeros((self.n_images,) + tuple(like.shape), dtype=like.dtype, device=like.device)
        return table[p]

    def add(self, pieces, grads, layer_out) -> None:
        grad = grads[0].detach()
        offset = 0
        for seg, start, stop, _inp, mult in pieces:
            n = stop - start
            g = grad[offset : offset + n]
            if mult is not None:
                g = g * mult
            for (p, row), limit, square in seg.targets:
                hi = min(stop, limit) - start
                if hi <= 0:
                    continue
                part = g[:hi].double()
                total = part.sum(0)
                self._slot(self.acc, p, total)[row] += total
                if square:
                    sq = (part * part).sum(0)
                    self._slot(self.acc_sq, p, sq)[row] += sq
            if seg.capture:  # one item: the image's gradient pass
                if self.layer_activation is None:
                    shape = (self.n_images,) + tuple(layer_out.shape[1:])
                    self.layer_activation = torch.zeros(shape, dtype=layer_out.dtype, device=layer_out.device)
                    self.layer_gradient = torch.zeros(shape, dtype=grads[1].dtype, device=grads[1].device)
                self.layer_activation[seg.row] = layer_out[offset].detach()
                self.layer_gradient[seg.row] = grads[1][offset].detach()
            offset += n


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
