"""One attribution engine: every requested method from the fewest forward/backward passes.

Work is a stream of *items* (one input the model must see, with the gradient it contributes): the plain
gradient is one item per image, SmoothGrad / VarGrad one per noisy sample, IG one per path step,
IG-SmoothGrad one per (sample, step); each primitive says which (``benchmark.methods.primitives``). Items
of all images and all unguided primitives are packed into chunks sized to a memory budget and run as one
batch each; guided items run in their own chunks with every ReLU guided. Each item's gradient is folded
into running sums (and sums of squares for VarGrad) at once, so memory does not grow with the number of
samples or steps.

Several stages of a randomization test can be explained at once (``explain_stages``): every chunk goes
through each stage's model in turn, and the steps of the model a stage leaves unchanged are computed once
for all of them.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from benchmark.engine.forward import forward_item_bytes, run_forward, streams_for
from benchmark.engine.modes import FEW_CHANNELS, few_channel_convs, guided_relus
from benchmark.engine.state import _has_conv, _like, capture_output, channels_last, prepared, swapped
from benchmark.engine.sums import _StageSums, estimate_item_bytes
from benchmark.methods.base import ExternalMethod, Method
from benchmark.methods.external import as_map
from benchmark.methods.primitives import Primitive, Results, Segment
from benchmark.models.text import MASK_CH, SPECIAL, model_input


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
        # Small batches keep a CPU's caches warm; a GPU wants large ones (docs/performance.md).
        device = next(model.parameters()).device
        # Text items are a few dozen token rows: chunks of 64 sentences' items pad least (experiments/speed_text.py).
        text = hasattr(model, "embed")
        self.max_chunk = max_chunk or ((64 if text else 256) if device.type == "cpu" else 4096)
        # "auto": channels-last for convolutional models (faster on a CPU), plain otherwise.
        if layout not in ("auto", "plain", "channels_last"):
            raise ValueError(f"layout={layout!r} must be one of auto, plain, channels_last")
        self.channels_last = layout == "channels_last" or (layout == "auto" and _has_conv(model))
        # "auto": convolutions with few input channels take their input gradient from conv2d_input_grad
        # on a CPU (few_channel_convs); "aten": PyTorch's own kernel everywhere.
        if conv_input_grad not in ("auto", "aten"):
            raise ValueError(f"conv_input_grad={conv_input_grad!r} must be one of auto, aten")
        self.few_channel_convs = conv_input_grad == "auto" and device.type == "cpu" and any(
            isinstance(m, nn.Conv2d) and m.in_channels <= FEW_CHANNELS for m in model.modules())
        self.progress: Any = None  # an object with advance(items), told after every chunk (benchmark.progress)
        self.primitives: list[Primitive] = []
        self._chunks: dict[tuple[int, ...], int] = {}
        for m in self.methods:
            if m.needs_target_layer and target_layer is None:
                raise ValueError(f"method {m.name!r} needs a target layer and the model declares none")
            for p in m.primitives():
                if p not in self.primitives:
                    self.primitives.append(p)
        self.forward = [p for p in self.primitives if p.forward_only]
        self.passes_per_image = self._count_items()  # gradient items; forward items once images are seen

    def items_per_image(self, x: torch.Tensor, image_ids: torch.Tensor) -> int:
        """Items per image per stage: the gradient items and the first image's distinct masked copies."""
        n = self._count_items()
        if self.forward:
            n += sum(len(s.masks) for s in streams_for(self.forward, x[:1], image_ids[:1], self.seed))
        return n

    def _groups(self, guided: bool) -> list[list[Primitive]]:
        """The gradient requests of one pass kind grouped by their ``share`` key, in rank order (stable)."""
        groups: dict[Any, list[Primitive]] = {}
        for p in self.primitives:
            if p.guided == guided and not p.forward_only:
                groups.setdefault(p.share(), []).append(p)
        return sorted(groups.values(), key=lambda g: g[0].rank)

    def _count_items(self) -> int:
        return sum(g[0].n_items(g) for guided in (False, True) for g in self._groups(guided))

    # -- item streams -------------------------------------------------------------------
    def _segments(self, x: torch.Tensor, image_ids: torch.Tensor, guided: bool) -> list[Segment]:
        capture = self.target_layer is not None and any(m.needs_target_layer for m in self.methods)
        groups = self._groups(guided)
        rows: Any = range(len(x))
        if hasattr(self.model, "embed") and x.dim() == 3:
            # sentences shortest first: each chunk is cut to its own longest sentence, so similar lengths pad least
            lengths = x[:, : x.shape[1] - len(SPECIAL), MASK_CH].sum(1)
            rows = torch.argsort(lengths.cpu(), stable=True).tolist()
        return [seg for row in rows for g in groups
                for seg in g[0].segments(g, row, x[row], int(image_ids[row]), self.seed, capture)]

    def _chunk_size(self, x: torch.Tensor, shared: bool = False) -> int:
        """Items per chunk. ``shared``: stages together hold the shared steps' graph beside a stage's own,
        up to twice a pass's activations, so the budget is halved (the 256-item cap on CPU usually binds
        first: the MNIST models' chunks are the same either way)."""
        key = tuple(x.shape[1:])
        if key not in self._chunks:
            self._chunks[key] = estimate_item_bytes(self.model, x)
        budget = self.memory_budget // 2 if shared else self.memory_budget
        return int(max(1, min(self.max_chunk, budget // max(1, self._chunks[key]))))

    def _run(self, x: torch.Tensor, plans: Sequence["StagePlan"], segs: list[Segment], guided: bool,
             steps: Sequence[Callable], out: list["_StageSums"]) -> None:
        if not segs:
            return
        chunk = self._chunk_size(x, shared=len(steps) > 1 and len(plans) > 1)
        pieces: list[tuple[Segment, int, int, torch.Tensor, Optional[torch.Tensor]]] = []
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
        # a model's reversible rewrite with the same values and gradients (MnistCNN: ReLU after pooling), GradCAM's
        # layer kept as declared when its output is read
        rewrite = getattr(self.model, "equivalent_rewrite", None)
        rewritten = rewrite((self.target_layer,) if capture else ()) if rewrite is not None else nullcontext()
        explained = getattr(self.model, "explained", None)
        with capture_output(self.target_layer if capture else None) as store, mode, convs, rewritten:
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
                    if explained is not None:  # the output the maps explain (text models: model.output)
                        h = explained(h)
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
        if self.progress is not None:
            self.progress.advance(len(batch) * len(plans))

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
        if not x.is_floating_point() and len(plans) > 1 and any(p.state for p in plans):
            raise ValueError("token inputs are embedded by each stage's model: explain text stages one at a time")
        x = model_input(self.model, x)  # token rows: embedded by the live model's (this stage's) word embeddings
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
                if self.forward:
                    self._run_forward(x, image_ids, run_plans, steps, sums)
        self.stage_seconds = [s.seconds for s in sums]
        return [self._combine(x, image_ids, plan, acc) for plan, acc in zip(plans, sums)]

    def _run_forward(self, x, image_ids, plans, steps, sums) -> None:
        key = tuple(x.shape[1:])
        if key not in self._chunks:
            self._chunks[key] = estimate_item_bytes(self.model, x)
        # stages together hold the shared steps' outputs beside a stage's own: half the budget, as for gradients
        budget = self.memory_budget // 2 if len(steps) > 1 and len(plans) > 1 else self.memory_budget
        chunk = int(max(1, min(self.max_chunk, budget // forward_item_bytes(self._chunks[key]))))
        maps, seconds, items = run_forward(self.forward, x, image_ids, self.seed, plans, steps, chunk,
                                           self.memory_budget // 4, self.channels_last,
                                           getattr(self.model, "equivalent_rewrite", None), self.progress)
        self.passes_per_image = self._count_items() + round(items / len(x))
        for k, acc in enumerate(sums):
            acc.seconds += seconds[k]
            acc.forward = maps[k]

    def _combine(self, x: torch.Tensor, image_ids: torch.Tensor, plan: "StagePlan",
                 sums: "_StageSums") -> dict[str, torch.Tensor]:
        acc, acc_sq = sums.acc, sums.acc_sq
        results = Results(inputs=x, image_ids=image_ids, seed=self.seed, stage_key=plan.key)
        for p in self.primitives:
            if p in sums.forward:
                results.values[p] = sums.forward[p]
            if p not in acc:  # no method of this set ran a pass (none uses the model), or a forward-only request
                continue
            results.values[p] = p.result(acc[p], acc_sq.get(p))
        results.layer_activation, results.layer_gradient = sums.layer_activation, sums.layer_gradient
        if self.channels_last and sums.layer_activation is not None and sums.layer_activation.dim() == 4:
            # the layout the passes produced them in, so GradCAM sums in the same order as on the passes' tensors
            results.layer_activation = sums.layer_activation.contiguous(memory_format=torch.channels_last)
            results.layer_gradient = sums.layer_gradient.contiguous(memory_format=torch.channels_last)
        out: dict[str, torch.Tensor] = {}
        for m in self.methods:
            if isinstance(m, ExternalMethod):
                # in slices of images sized to the budget (half a chunk: DeepLIFT runs inputs and baselines together)
                step = max(1, self._chunk_size(x) // 2)
                with prepared(self.model), swapped(plan.state):
                    out[m.name] = torch.cat([as_map(m, m.attribute(self.model, x[i : i + step], plan.target[i : i + step]),
                                                    x[i : i + step]) for i in range(0, len(x), step)])
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
