"""Model parameter randomization (Adebayo et al. 2018, section 4): cascading, independent or bottom-up.

Stage 0 is the trained model; each later stage re-initializes its units of the same model in place
(``randomization.randomized``) and restores them bit-identically afterwards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch

from benchmark import rng
from benchmark.checks.base import Check, Models, StageRun, register
from benchmark.checks.report_text import ReportText
from benchmark.config import ExperimentConfig, Order
from benchmark.randomization import Stage, randomized, stages
from benchmark.training import given_model, train_model

AXES = {
    Order.cascading: "layers randomized, cumulative from the top (left: trained model)",
    Order.bottom_up: "layers randomized, cumulative from the bottom (left: trained model)",
    Order.independent: "the one layer randomized, the rest trained (left: trained model)",
}


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

    def stage_models(self, plan: Any, models: Models) -> StageRun:
        """Each unit is drawn once for every stage it is part of (``randomized(..., drawn)``), and the stages can go
        together (``shared_model``), sharing the drawn weights. The draws are kept only when a unit is part of
        several stages (cascading, bottom-up)."""
        return randomized_stages(plan.cfg, plan.arch, models.trained.model, plan.stages,
                                 null=plan.cfg.randomization.fair_null)

    def meta(self, plan: Any, models: Models) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model_meta(plan.arch, models.trained)}
        if plan.cfg.randomization.fair_null:
            out["null"] = {"seed": null_seed(plan.cfg.seed), "derived_from": [plan.cfg.seed, "null"],
                           "compares": "per stage, the maps of two independent draws of the stage's units"}
        return out

    def report_text(self, meta: dict[str, Any]) -> ReportText:
        """The paper's model tests: the Inception v3 cascade's finding sits beside the cascading order's verdicts."""
        name = self.name
        return ReportText(description=f"{name} model parameter randomization", axis=AXES[self.order],
                          columns=f"columns: {name} randomization stages, trained model first", compares="",
                          paper="cascading" if self.order == Order.cascading else None)


def null_seed(seed: int) -> int:
    """The seed of the null's second draw: every unit's generator is (null_seed(seed), "reinit", unit)."""
    return rng.derive_seed(seed, "null")


def randomized_stages(cfg: ExperimentConfig, arch: Any, model: torch.nn.Module, stage_list: list[Stage],
                      null: bool = False) -> StageRun:
    """The stages as contexts on ``model``; ``null``: each randomized stage followed by its null twin (the same
    units drawn from ``null_seed``), whose maps the scorer compares with the stage's own."""
    units = [u for st in stage_list for u in st.units]
    shared = len(units) > len(set(units))
    drawn: Optional[dict[int, torch.Tensor]] = {} if shared else None
    drawn_null: Optional[dict[int, torch.Tensor]] = {} if shared else None

    def contexts():
        for st in stage_list:
            yield st, randomized(model, arch, st, cfg.randomization, cfg.seed, drawn)
            if null and st.index > 0:
                twin = dataclasses.replace(st, null=True)
                yield twin, randomized(model, arch, twin, cfg.randomization, null_seed(cfg.seed), drawn_null)

    n = len(stage_list) + (len(stage_list) - 1 if null else 0)
    return StageRun(contexts(), n, shared_model=model, drawn=drawn, null=null, drawn_null=drawn_null)


for _order in Order:
    register(ModelRandomization(_order))
