"""Data randomization (Adebayo et al. 2018, section 5): the true-label model against a random-label one.

Two models that differ only in their training labels: one trained on the true labels, one on a fixed
random permutation of them until it memorizes it (training accuracy at least the memorization gate).
The true-label model is stage 0, the random-label model stage 1.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from benchmark.checks.base import Check, Models, StageRun, register
from benchmark.checks.model_randomization import model_meta
from benchmark.checks.report_text import ReportText
from benchmark.config import ExperimentConfig
from benchmark.randomization import Stage
from benchmark.training import TrainedModel, train_model

STAGES = [Stage(0, "true_labels", ()), Stage(1, "random_labels", ())]


def trained_meta(t: TrainedModel) -> dict[str, Any]:
    return {"labels": t.labels, "train_accuracy": t.train_accuracy, "eval_accuracy": t.eval_accuracy,
            "epochs": t.epochs, "checkpoint": t.checkpoint, "from_cache": t.from_cache, "seconds": t.seconds}


class DataRandomization(Check):
    name = "data_randomization"
    folder = "data_randomization"

    def check(self, cfg: ExperimentConfig) -> None:
        if cfg.model.weights is not None:
            raise ValueError(f"model.weights={cfg.model.weights!r} cannot be used by the data randomization test, "
                             "which trains both models; remove model.weights")
        if cfg.model.name == "torchvision":
            raise ValueError("model=torchvision cannot be used by the data randomization test, which trains both "
                             "models on the run's data; use model=custom with model.target, or the Python API with "
                             "two models")

    def stages(self, arch: Any, cfg: ExperimentConfig) -> list[Stage]:
        return list(STAGES)

    def obtain(self, plan: Any, s: Any) -> Models:
        cfg, arch = plan.cfg, plan.arch
        true = train_model(arch, s.data, cfg.training, cfg.seed, s.device, s.cache, cfg.progress, labels="true")
        random = train_model(arch, s.data, cfg.training, cfg.seed, s.device, s.cache, cfg.progress, labels="random")
        return Models(true, random)

    def stage_models(self, plan: Any, models: Models) -> StageRun:
        contexts = [(STAGES[0], nullcontext(models.trained.model)), (STAGES[1], nullcontext(models.random_labels.model))]
        return StageRun(contexts, 2)

    def meta(self, plan: Any, models: Models) -> dict[str, Any]:
        arch = plan.arch
        return {
            "model": {"name": arch.name, "gradcam_layer": arch.gradcam_layer, **trained_meta(models.trained),
                      **({"units": model_meta(arch, models.trained)["units"], **arch.derived} if arch.derived else {})},
            "random_label_model": {"name": arch.name, "memorization_gate": plan.cfg.training.memorization_gate,
                                   **trained_meta(models.random_labels)},
        }

    def report_text(self, meta: dict[str, Any]) -> ReportText:
        return ReportText(
            description="data randomization", axis="model", columns="columns: the true-label and the random-label model",
            compares="", figure="bars", paper="data_randomization",
            caption=("Similarity of the true-label and the random-label model's maps per method (mean over images, 95% "
                     "bootstrap interval): bars reaching into the gray band of unrelated maps mean the maps depend on "
                     "the labels learned; the edge control sits at 1 by construction, diamonds are the paper's MNIST "
                     "values."))


register(DataRandomization())
