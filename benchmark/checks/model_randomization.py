"""Model parameter randomization (Adebayo et al. 2018, section 4): cascading, independent or bottom-up.

Stage 0 is the trained model; each later stage re-initializes its units of the same model in place
(``randomization.randomized``) and restores them bit-identically afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from benchmark.checks.base import Check, Models, StageRun, register
from benchmark.config import ExperimentConfig, Order
from benchmark.randomization import Stage, randomized, stages
from benchmark.training import given_model, train_model


def obtain_model(plan: Any, s: Any):
    """The model to randomize: trained (or loaded from the cache / ``model.weights``), or used as given."""
    cfg, arch = plan.cfg, plan.arch
    if arch.source in ("given", "torchvision_any") or (arch.source == "custom" and not cfg.model.train):
        return given_model(arch.build(s.data.in_channels, s.data.num_classes), s.data, s.device,
                           cfg.model.weights or arch.notes or arch.source)
    return train_model(arch, s.data, cfg.training, cfg.seed, s.device, s.cache, cfg.progress, cfg.model.weights)


def model_meta(arch: Any, trained: Any) -> dict[str, Any]:
    return {"name": arch.name, "train_accuracy": trained.train_accuracy, "eval_accuracy": trained.eval_accuracy,
            "checkpoint": trained.checkpoint, "from_cache": trained.from_cache, "gradcam_layer": arch.gradcam_layer,
            "units": {k: list(v) for k, v in arch.units.items()}, **arch.derived}


@dataclass(frozen=True)
class ModelRandomization(Check):
    order: Order = Order.cascading
    folder = "model_randomization"

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.order.value

    def configure(self, cfg: ExperimentConfig) -> None:
        cfg.test = self.folder
        cfg.randomization.order = self.order

    def stages(self, arch: Any, cfg: ExperimentConfig) -> list[Stage]:
        return stages(arch, cfg.randomization.order, cfg.randomization.units)

    def obtain(self, plan: Any, s: Any) -> Models:
        return Models(obtain_model(plan, s))

    def stage_models(self, plan: Any, models: Models) -> StageRun:
        """Each unit is drawn once for every stage it is part of (``randomized(..., drawn)``), and the stages can go
        together (``shared_model``), sharing the drawn weights. The draws are kept only when a unit is part of
        several stages (cascading, bottom-up)."""
        return randomized_stages(plan.cfg, plan.arch, models.trained.model, plan.stages)

    def meta(self, plan: Any, models: Models) -> dict[str, Any]:
        return {"model": model_meta(plan.arch, models.trained)}


def randomized_stages(cfg: ExperimentConfig, arch: Any, model: torch.nn.Module, stage_list: list[Stage]) -> StageRun:
    units = [u for st in stage_list for u in st.units]
    drawn: Optional[dict[int, torch.Tensor]] = {} if len(units) > len(set(units)) else None
    contexts = ((st, randomized(model, arch, st, cfg.randomization, cfg.seed, drawn)) for st in stage_list)
    return StageRun(contexts, len(stage_list), shared_model=model, drawn=drawn)


for _order in Order:
    register(ModelRandomization(_order))
