"""Scheduling a test's stages: one at a time, or explained together. The only home of joint stages and memory.

A test supplies its stages as (Stage, context manager yielding the stage's model). Stage 0 is the
reference (the trained model, or the true-label model). Stages whose contexts re-initialize units of
one shared model in place can be explained together (``Engine.explain_stages``): each stage's state is
copied out of its context, and the layers below a stage's lowest re-initialized unit run once for
every stage. The maps are the same, bit for bit.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from benchmark.config import ConvInputGrad, ExperimentConfig
from benchmark.inputs import Setup
from benchmark.engine import Engine
from benchmark.methods import Method
from benchmark.engine import StagePlan
from benchmark.models import Architecture
from benchmark.progress import Progress
from benchmark.randomization import Stage, stage_cut, stage_state
from benchmark.scoring import Scored, StageScorer

log = logging.getLogger(__name__)

# Stages explained together at most (the CNN's and MLP's cascades have 5).
JOINT_STAGES = 6

StageModels = Iterable[tuple[Stage, AbstractContextManager[nn.Module]]]


def engine_for(cfg: ExperimentConfig, arch: Architecture, methods: list[Method], model: nn.Module) -> Engine:
    layer = model.get_submodule(arch.gradcam_layer) if arch.gradcam_layer else None
    return Engine(model, methods, target_layer=layer, seed=cfg.seed, memory_budget_mb=cfg.memory_budget_mb,
                  conv_input_grad=ConvInputGrad(cfg.conv_input_grad).value)


def joint_fits(cfg: ExperimentConfig, arch: Architecture, methods: list[Method], shared_model: Optional[nn.Module],
               x: torch.Tensor, n_stages: Optional[int], draws: int = 1) -> bool:
    """Whether the stages go together: a shared model whose steps() are its units, within the memory budget.

    Held together, per image and method: the maps (float32, 4 bytes) and the gradient sums (float64, with
    squares: 16 bytes); and the re-initialized weights, one model's worth at most per draw (``draws``: 2 with the
    null's second draw).
    """
    if shared_model is None or not cfg.share_unchanged_layers:
        return False
    if stage_cut(shared_model, arch, Stage(0, "original", ())) is None:
        return False
    n = min(JOINT_STAGES, n_stages if n_stages is not None else len(arch.units) + 1)
    need = n * len(x) * x[0].numel() * 20 * len(methods)
    need += draws * sum(p.numel() * p.element_size() for p in shared_model.parameters())
    if need > cfg.memory_budget_mb * 2**20:
        log.info("stages explained one at a time: held together they would need %.0f MB, above "
                 "memory_budget_mb=%d", need / 2**20, cfg.memory_budget_mb)
        return False
    return True


def _one_at_a_time(scorer: StageScorer, cfg: ExperimentConfig, arch: Architecture, methods: list[Method],
                   stage_models: StageModels, n_stages: Optional[int], explain: Optional[Callable] = None) -> int:
    passes = 0
    x, _, ids = scorer.images
    progress: Optional[Progress] = None
    for stage, context in stage_models:
        t_stage = time.time()
        with context as model:
            seen = scorer.observe(stage, model)
            engine = engine_for(cfg, arch, methods, model)
            if progress is None:
                progress = Progress(engine.items_per_image(x, ids) * len(x) * (n_stages or len(arch.units) + 1),
                                    cfg.progress, "maps")
            engine.progress = progress
            key = stage_key(stage)
            maps = (engine.explain(x, seen.target, ids, stage_key=key) if explain is None
                    else explain(engine, x, seen.target, ids, key, stage))
            passes = engine.passes_per_image
        scorer.score(seen, maps, time.time() - t_stage)
    if progress is not None:
        progress.close()
    return passes


def stage_key(stage: Stage) -> str:
    """What a stage's random draws inside the methods derive from (SmoothGrad's noise, the noise control)."""
    return f"stage{stage.index}" + ("_null" if stage.null else "")


def _together(scorer: StageScorer, cfg: ExperimentConfig, arch: Architecture, methods: list[Method],
              stage_models: StageModels, shared_model: nn.Module, drawn: Optional[dict[int, torch.Tensor]],
              drawn_null: Optional[dict[int, torch.Tensor]] = None) -> int:
    """Every stage's output, targets and re-initialized state, one context at a time; then the maps of at most
    JOINT_STAGES stages at a time, so memory does not grow with the number of stages."""
    x, _, ids = scorer.images
    plans, seen_all, own = [], [], []
    # each drawn tensor copied once for all stages of its draw (the null's twins hold their own)
    held = {False: {} if drawn is None else drawn, True: {} if drawn_null is None else drawn_null}
    for stage, context in stage_models:
        t_stage = time.time()
        with context as model:
            seen = scorer.observe(stage, model)
            state = stage_state(model, arch, stage, held[stage.null])
        plans.append(StagePlan(stage_key(stage), seen.target, state, stage_cut(model, arch, stage)))
        seen_all.append(seen)
        own.append(time.time() - t_stage)
    engine = engine_for(cfg, arch, methods, shared_model)
    engine.progress = progress = Progress(engine.items_per_image(x, ids) * len(x) * len(plans), cfg.progress, "maps")
    for first in range(0, len(plans), JOINT_STAGES):
        group = range(first, min(first + JOINT_STAGES, len(plans)))
        t_maps = time.time()
        maps = engine.explain_stages(x, ids, [plans[k] for k in group])
        # the engine's clock per stage (the shared layers count for the first); the rest of the call evenly
        rest = (time.time() - t_maps - sum(engine.stage_seconds)) / len(group)
        for j, k in enumerate(group):
            scorer.score(seen_all[k], maps[j], own[k] + engine.stage_seconds[j] + rest)
            maps[j] = {}
    progress.close()
    return engine.passes_per_image


def score_stages(
    cfg: ExperimentConfig,
    arch: Architecture,
    methods: list[Method],
    stage_models: StageModels,
    s: Setup,
    n_stages: Optional[int] = None,
    shared_model: Optional[nn.Module] = None,
    drawn: Optional[dict[int, torch.Tensor]] = None,
    explain: Optional[Callable] = None,
    null: bool = False,
    drawn_null: Optional[dict[int, torch.Tensor]] = None,
) -> Scored:
    """Maps of every stage's model, scored against stage 0's with every metric.

    ``shared_model``: every context re-initializes units of this one model in place
    (``randomization.randomized``); then, with ``cfg.share_unchanged_layers`` and a model with ``steps()``,
    the stages are explained together. ``drawn``: the dict the contexts were given
    (``randomized(..., drawn)``); the stages' states then share its copies of the drawn weights.
    ``explain``: the test's own way of computing a stage's maps (``benchmark.checks.base.StageExplain``); its
    stages are explained one at a time. ``null``: every randomized stage is followed by its null twin
    (``Stage.null``), scored against that stage's maps (``Scored.null``); ``drawn_null``: the twins' dict.
    """
    start = time.time()
    for m in methods:  # what a method reads from the data set (the IDF control: the training split's IDF)
        bind = getattr(m, "bind_data", None)
        if bind is not None:
            bind(s.data)
    scorer = StageScorer(cfg, methods, s.data, s.images, s.device, spill_dir=s.spill_dir, null=null)
    if explain is None and joint_fits(cfg, arch, methods, shared_model, s.images[0], n_stages, 2 if null else 1):
        passes = _together(scorer, cfg, arch, methods, stage_models, shared_model, drawn, drawn_null)
    else:
        passes = _one_at_a_time(scorer, cfg, arch, methods, stage_models, n_stages, explain)
    return scorer.result(passes, time.time() - start)
