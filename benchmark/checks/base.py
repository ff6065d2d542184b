"""What a test is: one object that names its stages, provides the (stage, model) contexts and its meta.

One generic run loop (``benchmark.core``) drives every test: observe a stage's model, schedule the
stages (``benchmark.schedule``), score, write. A new test is one file with a subclass of ``Check``,
registered with ``@register``, plus its config.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Optional

import torch
from torch import nn

from benchmark.checks.report_text import ReportText
from benchmark.config import ExperimentConfig
from benchmark.randomization import Stage
from benchmark.training import TrainedModel


@dataclass
class Models:
    """The models a test's stages are drawn from: the trained one and, for data randomization, the random-label one."""

    trained: TrainedModel
    random_labels: Optional[TrainedModel] = None
    # The run's data (``benchmark.data.Dataset``; ``core.compute`` sets it): what a test's stages may read, e.g. the
    # input invariance test's shift, the training split's mean.
    data: Any = None


# (engine, images, targets, image ids, stage key, stage) -> method -> maps: how a test computes a stage's maps when
# they are not the engine's maps of the run's images (noisy copies averaged, a shifted input).
StageExplain = Callable[[Any, torch.Tensor, torch.Tensor, torch.Tensor, str, Stage], dict[str, torch.Tensor]]


@dataclass
class StageRun:
    """The stages as (stage, context manager -> model) pairs, and what lets the scheduler explain them together.

    ``explain``: the test's own way of computing a stage's maps (``StageExplain``); None: ``Engine.explain`` of
    the run's images. A test with its own ``explain`` has its stages explained one at a time.
    ``null``: every randomized stage is followed by its null twin (``Stage.null``: the same units drawn again, into
    ``drawn_null`` when units recur), scored against the stage it follows (``null.parquet``).
    """

    contexts: Iterable[tuple[Stage, AbstractContextManager[nn.Module]]]
    n_stages: int
    shared_model: Optional[nn.Module] = None
    drawn: Optional[dict[int, torch.Tensor]] = None
    extra: dict[str, Any] = field(default_factory=dict)
    explain: Optional[StageExplain] = None
    # Each randomized stage is followed by its null twin (``Stage.null``), drawn into ``drawn_null``.
    null: bool = False
    drawn_null: Optional[dict[int, torch.Tensor]] = None
    # What the test adds to meta.json from its stages once they ran (the input invariance test: the shifted model's
    # largest logit difference, each method's largest map difference); None: nothing.
    meta: Optional[Callable[[], dict[str, Any]]] = None


class Check:
    """Base of every test. ``name`` is the registry key and the scores' ``test`` column; ``folder`` the results
    subfolder (``cfg.test``) and the Hydra config a runner composes."""

    name: ClassVar[str]
    folder: ClassVar[str]
    # Control -> the verdict it must get in this test, which the reports print beside it; None: the model tests'
    # (``benchmark.report.analysis.CONTROL_EXPECTED``: edge fail, noise pass).
    expected_controls: ClassVar[Optional[dict[str, str]]] = None
    # The methods a run gets when none are named (the command line's default list, or ``sanity_check`` without
    # ``methods=``); None: the suite's default list.
    default_methods: ClassVar[Optional[tuple[str, ...]]] = None

    def configure(self, cfg: ExperimentConfig) -> None:
        """Write the test's choice into ``cfg`` (the folder, a randomization order)."""
        cfg.test = self.folder

    def check(self, cfg: ExperimentConfig) -> None:
        """Raise ValueError (key, value, fix) for settings this test cannot use; before any compute."""

    def stages(self, arch: Any, cfg: ExperimentConfig) -> list[Stage]:
        raise NotImplementedError

    def obtain(self, plan: Any, s: Any) -> Models:
        """The models, trained or loaded as the config says (the command line's path): by default the one trained
        model every model test starts from."""
        from benchmark.checks.model_randomization import obtain_model

        return Models(obtain_model(plan, s))

    def stage_models(self, plan: Any, models: Models) -> StageRun:
        raise NotImplementedError

    def meta(self, plan: Any, models: Models) -> dict[str, Any]:
        """What the test adds to meta.json: the trained model's accuracy, provenance and units by default."""
        from benchmark.checks.model_randomization import model_meta

        return {"model": model_meta(plan.arch, models.trained)}

    def report_text(self, meta: dict[str, Any]) -> ReportText:
        """What the per-run report says about the test (``benchmark.checks.report_text``): by default its name,
        its stages in order and curves of each stage's similarity to the reference."""
        return plain_report_text(self.name)


def plain_report_text(name: str) -> ReportText:
    """The report text of a test that says nothing of itself, or that this process has not registered (a report
    over the results of a plugin's test read without the plugin)."""
    return ReportText(description=name, axis="stage (left: the reference)",
                      columns="columns: the test's stages, the reference first", compares="")


def report_text_of(test: str, meta: dict[str, Any]) -> ReportText:
    """The report text of the test named ``test`` in a run's ``meta``."""
    check = TESTS.get(test)
    return check.report_text(meta) if check is not None else plain_report_text(test)


TESTS: dict[str, Check] = {}


def register(check: Check) -> Check:
    """Add a test to the registry under its name (a second test of the same name is an error)."""
    from benchmark.registry import add

    return add(TESTS, check.name, check, "test")


def unknown_test(name: Any) -> ValueError:
    """The error for a ``test`` that names neither a registered test nor a results folder."""
    return ValueError(f"test={name!r} is not a registered test; use one of {sorted(TESTS)} (or a results folder: "
                      "model_randomization, data_randomization), or load the module that registers it with "
                      "plugins=[module]")


def get_test(name: str) -> Check:
    try:
        return TESTS[name]
    except KeyError:
        raise unknown_test(name) from None
