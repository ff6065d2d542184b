"""The input invariance test (Kindermans et al. 2019, "The (un)reliability of saliency methods").

Two models that compute the same function up to a constant shift m of their input: f1, the trained model, and
f2, f1 with its first layer's bias moved by the shift (``benchmark.input_shift``), so ``f2(x + m) = f1(x)``.
Stage 0 explains f1 on the images x, stage 1 explains f2 on x + m. The two (model, input) pairs are the same
function at the same point, so a method that explains the function gives the same maps: input invariance. The
verdict sense is the reverse of the randomization tests: here pass means the maps stayed the same.

Before any map, the check finds the first layer (the first ``nn.Linear`` / ``nn.Conv2d`` the input reaches, and
only models whose input reaches it unchanged), builds f2 and checks ``f2(x + m) = f1(x)`` on the run's images,
to ``EQUIVALENCE_RTOL`` of the logits' largest magnitude; the largest difference is in meta.json.

Both stages explain the same classes (stage 0's) with the same random draws (stage 0's key: the noise
control's maps, SmoothGrad's samples): the stages differ by the shift alone. ``integrated_gradients_shifted``
integrates from ``baseline + m`` at stage 1 (``ShiftedIntegratedGradients.with_shift``); every other method is
given the same settings in both stages (``integrated_gradients`` keeps its zero baseline: Kindermans et al.'s
failing case).

The score is ``mean_abs_difference``: per image, the mean difference of the two min-max scaled maps over the
pixels (0 for identical maps, 1 at most; ``max_abs_difference``, the largest, on request); the similarity metrics
are computed beside it (``benchmark.checks.invariance_scores``). The verdict (``judge``): invariant (pass) when the
mean's bootstrap interval lies within
``input_invariance.tolerance`` of identical (a difference at most the tolerance, a similarity at least
1 - tolerance), fail when it lies beyond, else inconclusive. Per method, the largest difference of the raw maps
relative to the map's largest magnitude is in meta.json (``map_difference``). A mean, not the largest pixel: a
max-pooling window whose two equal values f1 and f2 round apart sends one pixel's gradient elsewhere, an
undefined gradient decided by float rounding, not by the shift.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Optional

import pandas as pd
import torch

from benchmark import rng
from benchmark.checks.base import Check, Models, StageRun, register
from benchmark.checks.invariance_scores import METRIC, judge, max_abs_difference, mean_abs_difference  # noqa: F401
from benchmark.checks.invariance_settings import MAX_SHIFT, check_settings, shift_of  # noqa: F401
from benchmark.checks.report_text import ReportText
from benchmark.config import ExperimentConfig, InputInvarianceConfig, SimilarityConfig
from benchmark.input_shift import FirstLayer, ShiftedInput, absorbed, equivalence, first_layer
from benchmark.randomization import Stage
from benchmark.schedule import engine_for

log = logging.getLogger(__name__)

NAME = "input_invariance"
# The methods a run gets when the default method list was left: Kindermans et al.'s invariant gradient family
# (gradient, SmoothGrad, guided backprop; GradCAM reads a later layer), their failing cases (gradient x input,
# IG from a zero baseline), IG whose baseline follows the shift, and the edge control.
DEFAULT_METHODS = ("gradient", "smoothgrad", "gradient_x_input", "integrated_gradients",
                   "integrated_gradients_shifted", "guided_backprop", "gradcam", "edge")
DEFAULT_METRICS = (METRIC, "spearman_abs", "spearman")
# f2(x + m) must reproduce f1(x) to this share of the logits' largest magnitude (float32 rounding is ~1e-6).
EQUIVALENCE_RTOL = 1e-4
def _shift_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1)


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> dict[str, Optional[float]]:
    """Per image, max |b - a| over max |a| (raw maps, every channel); the largest and the mean over images."""
    a, b = a.double().flatten(1), b.double().flatten(1)
    scale = a.abs().max(1).values
    rel = ((b - a).abs().max(1).values / scale)[scale > 0]
    rel = rel[torch.isfinite(rel)]
    if not len(rel):
        return {"max": None, "mean": None}
    return {"max": float(rel.max()), "mean": float(rel.mean())}


class _Run:
    """One run's stages: the shift, the first layer, stage 0's classes and maps, what meta.json records."""

    def __init__(self, cfg: ExperimentConfig, arch: Any, methods: list, model: torch.nn.Module, data: Any) -> None:
        self.cfg, self.arch, self.methods, self.model = cfg, arch, methods, model
        self.shift, self.source = shift_of(cfg.input_invariance, data)
        example = data.eval_images[:2].to(next(model.parameters()).device)
        self.image_shape = tuple(example.shape[1:])
        if int(example.shape[1]) != len(self.shift):
            raise ValueError(f"input_invariance.shift={cfg.input_invariance.shift!r} has {len(self.shift)} values and "
                             f"the images have {int(example.shape[1])} channels; give one number, or one per channel")
        self.first: FirstLayer = first_layer(model, example, f"model {arch.name!r}")
        self._check_first_layer(example)
        self.targets: Optional[torch.Tensor] = None
        self.key: Optional[str] = None
        self.maps: dict[str, torch.Tensor] = {}
        self.found: dict[str, Any] = {}
        self.f2: Optional[torch.nn.Module] = None  # f2 while the shifted stage's context is open

    def _check_first_layer(self, example: torch.Tensor) -> None:
        """The first layer's response to the constant shift image is finite (else its bias cannot absorb it)."""
        layer = self.first.module
        m = _shift_image(self.shift).to(example.device).expand_as(example[0]).reshape(self.first.in_shape)[None]
        with torch.no_grad():
            response = (torch.nn.functional.linear(m, layer.weight) if isinstance(layer, torch.nn.Linear)
                        else layer._conv_forward(m, layer.weight, None))
        if not bool(torch.isfinite(response).all()):
            raise ValueError(f"input_invariance.shift={self.cfg.input_invariance.shift!r} makes the first layer "
                             f"{self.first.path!r} non-finite: its response to the constant shift image overflows "
                             f"{response.dtype}; use a shift of the data's scale, e.g. input_invariance.shift=mean")
        if not self.first.has_bias:
            log.warning("%s: the first layer %r has no bias; f2 gets one (b - W m with b = 0), so f2 is f1 with a bias "
                        "added", NAME, self.first.path)

    def pinned(self, target: torch.Tensor, logits: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
        """Stage 1 explains stage 0's classes (``Stage.target``)."""
        return self.targets

    def contexts(self, stages: list[Stage]) -> list[tuple[Stage, AbstractContextManager[torch.nn.Module]]]:
        """f1 itself, then ``x -> f2(x + m)`` (``shifted``), stage 1 pinned to stage 0's classes."""
        return [(stages[0], nullcontext(self.model)),
                (dataclasses.replace(stages[1], target=self.pinned), self.shifted())]

    @contextmanager
    def shifted(self):
        """f2 for the block, yielded as ``x -> f2(x + m)``; f1's first layer is back afterwards."""
        image = _shift_image(self.shift)
        device = next(self.model.parameters()).device
        with absorbed(self.model, self.first, image.to(device).expand(self.image_shape)) as f2:
            self.f2 = f2
            try:
                yield ShiftedInput(f2, image)
            finally:
                self.f2 = None

    def explain(self, engine: Any, x: torch.Tensor, target: torch.Tensor, image_ids: torch.Tensor, stage_key: str,
                stage: Stage) -> dict[str, torch.Tensor]:
        """A ``StageExplain``: stage 0 checks f2(x + m) = f1(x), then explains f1 on x; stage 1 explains f2 (its
        own engine, ``integrated_gradients_shifted`` from the moved baseline) on x + m, with stage 0's key."""
        if stage.index == 0:
            self._check_equivalence(x)
            self.targets, self.key = target.clone(), stage_key
            self.maps = engine.explain(x, target, image_ids, stage_key=stage_key)
            return self.maps
        methods = [m.with_shift(tuple(self.shift.tolist())) if hasattr(m, "with_shift") else m for m in self.methods]
        own = engine_for(self.cfg, self.arch, methods, self.f2)
        own.progress = engine.progress
        maps = own.explain(x + _shift_image(self.shift), target, image_ids, stage_key=self.key)
        engine.passes_per_image = own.passes_per_image
        self.found["map_difference"] = {n: _relative_difference(self.maps[n], maps[n]) for n in maps}
        self.found["baselines"] = {m.name: m.baseline for m in methods if hasattr(m, "with_shift")}
        self.maps = {}
        return maps

    def _check_equivalence(self, x: torch.Tensor) -> None:
        eq = equivalence(self.model, self.first, _shift_image(self.shift).expand_as(x[0]), x)
        self.found["equivalence"] = {"max_abs_logit_difference": eq.max_abs_difference, "logit_scale": eq.logit_scale,
                                     "relative": eq.relative, "allowed_relative": EQUIVALENCE_RTOL}
        if not eq.finite or eq.relative > EQUIVALENCE_RTOL:
            raise ValueError(
                f"input_invariance.shift={self.cfg.input_invariance.shift!r}: f2 (model {self.arch.name!r} with the "
                f"shift moved into the bias of {self.first.path!r}) does not reproduce the trained model: max "
                f"|f2(x + m) - f1(x)| = {eq.max_abs_difference:.3g}, {eq.relative:.3g} of the logits' scale "
                f"{eq.logit_scale:.3g} (allowed {EQUIVALENCE_RTOL:g}"
                f"{'' if eq.finite else '; the shifted model is not finite'}). Either the input reaches more than the "
                "first layer (a skip connection from the input, a second use of it) or the shift is too large for "
                "float32; use a smaller shift, e.g. input_invariance.shift=mean, or a model whose input meets only its "
                "first layer")

    def meta(self) -> dict[str, Any]:
        c = self.cfg.input_invariance
        layer = self.first.module
        return {NAME: {
            "shift": [float(v) for v in self.shift], "shift_setting": c.shift, "shift_source": self.source,
            "tolerance": float(c.tolerance),
            "first_layer": {"path": self.first.path, "type": type(layer).__name__, "bias": self.first.has_bias,
                            "bias_added": not self.first.has_bias, "called_before": list(self.first.before),
                            "f2": ("bias b - W m" if isinstance(layer, torch.nn.Linear) else
                                   "per-position bias b - conv(m) with the layer's padding, computed as "
                                   "conv(x') - conv(m) + b")},
            "stage_key": f"{self.key} in both stages (the same random draws)",
            "targets": "stage 0's classes in both stages",
            **self.found}}


class InputInvariance(Check):
    name = NAME
    folder = "model_randomization"
    default_methods = DEFAULT_METHODS
    # The controls ignore the model and see a constant shift as nothing (Sobel kernels sum to zero; the noise
    # control draws the same maps with the same key): invariant by construction, so they pass.
    expected_controls = {"edge": "pass", "noise": "pass", "idf": "pass"}

    def configure(self, cfg: ExperimentConfig) -> None:
        """The folder; ``DEFAULT_METHODS`` when the default method list was left, ``DEFAULT_METRICS`` when the
        default metrics were."""
        from benchmark.api import DEFAULT_METHODS as LIST_DEFAULT

        cfg.test = self.folder
        if cfg.skip_unsupported_methods and tuple(cfg.method) == LIST_DEFAULT:
            cfg.method = {k: cfg.method.get(k, {}) for k in DEFAULT_METHODS}
        if list(cfg.similarity.metrics) == SimilarityConfig().metrics:
            cfg.similarity.metrics = list(DEFAULT_METRICS)

    def check(self, cfg: ExperimentConfig) -> None:
        check_settings(cfg.input_invariance)

    def stages(self, arch: Any, cfg: ExperimentConfig) -> list[Stage]:
        """f1 on x, then f2 on x + m. Refused before any data: text models, a shift of the wrong number of channels,
        a built-in or configured model whose input does not reach its first layer unchanged."""
        if getattr(arch, "modality", "image") != "image":
            raise ValueError(f"test={NAME} shifts the input by a constant and model {arch.name!r} is a "
                             f"{arch.modality} classifier: a shift of its word embeddings is not an input a user "
                             "controls (Kindermans et al. shift pixel values); use an image model, or test=cascading "
                             "for token maps")
        if arch.source != "given":
            from benchmark.resolve import example_shape
            from benchmark.validation import channels_classes

            channels, classes = channels_classes(cfg)
            check_settings(cfg.input_invariance, channels)
            with torch.random.fork_rng(devices=[]):  # building draws from the global generator: left as it was
                model = arch.build(channels, classes)
            shape = example_shape(cfg)
            probe = torch.rand((2, *shape), generator=rng.generator(cfg.seed, NAME, "probe"))
            first_layer(model, probe, f"model {arch.name!r}")
        return [Stage(0, "original", ()), Stage(1, "shifted", ())]

    def stage_models(self, plan: Any, models: Models) -> StageRun:
        """f1 as trained, then f2 (the first layer absorbing the shift, restored afterwards) yielded as
        ``x -> f2(x + m)`` for observation; both explained by ``_Run.explain``, one at a time."""
        if models.data is None:
            raise ValueError(f"test={NAME} reads the run's data (the shift's mean): give Models(..., data=dataset)")
        run = _Run(plan.cfg, plan.arch, plan.methods, models.trained.model, models.data)
        return StageRun(run.contexts(plan.stages), len(plan.stages), explain=run.explain, meta=run.meta)

    def report_text(self, meta: dict[str, Any]) -> ReportText:
        c = meta.get(NAME, {})
        tol = c.get("tolerance", InputInvarianceConfig.tolerance)
        shift = c.get("shift")
        shift_text = (f"m = {', '.join(f'{v:.4g}' for v in shift)} per channel ({c.get('shift_source', '')})"
                      if shift else "m")
        layer = c.get("first_layer", {})
        added = (f" The first layer {layer.get('path')!r} has no bias: f2 gets one (b = 0), so f2 is f1 with a "
                 "bias added." if layer.get("bias_added") else "")
        eq = c.get("equivalence", {})
        eq_text = (f" On this run's images max |f2(x + m) - f1(x)| = {eq['max_abs_logit_difference']:.2g} "
                   f"({eq['relative']:.2g} of the logits' largest magnitude)." if eq else "")
        largest = {k: d["max"] for k, d in c.get("map_difference", {}).items() if d.get("max") is not None}
        raw_text = (" The largest difference of the raw maps, per image over the map's largest magnitude: "
                    + ", ".join(f"{k} {v:.2g}" for k, v in largest.items()) + "." if largest else "")
        return ReportText(
            description="input invariance (Kindermans et al. 2019): the trained model on x against the same "
                        "function with the input shifted, f2 on x + m",
            axis="input (left: f1 on x; right: f2 on x + m)",
            columns="columns: f1 on the images, then f2 (its first layer absorbing the shift) on the shifted images",
            compares=(f"This test compares, per image, the trained model f1's map of x with the map of f2 on x + m, "
                      f"{shift_text}, where f2 is f1 with the shift moved into its first layer's bias (b - W m; for "
                      "a convolution a bias per output position, exact at the borders), so f2(x + m) = f1(x): the "
                      f"same function at the same point.{eq_text}{added} Both stages explain the same classes with "
                      "the same random draws. A method that explains the function gives the same maps: here pass "
                      "means invariant, the maps stayed the same, the reverse of the randomization tests. "
                      "integrated_gradients_shifted integrates from baseline + m in the shifted stage; "
                      "integrated_gradients keeps its baseline (zero), and gradient x input multiplies by the "
                      f"shifted input: Kindermans et al.'s failing cases.{raw_text}"),
            caption=("between f1's map of x and f2's map of x + m: 0 difference (1 similarity) is invariant; the "
                     "verdict in each title reads the shifted stage."),
            verdict_rule=(f"Verdict rule: per method and metric, the mean over images and its bootstrap interval at "
                          f"the shifted stage. Pass (invariant) when the interval lies within the tolerance "
                          f"{tol:g} of identical maps: mean_abs_difference (the mean difference of the two min-max "
                          f"scaled maps, a share of the map's range) at most {tol:g}, a similarity at least "
                          f"{1 - tol:g}; fail when it lies beyond; inconclusive otherwise. "
                          "`input_invariance.tolerance=...` sets it. Passing is necessary, not sufficient: the edge "
                          "control passes, as does any map that ignores the model."),
        )

    def judge(self, verdicts: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
        """The report's verdicts under this test's rule (``judge``)."""
        return judge(verdicts, float(meta.get(NAME, {}).get("tolerance", InputInvarianceConfig.tolerance)))


register(InputInvariance())
