"""The data randomization test (Adebayo et al. 2018, section 5).

Two models that differ only in their training labels: one trained on the true labels, one on
a fixed random permutation of them until it memorizes it (training accuracy at least the
memorization gate). Every method's maps of both models on the same held-out images are
compared: the true-label model is stage 0, the random-label model stage 1.
Output: ``<results_root>/data_randomization/<run_id>/``.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from benchmark import store
from benchmark.config import ExperimentConfig
from benchmark.experiment import (RUN_FILES, Plan, base_meta, finish_table, run_guarded, score_stages, setup,
                                  validate, write_outputs)
from benchmark.randomization import Stage
from benchmark.training import TrainedModel, train_model

log = logging.getLogger(__name__)

__all__ = ["RUN_FILES", "plan", "run"]

STAGES = [Stage(0, "true_labels", ()), Stage(1, "random_labels", ())]


def plan(cfg: ExperimentConfig) -> Plan:
    if cfg.model.weights is not None:
        raise ValueError(f"model.weights={cfg.model.weights!r} cannot be used by the data randomization test, "
                         "which trains both models; remove model.weights")
    arch, methods = validate(cfg)
    rid = store.run_id(cfg, "data_randomization")
    return Plan(cfg, arch, methods, list(STAGES), "data_randomization", rid, Path(cfg.results_root) / cfg.test / rid)


def run(cfg: ExperimentConfig) -> Path:
    """Run the test (or find it finished) and return its folder."""
    return run_guarded(plan(cfg), _execute)


def _model_meta(t: TrainedModel) -> dict[str, Any]:
    return {"labels": t.labels, "train_accuracy": t.train_accuracy, "eval_accuracy": t.eval_accuracy,
            "epochs": t.epochs, "checkpoint": t.checkpoint, "from_cache": t.from_cache, "seconds": t.seconds}


def _execute(p: Plan, started: float) -> None:
    from benchmark.report import write_run_report

    cfg, arch = p.cfg, p.arch
    s = setup(cfg)
    true = train_model(arch, s.data, cfg.training, cfg.seed, s.device, s.cache, cfg.progress, labels="true")
    random = train_model(arch, s.data, cfg.training, cfg.seed, s.device, s.cache, cfg.progress, labels="random")
    contexts = [(STAGES[0], nullcontext(true.model)), (STAGES[1], nullcontext(random.model))]
    scored = score_stages(cfg, arch, p.methods, contexts, s, n_stages=2)
    df = finish_table(scored.scores, p, s.data)
    meta = base_meta(p, s, scored)
    meta["model"] = {"name": arch.name, "gradcam_layer": arch.gradcam_layer, **_model_meta(true)}
    meta["random_label_model"] = {"name": arch.name, "memorization_gate": cfg.training.memorization_gate,
                                  **_model_meta(random)}
    meta["timings"] = {"data_s": s.data_s, "training_s": true.seconds + random.seconds,
                       "maps_and_scores_s": scored.seconds}
    write_outputs(p, df, scored.arrays, meta,
                  lambda d, f, m, a: write_run_report(d, f, m, a, n_figure_images=cfg.n_figure_images,
                                                      verdict=cfg.verdict),
                  started, calibration=finish_table(scored.calibration, p, s.data))
