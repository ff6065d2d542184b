"""The model parameter randomization test, end to end (Adebayo et al. 2018, section 4).

``run(cfg)`` validates the config, trains (or loads) the model, computes every method's maps
for the trained model once, then for each stage re-initializes the stage's units, recomputes
the maps, scores them against the trained model's maps and drops them.
Output: ``<results_root>/model_randomization/<run_id>/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from benchmark import store
from benchmark.config import ExperimentConfig
from benchmark.experiment import (RUN_FILES, Plan, base_meta, finish_table, run_guarded, score_stages, setup,
                                  validate, write_outputs)
from benchmark.randomization import randomized, stages
from benchmark.training import train_model

log = logging.getLogger(__name__)

__all__ = ["RUN_FILES", "plan", "run"]


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


def _execute(p: Plan, started: float) -> None:
    from benchmark.report import write_run_report

    cfg, arch = p.cfg, p.arch
    s = setup(cfg)
    trained = train_model(arch, s.data, cfg.training, cfg.seed, s.device, s.cache, cfg.progress, cfg.model.weights)
    model = trained.model
    drawn: dict[int, torch.Tensor] = {}  # each unit drawn once, for every stage it is part of
    contexts = ((stage, randomized(model, arch, stage, cfg.randomization, cfg.seed, drawn)) for stage in p.stages)
    scored = score_stages(cfg, arch, p.methods, contexts, s, n_stages=len(p.stages), shared_model=model, drawn=drawn)
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
