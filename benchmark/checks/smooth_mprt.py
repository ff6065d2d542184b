"""The smooth model parameter randomization test (Hedström et al. 2023, "Sanity checks revisited", sMPRT).

The bottom-up model parameter randomization test on denoised maps. Every map of every stage is the mean of the
method's maps of ``smooth_mprt.n_samples`` (N, default 50) noisy copies of the input, x + sd * z, z ~ N(0, 1),
sd = ``smooth_mprt.noise_level`` (default 0.1) * (max x - min x) per image (over its channels and pixels); the
last copy has no noise. Each stage's mean map is scored against the trained model's with every configured metric,
as in the bottom-up test: averaging removes the noise of the maps, so what stays similar is what the model's
parameters did not change (the paper's argument for the test).

Stages: stage 0 the trained model, then the cumulative bottom-up stages (the first unit re-initialized, then the
first two, ...; ``randomization.units`` chooses the units), the last one every unit: the "fully randomized" model,
the stage the verdict judges by default (``verdict.stage=last``). This is Quantus' ``SmoothMPRT`` at its default
``layer_order="bottom_up"``, which scores the cumulative model of every layer (``return_last_correlation=True``
keeps the fully randomized one, the suite's last stage). The order is bottom-up only.

Draws. Copy j < N - 1 of image i adds ``sd_i * z`` with z from ``rng.generator(seed, "smooth_mprt", i, j)``: an
image gets the same copies whatever its batch, and at every stage, so two stages' maps differ only by the model.
The methods' own draws (SmoothGrad's samples, LIME's masks, the noise control) are fresh per copy: copy j is
explained with the seed ``rng.derive_seed(seed, "smooth_mprt", "methods", j)`` and the stage key
``<stage key>_sample<j>``; the noise-free copy with the run's seed and the stage's key, so ``n_samples=1`` gives the
bottom-up test's maps bit for bit. Every copy explains the stage's targets (the target rule on the clean images).
The copies are explained one after another and summed in float64, so memory does not grow with N.

Differences from Quantus' ``SmoothMPRT`` (``quantus/metrics/randomisation/smooth_mprt.py``, Quantus 0.6):

- Noise: Quantus draws ``np.random.randn`` from NumPy's global generator at every call, so each layer (and its
  ``"original"`` entry) gets other copies; the suite's copies come from the run's seed, per image and copy, the
  same at every stage. The sd is the same: per image, ``noise_magnitude * (max - min)`` over all its values.
- Stage 0: Quantus' ``"original"`` score compares the trained model's mean maps with a second smoothing of them
  (other noise); the suite's stage 0 is the trained model's maps against themselves.
- Layers: Quantus randomizes every module with ``reset_parameters`` (a BatchNorm is a layer of its own) in
  ``named_modules`` order, each reset after ``torch.manual_seed(seed + 1)``; the suite the architecture's units in
  forward order, by the run's policy (``randomization.reinit``, ``profile``) from per-unit generators.
- Similarity: Quantus' default is Spearman's rank correlation of the absolute, normalized maps (the normalization
  is a positive scale: the ranks are the map's); the suite's ``spearman_abs`` ranks the ABS map clipped at its
  ``similarity.percentile`` (99: the top 1% tie), so ``similarity.percentile=100`` gives Quantus' ranks. The
  suite's other metrics (no-ABS Spearman, SSIM, HOG) are computed beside it.
- Channels: Quantus averages ``quantus.explain``'s maps (channels summed, e.g. ``Saliency``'s absolute gradient
  averaged after the absolute value); the suite averages the method's raw maps, and the metric's post-processing
  (absolute value, channel sum) follows. The same for one-channel maps of a signed method (``Gradient``).
- Targets: Quantus explains ``y_batch`` at every layer; the suite the ``target`` rule (default: each stage's own
  prediction; ``target=original_prediction`` or ``target=label`` fix the class as Quantus does).
- Text models are refused: a token map has no noisy copies of its input.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import partial
from numbers import Integral, Real
from typing import Any, Iterator

import torch

from benchmark import rng
from benchmark.checks.base import Check, Models, StageRun, register
from benchmark.checks.model_randomization import model_meta, randomized_stages
from benchmark.checks.report_text import ReportText
from benchmark.config import ExperimentConfig, Order, SmoothMPRTConfig
from benchmark.randomization import Stage, stages
from benchmark.sampling import noise_scale

NAME = "smooth_mprt"
# The methods a run gets when the default method list was left (docs/tests.md, "Cost"): every default method
# whose maps take one or two passes per image. integrated_gradients, smoothgrad, vargrad and ig_smoothgrad take
# 50 to 150 per image, N times over: give them with method=[...].
DEFAULT_METHODS = ("gradient", "gradient_x_input", "guided_backprop", "gradcam", "guided_gradcam", "edge", "noise")


def check_settings(c: SmoothMPRTConfig) -> None:
    """A positive whole number of copies and a finite noise level >= 0; ValueError with the key, the value, the fix."""
    n = c.n_samples
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"smooth_mprt.n_samples={n!r} must be a positive whole number of noisy copies, e.g. 50 "
                         "(Quantus' default); 1 is the bottom-up test without smoothing")
    level = c.noise_level
    if isinstance(level, bool) or not isinstance(level, Real) or not math.isfinite(level):
        raise ValueError(f"smooth_mprt.noise_level={level!r} is not a finite number; use e.g. 0.1 (noise sd = "
                         "0.1 (max x - min x), Quantus' default)")
    if level < 0:
        raise ValueError(f"smooth_mprt.noise_level={level!r} must be >= 0 (the noise sd is noise_level * "
                         "(max x - min x)); use e.g. 0.1, Quantus' default")


def noisy_copy(x: torch.Tensor, image_ids: torch.Tensor, seed: int, sample: int, noise_level: float) -> torch.Tensor:
    """Copy ``sample`` of images x (B, C, H, W): x + sd * z, sd = noise_level * (max - min) per image, z drawn per
    image from ``rng.generator(seed, "smooth_mprt", image_id, sample)``.

    >>> x = torch.zeros(2, 1, 2, 2); x[:, 0, 0, 0] = 1.0
    >>> noisy_copy(x, torch.tensor([0, 1]), 0, 0, 0.0).equal(x)
    True
    """
    z = torch.stack([torch.randn(tuple(x.shape[1:]), generator=rng.generator(seed, NAME, int(i), sample))
                     for i in image_ids.tolist()])
    sd = noise_scale(x, noise_level).view(-1, *([1] * (x.dim() - 1)))
    return x + sd * z.to(device=x.device, dtype=x.dtype)


class _Share:
    """A progress counter seen by one of ``n`` copies: each item counts 1/n (the run's total counts a stage once)."""

    def __init__(self, progress: Any, n: int) -> None:
        self.progress, self.n = progress, n

    def advance(self, items: int) -> None:
        self.progress.advance(items / self.n)


@contextmanager
def _copy_of(engine: Any, seed: int, n: int) -> Iterator[Any]:
    """The engine with the methods' seed ``seed`` and a progress share of 1/n; both restored afterwards."""
    old_seed, old_progress = engine.seed, engine.progress
    engine.seed = seed
    engine.progress = None if old_progress is None else _Share(old_progress, n)
    try:
        yield engine
    finally:
        engine.seed, engine.progress = old_seed, old_progress


def smoothed_maps(engine: Any, x: torch.Tensor, target: torch.Tensor, image_ids: torch.Tensor, stage_key: str,
                  stage: Stage, *, seed: int, n_samples: int, noise_level: float) -> dict[str, torch.Tensor]:
    """Method -> the mean over ``n_samples`` copies of ``engine.explain`` (B, C or 1, H, W) float32, the last copy
    the images themselves (a ``StageExplain``). The targets are the stage's for every copy; the sums are float64."""
    sums: dict[str, torch.Tensor] = {}
    passes = 0
    for j in range(n_samples):
        last = j == n_samples - 1
        xj = x if last else noisy_copy(x, image_ids, seed, j, noise_level)
        with _copy_of(engine, engine.seed if last else rng.derive_seed(seed, NAME, "methods", j), n_samples):
            maps = engine.explain(xj, target, image_ids, stage_key=stage_key if last else f"{stage_key}_sample{j}")
        passes += engine.passes_per_image
        for name, m in maps.items():
            if name in sums:
                sums[name] += m.double()
            else:
                sums[name] = m.double()
        del maps
    engine.passes_per_image = passes  # the stage's passes per image, all copies
    return {name: (s / n_samples).float() for name, s in sums.items()}


class SmoothMPRT(Check):
    name = NAME
    folder = "model_randomization"
    default_methods = DEFAULT_METHODS

    def configure(self, cfg: ExperimentConfig) -> None:
        """The folder, the bottom-up order, and ``DEFAULT_METHODS`` when the default method list was left."""
        from benchmark.api import DEFAULT_METHODS as LIST_DEFAULT

        cfg.test = self.folder
        cfg.randomization.order = Order.bottom_up
        if cfg.skip_unsupported_methods and tuple(cfg.method) == LIST_DEFAULT:
            cfg.method = {k: v for k, v in cfg.method.items() if k in DEFAULT_METHODS}

    def check(self, cfg: ExperimentConfig) -> None:
        check_settings(cfg.smooth_mprt)

    def stages(self, arch: Any, cfg: ExperimentConfig) -> list[Stage]:
        """The trained model, then the cumulative bottom-up stages; the last has every chosen unit re-initialized."""
        if getattr(arch, "modality", "image") != "image":
            raise ValueError(f"test={NAME} averages maps over noisy copies of an image (Quantus' SmoothMPRT) and "
                             f"model {arch.name!r} is a {arch.modality} classifier; use test=bottom_up (the same "
                             "stages without the noisy copies) for token maps")
        return stages(arch, Order.bottom_up, cfg.randomization.units)

    def stage_models(self, plan: Any, models: Models) -> StageRun:
        """The bottom-up stages on the trained model (each unit drawn once for all its stages, restored afterwards),
        each explained by ``smoothed_maps``."""
        run = randomized_stages(plan.cfg, plan.arch, models.trained.model, plan.stages)
        c = plan.cfg.smooth_mprt
        run.explain = partial(smoothed_maps, seed=plan.cfg.seed, n_samples=int(c.n_samples),
                              noise_level=float(c.noise_level))
        return run

    def meta(self, plan: Any, models: Models) -> dict[str, Any]:
        c = plan.cfg.smooth_mprt
        return {"model": model_meta(plan.arch, models.trained),
                NAME: {"n_samples": int(c.n_samples), "noise_level": float(c.noise_level), "order": "bottom_up",
                       "noise": f"sd = noise_level * (max x - min x) per image; z from rng.generator(seed, {NAME!r}, "
                                "image_id, sample); the last sample without noise",
                       "methods_seed": f"rng.derive_seed(seed, {NAME!r}, 'methods', sample); the last: seed"}}

    def report_text(self, meta: dict[str, Any]) -> ReportText:
        c = meta.get(NAME, {})
        n, level = c.get("n_samples", SmoothMPRTConfig.n_samples), c.get("noise_level", SmoothMPRTConfig.noise_level)
        return ReportText(
            description=f"smooth MPRT (Hedström et al. 2023): bottom-up randomization, each map the mean over {n} "
                        "noisy copies of the input",
            axis="layers randomized, cumulative from the bottom, maps averaged over noisy copies (left: trained model)",
            columns="columns: bottom-up randomization stages, trained model first; each map the mean over "
                    f"{n} noisy copies",
            compares=(f"This test compares, per image, the trained model's map with each bottom-up stage's map (the "
                      "first unit re-initialized, then the first two, up to every unit), as the bottom-up test does, "
                      f"but every map is first averaged over {n} noisy copies of the input (noise sd = {level} "
                      "(max x - min x) per image, the last copy without noise; the same copies at every stage). "
                      "Averaging removes the maps' own noise, so a method whose maps explain the model becomes "
                      "dissimilar as more units are randomized (pass), one whose maps stay similar to the trained "
                      "model's ignores the parameters (fail). The verdict reads the last stage, every unit "
                      "randomized: the fully randomized model of Hedström et al."),
            caption=("of each stage's mean map to the trained model's mean map: a method that explains the model falls "
                     "toward the gray band of unrelated maps; the verdict in each title reads the dotted stage."),
        )


register(SmoothMPRT())
