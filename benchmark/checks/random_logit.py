"""The random logit test (Sixt et al. 2020, "When explanations lie"): the predicted class against another class.

Per image, the trained model's map for the class the run explains (the ``target`` rule: by default its
predicted class) against the same model's map for a class drawn uniformly from the other classes. Stage 0 is
the explained class, stage 1 the drawn one (``Stage.target``); the model does not change. A method whose maps
depend on the class explained gives dissimilar maps, so the paper's verdict rules apply unchanged: pass when
the maps are as unrelated as unrelated maps, fail when they stay more similar.

The other class is drawn per image from its own generator, ``rng.generator(seed, "random_logit", image_id)``:
an image gets the same class whatever batch or run it is in, and two images with the same label need not get
the same class. (Quantus' ``RandomLogit`` reseeds NumPy's global generator with one seed per batch, so the
i-th image of every batch draws the same offset.) The draw maps an offset k in [0, classes - 1) to the k-th
class other than the explained one, as Quantus does.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import Any

import torch

from benchmark import rng
from benchmark.checks.base import Check, Models, StageRun, register
from benchmark.checks.model_randomization import model_meta
from benchmark.checks.report_text import ReportText
from benchmark.config import ExperimentConfig
from benchmark.randomization import Stage

NAME = "random_logit"
MIN_CLASSES = 3


def other_classes(seed: int, target: torch.Tensor, logits: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
    """Per image, a class drawn uniformly from the classes other than ``target`` (its own generator per image)."""
    n = int(logits.shape[1])
    if n < MIN_CLASSES:  # a model whose output was not known before the run (checked again here)
        raise ValueError(too_few_classes(n, "the model's output"))
    out = []
    for t, i in zip(target.tolist(), image_ids.tolist()):
        if not 0 <= int(t) < n:
            raise ValueError(f"test={NAME} explains class {t} of image {i}, which a {n}-class model does not have; "
                             "use target=predicted (the default)")
        k = int(torch.randint(n - 1, (1,), generator=rng.generator(seed, NAME, int(i))))
        out.append(k if k < t else k + 1)
    return torch.tensor(out, dtype=torch.int64)


def too_few_classes(n: int, where: str) -> str:
    return (f"test={NAME} needs a model with at least {MIN_CLASSES} classes; {where} has {n} (num_classes={n}): "
            "the test explains a class drawn from the classes other than the explained one, and a two-class model "
            "leaves only one (its logit is often the other's negative, so the maps mirror each other). Use a "
            "model with 3 or more classes, or another test, e.g. test=cascading")


def num_classes(arch: Any, cfg: ExperimentConfig) -> int:
    """The model's classes, known before any data is loaded: the derived output (a given or custom model) or the
    run's data (the built-in models are built with the data's classes)."""
    derived = getattr(arch, "derived", {}) or {}
    if "num_classes" in derived:
        return int(derived["num_classes"])
    from benchmark.validation import channels_classes

    return channels_classes(cfg)[1]


class RandomLogit(Check):
    name = NAME
    folder = "model_randomization"

    def stages(self, arch: Any, cfg: ExperimentConfig) -> list[Stage]:
        n = num_classes(arch, cfg)
        if n < MIN_CLASSES:
            raise ValueError(too_few_classes(n, f"model {arch.name!r}"))
        return [Stage(0, "original", ()), Stage(1, "random_class", (), target=partial(other_classes, cfg.seed))]

    def stage_models(self, plan: Any, models: Models) -> StageRun:
        """The trained model twice, one stage at a time (no shared model: nothing is re-initialized)."""
        model = models.trained.model
        return StageRun([(st, nullcontext(model)) for st in plan.stages], len(plan.stages))

    def meta(self, plan: Any, models: Models) -> dict[str, Any]:
        return {"model": model_meta(plan.arch, models.trained),
                "random_logit": {"draw": f"rng.generator(seed, {NAME!r}, image_id), uniform over the other classes",
                                 "classes": num_classes(plan.arch, plan.cfg)}}

    def report_text(self, meta: dict[str, Any]) -> ReportText:
        rule = meta.get("resolved", {}).get("target", "predicted")
        return ReportText(
            description="random logit (Sixt et al. 2020): the explained class against a random other class",
            axis="class explained by the trained model (left: the target rule's class; right: a random other class)",
            columns="columns: the map of the explained class, then of a random other class (same trained model)",
            compares=(f"This test compares, per image, the trained model's map for the class the target rule "
                      f"chooses (`target={rule}`) with the same model's map for a class drawn uniformly from the "
                      "other classes (per image, from the run's seed; the class explained is in the scores' `target` "
                      "column). The model does not change, only the class explained: a method whose maps depend on "
                      "the class gives dissimilar maps (pass), one whose maps stay similar ignores it (fail)."),
            caption=("of the random class's map to the explained class's map: a method that explains the class "
                     "falls toward the gray band of unrelated maps; the verdict in each title reads the dotted stage."),
        )


register(RandomLogit())
