"""The model parameter randomization test, end to end (Adebayo et al. 2018, section 4).

``run(cfg)`` validates the config, trains (or loads) the model, computes every method's maps
for the trained model once, then for each stage re-initializes the stage's units, recomputes
the maps, scores them against the trained model's maps and drops them.
Output: ``<results_root>/model_randomization/<run_id>/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from benchmark import store
from benchmark.config import ExperimentConfig
from benchmark.experiment import (RUN_FILES, Plan, Scored, Setup, base_meta, finish_table, run_guarded, score_stages,
                                  setup, validate, write_outputs)
from benchmark.methods import Method
from benchmark.models import Architecture
from benchmark.randomization import Stage, randomized, stages
from benchmark.training import train_model

log = logging.getLogger(__name__)

__all__ = ["RUN_FILES", "plan", "run", "score_model_stages"]


def plan(cfg: ExperimentConfig) -> Plan:
    """Check every setting that can be checked without data or training; fail with the fix."""
    arch, methods = validate(cfg)
    stage_list = stages(arch, cfg.randomization.order, cfg.randomization.units)
    test = cfg.randomization.order.value
    rid = store.run_id(cfg, test)
    return Plan(cfg, arch, methods, stage_list, test, rid, Path(cfg.results_root) / cfg.test / rid)


def run(cfg: ExperimentConfig) -> Path:
    """Run the test (or find it finished) and return its folder."""
    return run_guarded(plan(cfg), _execute)


def score_model_stages(cfg: ExperimentConfig, arch: Architecture, methods: list[Method], model: nn.Module,
                       stage_list: Sequence[Stage], s: Setup) -> Scored:
    """``score_stages`` over ``model`` re-initialized stage by stage in place, as a run does it.

    Each unit is drawn once for every stage it is part of (``randomized(..., drawn)``), and the stages go
    together where the model allows it (``shared_model``), sharing the drawn weights. The draws are kept (one
    model's worth of weights at most) only when a unit is part of several stages (cascading, bottom-up): with
    the independent order nothing is reused, and stages run one at a time hold no copies.
    """
    units = [u for st in stage_list for u in st.units]
    drawn: Optional[dict[int, torch.Tensor]] = {} if len(units) > len(set(units)) else None
    contexts = ((st, randomized(model, arch, st, cfg.randomization, cfg.seed, drawn)) for st in stage_list)
    return score_stages(cfg, arch, methods, contexts, s, n_stages=len(stage_list), shared_model=model, drawn=drawn)


def _execute(p: Plan, started: float) -> None:
    from benchmark.report import write_run_report

    cfg, arch = p.cfg, p.arch
    s = setup(cfg)
    trained = train_model(arch, s.data, cfg.training, cfg.seed, s.device, s.cache, cfg.progress, cfg.model.weights)
    model = trained.model
    scored = score_model_stages(cfg, arch, p.methods, model, p.stages, s)
    df = finish_table(scored.scores, p, s.data)
    meta = base_meta(p, s, scored)
    meta["model"] = {"name": arch.name, "train_accuracy": trained.train_accuracy,
                     "eval_accuracy": trained.eval_accuracy, "checkpoint": trained.checkpoint,
                     "from_cache": trained.from_cache, "gradcam_layer": arch.gradcam_layer,
                     "units": {k: list(v) for k, v in arch.units.items()}}
    meta["timings"] = {"data_s": s.data_s, "training_s": trained.seconds, "maps_and_scores_s": scored.seconds}
    write_outputs(p, df, scored.arrays, meta,
                  lambda d, f, m, a: write_run_report(d, f, m, a, n_figure_images=cfg.n_figure_images,
                                                      verdict=cfg.verdict),
                  started, calibration=finish_table(scored.calibration, p, s.data))
