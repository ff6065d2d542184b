"""The skeleton every sanity check shares: validate, compute maps per stage, score, write.

A test supplies its stages as (Stage, context manager yielding the stage's model). Stage 0 is
the reference (the trained model, or the true-label model); every later stage's maps are
scored against it with every metric and dropped, so memory stays flat as stages grow. Only the
first images' maps are kept for figures and re-checks.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import pandas as pd
import torch
import yaml
from scipy.stats import spearmanr
from torch import nn
from tqdm.auto import tqdm

from benchmark import store
from benchmark.calibration import calibration_scores, noise_maps
from benchmark.config import ConvInputGrad, ExperimentConfig, Target, resolve_profile
from benchmark.data import Dataset, check_data_name, check_holdout_fraction, load_dataset
from benchmark.methods import CONTROLS, METHODS, Engine, Method, build_methods
from benchmark.methods.engine import StagePlan
from benchmark.models import Architecture, get_architecture
from benchmark.postprocess import PROCESSORS
from benchmark.randomization import Stage, stage_cut, stage_state
from benchmark.runtime import configure_determinism, keep_freed_memory, select_device, set_threads, versions
from benchmark.similarity import METRICS, check_metrics, hog_pixels_per_cell
from benchmark.report.stats import check_verdict
from benchmark.training import check_weights_file, evaluate

log = logging.getLogger(__name__)

RUN_FILES = ["scores.parquet", "calibration.parquet", "maps.npz", "config.yaml", "meta.json", "summary.csv",
             "report.md", "report.html"]


@dataclass
class Plan:
    """A validated run: what will be computed, known before any data is loaded or model trained."""

    cfg: ExperimentConfig
    arch: Architecture
    methods: list[Method]
    stages: list[Stage]
    test: str  # the scores' `test` column: cascading | independent | bottom_up | data_randomization
    run_id: str
    run_dir: Path


def resolve_methods(cfg: ExperimentConfig, arch: Architecture, skip_unsupported: bool = False) -> list[Method]:
    """Build the selected methods and write their complete settings back into ``cfg.method``.

    ``method_settings`` (set by experiment configs) applies to selected methods only and takes
    precedence over ``method.<name>.<key>``. It is cleared afterwards, so the run id and
    config.yaml see exactly the settings that ran. Methods that need a convolutional layer are
    an error on a model without one, or dropped with a logged reason if ``skip_unsupported``.
    """
    for name in cfg.method_settings:
        if name not in METHODS:
            raise ValueError(f"method_settings has {name!r}, not a known method; use some of {sorted(METHODS)}")
    spec = {name: {**(settings or {}), **(cfg.method_settings.get(name) or {})}
            for name, settings in cfg.method.items()}
    methods = build_methods(spec)
    if arch.gradcam_layer is None:
        unsupported = [m.name for m in methods if m.needs_target_layer]
        if unsupported and (not skip_unsupported or len(unsupported) == len(methods)):
            raise ValueError(
                f"method {unsupported[0]!r} needs a convolutional layer and model {arch.name!r} has none; "
                f"remove {', '.join(unsupported)} from method or choose a convolutional model"
            )
        if unsupported:
            log.info("model %r has no convolutional layer: skipping %s", arch.name, ", ".join(unsupported))
            methods = [m for m in methods if not m.needs_target_layer]
    cfg.method = {m.name: store.to_plain(m) for m in methods}
    cfg.method_settings = {}
    return methods


def validate(cfg: ExperimentConfig) -> tuple[Architecture, list[Method]]:
    """Every check that needs neither data nor training; fails with the key, the value and the fix."""
    resolve_profile(cfg)
    arch = get_architecture(cfg.model.name)
    check_data_name(cfg.data.name)
    methods = resolve_methods(cfg, arch, cfg.skip_unsupported_methods)
    check_metrics(list(cfg.similarity.metrics))
    check_verdict(cfg.verdict)
    for key in ("n_images", "n_saved_images", "n_figure_images"):
        value = getattr(cfg, key)
        if not isinstance(value, int) or value < (1 if key == "n_images" else 0):
            raise ValueError(f"{key}={value!r} must be a {'positive' if key == 'n_images' else 'non-negative'} "
                             "whole number, e.g. 32")
    if cfg.memory_budget_mb < 1:
        raise ValueError(f"memory_budget_mb={cfg.memory_budget_mb} must be at least 1, e.g. 1024")
    t = cfg.training
    for key in ("epochs", "batch_size", "max_epochs", "num_threads"):
        if not isinstance(getattr(t, key), int) or getattr(t, key) < 1:
            raise ValueError(f"training.{key}={getattr(t, key)!r} must be a positive whole number")
    if t.lr <= 0 or (t.random_lr is not None and t.random_lr <= 0):
        raise ValueError(f"training.lr={t.lr} and training.random_lr={t.random_lr} must be positive, e.g. 1e-3")
    if t.random_batch_size is not None and t.random_batch_size < 1:
        raise ValueError(f"training.random_batch_size={t.random_batch_size} must be a positive whole number")
    if not 0.0 < t.memorization_gate <= 1.0:
        raise ValueError(f"training.memorization_gate={t.memorization_gate} must lie in (0, 1], e.g. 0.95")
    if cfg.randomization.std <= 0:
        raise ValueError(f"randomization.std={cfg.randomization.std} must be positive, e.g. 0.01")
    _check_similarity(cfg, arch)
    if cfg.num_threads is not None and cfg.num_threads < 1:
        raise ValueError(f"num_threads={cfg.num_threads} must be at least 1 (or null for torch's default)")
    check_holdout_fraction(cfg.data.holdout_fraction)
    _check_model_data(cfg, arch)
    return arch, methods


def _check_model_data(cfg: ExperimentConfig, arch: Architecture) -> None:
    from benchmark.data import PHOTO_LOADERS
    from benchmark.models.imagenet import SCALINGS, check_weights

    photos = cfg.data.name in PHOTO_LOADERS
    if arch.source == "torchvision":
        if not photos:
            raise ValueError(f"model {arch.name!r} is an ImageNet model and data.name={cfg.data.name!r} is not "
                             f"photographs; use data=image_folder (data.root=<folder>) or data=skimage_photos")
        if cfg.model.input_scaling is not None and cfg.model.input_scaling not in SCALINGS:
            raise ValueError(f"model.input_scaling={cfg.model.input_scaling!r} must be one of {list(SCALINGS)}")
        if cfg.model.input_scaling == "minus_one_one" and arch.name != "inception_v3":
            raise ValueError(f"model.input_scaling=minus_one_one is Inception v3's input; model {arch.name!r} "
                             "expects imagenet scaling (leave model.input_scaling null)")
        check_weights(arch.name, cfg.model.weights)
        for key in ("resize", "crop"):
            value = getattr(cfg.data, key)
            if value is not None and (not isinstance(value, int) or value < 75):
                raise ValueError(f"data.{key}={value!r} must be a whole number of pixels of at least 75 (the "
                                 "smallest input the ImageNet models take), or null for the model's own")
        if cfg.data.crop is not None and cfg.data.resize is not None and cfg.data.resize < cfg.data.crop:
            raise ValueError(f"data.resize={cfg.data.resize} is smaller than data.crop={cfg.data.crop}; "
                             "the center crop must fit the resized image")
        return
    if photos:
        raise ValueError(f"data.name={cfg.data.name!r} holds photographs for ImageNet models; choose "
                         "model=inception_v3, vgg16 or resnet50, or data=digits / mnist for this model")
    if cfg.model.input_scaling is not None:
        raise ValueError(f"model.input_scaling={cfg.model.input_scaling!r} applies to ImageNet models only; "
                         f"leave it null for model {arch.name!r}")
    if cfg.model.weights is not None:
        check_weights_file(cfg.model.weights)


def _check_similarity(cfg: ExperimentConfig, arch: Architecture) -> None:
    s = cfg.similarity
    if not 50.0 <= s.percentile <= 100.0:
        raise ValueError(f"similarity.percentile={s.percentile} must lie in [50, 100]; the paper uses 99")
    if s.hog_cells_per_block < 1:
        raise ValueError(f"similarity.hog_cells_per_block={s.hog_cells_per_block} must be at least 1, e.g. 2")
    if "hog" in s.metrics:
        side = min(arch.input_size) if cfg.data.crop is None else cfg.data.crop
        ppc = hog_pixels_per_cell(arch.input_size, s.hog_pixels_per_cell)
        if ppc < 1 or ppc * s.hog_cells_per_block > side:
            raise ValueError(
                f"similarity.hog_pixels_per_cell={s.hog_pixels_per_cell} with hog_cells_per_block="
                f"{s.hog_cells_per_block} does not fit {side}-pixel maps; choose cells of at least 1 pixel with "
                f"pixels_per_cell x cells_per_block <= {side}, or null for the default")


def select_images(data: Dataset, n_images: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n_images`` of the held-out split (already a fixed shuffle): images, labels, ids."""
    available = len(data.eval_images)
    if n_images > available:
        raise ValueError(
            f"n_images={n_images} but the held-out split of {data.name!r} has {available} images; "
            f"set n_images to at most {available}"
        )
    return data.eval_images[:n_images], data.eval_labels[:n_images], torch.arange(n_images)


def process(maps: dict[str, torch.Tensor], percentile: float) -> dict[str, dict[str, np.ndarray]]:
    """method -> post-processing (abs, signed, minmax) -> (B, H, W) float32, what the metrics compare.

    maps.npz keeps the first images' maps rounded to float16 (``SavedMaps``); re-scoring them
    reproduces the table within float16 rounding.
    """
    return {
        name: {kind: (fn(m, percentile) if kind != "minmax" else fn(m)).astype(np.float32)
               for kind, fn in PROCESSORS.items()}
        for name, m in maps.items()
    }


def logit_change(reference: torch.Tensor, current: torch.Tensor) -> dict[str, Any]:
    """How much the model's own output moved: per-image Spearman of logits, prediction flips."""
    t, c = reference.double().numpy(), current.double().numpy()
    finite = bool(np.isfinite(c).all())
    rhos = [spearmanr(a, b).statistic if finite and np.ptp(b) > 0 and np.ptp(a) > 0 else np.nan
            for a, b in zip(t, c)]
    return {
        "logit_spearman_mean": None if np.all(np.isnan(rhos)) else float(np.nanmean(rhos)),
        "prediction_changed": float((t.argmax(1) != c.argmax(1)).mean()),
        "output_finite": finite,
    }


@dataclass
class Setup:
    """What a run's execution starts from: device, threads, data, the explained images, the cache."""

    device: torch.device
    threads: int
    data: Dataset
    images: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    cache: Path
    data_s: float
    determinism: dict[str, Any] = field(default_factory=dict)  # the settings scores depend on


def preprocessing(cfg: ExperimentConfig, arch: Architecture):
    """The model's input preprocessing with the configured scaling (ImageNet models), else None."""
    if arch.preprocessing is None:
        return None
    pre = arch.preprocessing
    crop = cfg.data.crop or pre.crop
    resize = cfg.data.resize or (pre.resize if cfg.data.crop is None else max(crop, round(crop * pre.resize / pre.crop)))
    return dataclasses.replace(pre, resize=resize, crop=crop, scaling=cfg.model.input_scaling or "imagenet")


def setup(cfg: ExperimentConfig) -> Setup:
    threads = set_threads(cfg.num_threads)
    device = select_device(cfg.device)
    determinism = {**configure_determinism(device), "training_threads": cfg.training.num_threads,
                   "conv_input_grad": ConvInputGrad(cfg.conv_input_grad).value, **keep_freed_memory()}
    t0 = time.time()
    arch = get_architecture(cfg.model.name)
    pre = preprocessing(cfg, arch)
    data = load_dataset(cfg.data, pre, limit=cfg.n_images if pre is not None else None)
    images = select_images(data, cfg.n_images)
    if Target(cfg.target) == Target.label and not bool((images[1] >= 0).all()):
        raise ValueError(f"target=label but data {data.name!r} has no labels for these images; use "
                         "target=predicted or target=original_prediction")
    return Setup(device, threads, data, images, cache_dir(cfg), time.time() - t0, determinism)


class SavedMaps:
    """The figure subset of every stage's maps at float16, spilled to disk as each stage ends.

    Each key's stages are appended to one file in a temporary folder, so memory does not grow
    with the number of stages (17 stages of 9 methods x 3 post-processings x 8 images at
    299x299 would hold 1.3 GB as float32 arrays); ``arrays()`` maps the files back as
    (stages, K, H, W) float16 arrays that np.savez streams into maps.npz.
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="saliency_maps_", ignore_cleanup_errors=True)
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._count: dict[str, int] = {}

    def _path(self, key: str) -> Path:
        return Path(self._dir.name) / (key.replace("/", "__") + ".f16")

    def add(self, key: str, arr: np.ndarray) -> None:
        a = np.ascontiguousarray(arr, dtype=np.float16)
        if self._shapes.setdefault(key, a.shape) != a.shape:
            raise ValueError(f"saved maps {key!r} changed shape from {self._shapes[key]} to {a.shape}")
        with open(self._path(key), "ab") as fh:
            fh.write(a.tobytes())
        self._count[key] = self._count.get(key, 0) + 1

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.memmap(self._path(k), dtype=np.float16, mode="r", shape=(self._count[k],) + shape)
                if self._count[k] and np.prod(shape) else np.zeros((self._count[k],) + shape, np.float16)
                for k, shape in self._shapes.items()}


@dataclass
class Scored:
    scores: pd.DataFrame
    arrays: dict[str, np.ndarray]
    stages: list[dict[str, Any]]
    passes_per_image: int = 0
    seconds: float = 0.0
    # Unrelated maps scored with every metric (benchmark.calibration): calibration.parquet.
    calibration: Optional[pd.DataFrame] = None
    # Keeps the spill folder behind memory-mapped arrays alive as long as the result.
    saved: Optional[SavedMaps] = None


# Stages explained together at most (the CNN's and MLP's cascades have 5).
JOINT_STAGES = 6


def score_stages(
    cfg: ExperimentConfig,
    arch: Architecture,
    methods: list[Method],
    stage_models: Iterable[tuple[Stage, AbstractContextManager[nn.Module]]],
    s: Setup,
    n_stages: Optional[int] = None,
    shared_model: Optional[nn.Module] = None,
    drawn: Optional[dict[int, torch.Tensor]] = None,
) -> Scored:
    """Maps of every stage's model, scored against stage 0's with every metric.

    ``shared_model``: every context re-initializes units of this one model in place
    (``randomization.randomized``). Then, with ``cfg.share_unchanged_layers`` and a model with
    ``steps()``, the stages are explained together (``Engine.explain_stages``): each stage's state is
    copied out of its context, and the layers below a stage's lowest re-initialized unit run once for
    every stage. The maps are the same, bit for bit. ``drawn``: the dict the contexts were given
    (``randomized(..., drawn)``); the stages' states then share its copies of the drawn weights.
    """
    data, device = s.data, s.device
    x, labels, ids = s.images
    metrics = [METRICS[n] for n in cfg.similarity.metrics]
    k_saved = min(cfg.n_saved_images, len(x))
    rows: list[dict[str, Any]] = []
    saved = SavedMaps()
    stage_meta: list[dict[str, Any]] = []
    reference: dict[tuple[str, str], Any] = {}  # (method, metric) -> stage 0's maps, prepared by the metric
    calibration: Optional[pd.DataFrame] = None
    ref_logits: Optional[torch.Tensor] = None
    passes = 0
    start = time.time()

    def look(stage: Stage, model: nn.Module) -> dict[str, Any]:
        """The stage model's own output, accuracy and the targets to explain."""
        nonlocal ref_logits
        with torch.no_grad():
            logits = model(x.to(device)).float().cpu()
        if ref_logits is None:
            ref_logits = logits
        known = data.eval_labels >= 0
        accuracy = (evaluate(model, data.eval_images[known], data.eval_labels[known])
                    if cfg.stage_accuracy and bool(known.any()) else None)
        if Target(cfg.target) == Target.predicted:
            target = logits.argmax(1)
        elif Target(cfg.target) == Target.original_prediction:
            target = ref_logits.argmax(1)
        else:
            target = labels
        return {"stage": stage, "logits": logits, "accuracy": accuracy, "target": target}

    def engine_for(model: nn.Module) -> Engine:
        layer = model.get_submodule(arch.gradcam_layer) if arch.gradcam_layer else None
        return Engine(model, methods, target_layer=layer, seed=cfg.seed, memory_budget_mb=cfg.memory_budget_mb,
                      conv_input_grad=ConvInputGrad(cfg.conv_input_grad).value)

    def finish(seen: dict[str, Any], maps: dict[str, torch.Tensor], seconds: float) -> None:
        nonlocal reference, calibration
        t_finish = time.time()
        stage, target, logits = seen["stage"], seen["target"], seen["logits"]
        # Overflowing randomized weights give NaN / Inf maps: scored NaN (non_finite_map), counted here.
        non_finite = {n: int((~torch.isfinite(m.flatten(1))).any(1).sum()) for n, m in maps.items()}
        non_finite = {n: k for n, k in non_finite.items() if k}
        processed = process(maps, cfg.similarity.percentile)
        if stage.index == 0:
            calibration = _calibrate(processed, ids, tuple(x.shape[-2:]), metrics, cfg)
            # stage 0's maps as every stage's comparison reads them, prepared once (Spearman: ranked)
            reference = {(m.name, metric.name): metric.prepare(processed[m.name][metric.input])
                         for m in methods for metric in metrics}
        for method in methods:
            for metric in metrics:
                sc = metric.score(reference[method.name, metric.name], processed[method.name][metric.input],
                                  cfg.similarity)
                for i in range(len(x)):
                    rows.append({
                        "stage": stage.index, "layer": stage.layer, "method": method.name,
                        "metric": metric.name, "image": int(ids[i]), "value": float(sc.value[i]),
                        "nan_reason": sc.nan_reason[i], "tie_fraction": float(sc.tie_fraction[i]),
                        "target": int(target[i]),
                    })
            for kind, arr in processed[method.name].items():
                saved.add(f"{method.name}/{kind}", arr[:k_saved])
        del maps, processed
        change = logit_change(ref_logits, logits)
        stage_meta.append({"stage": stage.index, "layer": stage.layer, "units_randomized": list(stage.units),
                           "accuracy": seen["accuracy"], **change, "non_finite_maps": non_finite,
                           "seconds": seconds + time.time() - t_finish})
        if non_finite or not change["output_finite"]:
            log.warning("stage %d (%s): model output finite: %s; images with non-finite maps: %s", stage.index,
                        stage.layer, change["output_finite"], non_finite or "none")
        rho = change["logit_spearman_mean"]
        log.info("stage %d (%s): accuracy %s, logit Spearman %s", stage.index, stage.layer,
                 "n/a" if seen["accuracy"] is None else f"{seen['accuracy']:.3f}", "n/a" if rho is None else f"{rho:.3f}")

    # Stages go together for a model whose steps() are its units (stage_cut is None otherwise).
    joint = (shared_model is not None and cfg.share_unchanged_layers
             and stage_cut(shared_model, arch, Stage(0, "original", ())) is not None)
    if joint:
        # Held together, per image and method: the maps (float32, 4 bytes) and the gradient sums (float64,
        # with squares: 16 bytes); and the re-initialized weights, one model's worth at most (a unit draws
        # the same weights at every stage it is part of, so its state is held once).
        n = min(JOINT_STAGES, n_stages if n_stages is not None else len(arch.units) + 1)
        need = n * len(x) * x[0].numel() * 20 * len(methods)
        need += sum(p.numel() * p.element_size() for p in shared_model.parameters())
        joint = need <= cfg.memory_budget_mb * 2**20
        if not joint:
            log.info("stages explained one at a time: held together they would need %.0f MB, above "
                     "memory_budget_mb=%d", need / 2**20, cfg.memory_budget_mb)
    if not joint:
        for stage, context in tqdm(stage_models, desc="stages", total=n_stages, disable=not cfg.progress):
            t_stage = time.time()
            with context as model:
                seen = look(stage, model)
                engine = engine_for(model)
                passes = engine.passes_per_image
                maps = engine.explain(x, seen["target"], ids, stage_key=f"stage{stage.index}")
            finish(seen, maps, time.time() - t_stage)
    else:
        # Every stage's output, targets and re-initialized state, one context at a time; then all maps at once.
        plans, seen_all, own = [], [], []
        # each re-initialized tensor's weights, copied once for all stages (shared with the contexts' ``drawn``)
        held: dict[int, torch.Tensor] = {} if drawn is None else drawn
        for stage, context in stage_models:
            t_stage = time.time()
            with context as model:
                seen = look(stage, model)
                state = stage_state(model, arch, stage, held)
            plans.append(StagePlan(f"stage{stage.index}", seen["target"], state, stage_cut(model, arch, stage)))
            seen_all.append(seen)
            own.append(time.time() - t_stage)
        engine = engine_for(shared_model)
        passes = engine.passes_per_image
        bar = tqdm(total=len(plans), desc="stages", disable=not cfg.progress)
        # At most JOINT_STAGES stages at a time, so memory does not grow with the number of stages.
        for first in range(0, len(plans), JOINT_STAGES):
            group = range(first, min(first + JOINT_STAGES, len(plans)))
            t_maps = time.time()
            maps = engine.explain_stages(x, ids, [plans[k] for k in group])
            # the engine's clock per stage (the shared layers count for the first); the rest of the call evenly
            rest = (time.time() - t_maps - sum(engine.stage_seconds)) / len(group)
            for j, k in enumerate(group):
                finish(seen_all[k], maps[j], own[k] + engine.stage_seconds[j] + rest)
                maps[j] = {}
                bar.update()
        bar.close()
        del plans
    arrays = saved.arrays()  # (stages, K, H, W) float16
    arrays["images"] = x[:k_saved].numpy().astype(np.float32)
    arrays["image_ids"] = ids[:k_saved].numpy()
    arrays["stage_layers"] = np.array([s["layer"] for s in stage_meta])
    return Scored(pd.DataFrame(rows), arrays, stage_meta, passes, time.time() - start, calibration=calibration,
                  saved=saved)


def _calibrate(reference: dict[str, dict[str, np.ndarray]], ids: torch.Tensor, shape: tuple[int, int],
               metrics: list, cfg: ExperimentConfig) -> pd.DataFrame:
    """Similarity of unrelated maps (noise vs noise, each reference map vs noise) per metric and image."""
    noise = process({w: noise_maps(cfg.seed, w, ids.tolist(), shape) for w in ("a", "b")}, cfg.similarity.percentile)
    return calibration_scores(reference, noise["a"], noise["b"], ids.tolist(), metrics, cfg.similarity)


def finish_table(df: pd.DataFrame, plan: Plan, data: Dataset) -> pd.DataFrame:
    """Add the `test` and provenance columns of the tidy schema."""
    cfg = plan.cfg
    df.insert(0, "test", plan.test)
    for col, val in (("model", plan.arch.name), ("data", data.name), ("profile", cfg.profile.value),
                     ("seed", cfg.seed), ("run_id", plan.run_id)):
        df[col] = val
    df["nan_reason"] = df["nan_reason"].astype("string")
    return df


def base_meta(plan: Plan, s: Setup, scored: Scored) -> dict[str, Any]:
    cfg, data = plan.cfg, s.data
    ids = s.images[2]
    return {
        "run_id": plan.run_id,
        "test": plan.test,
        "experiment": cfg.test,
        "data": {"name": data.name, **data.provenance, "input_range": list(data.input_range)},
        "images": {"n": len(ids), "ids": ids.tolist(), "split": "held-out"},
        "methods": {m.name: store.to_plain(m) for m in plan.methods},
        "controls": [m.name for m in plan.methods if m.name in CONTROLS],
        "profile": cfg.profile.value,
        "resolved": {"reinit": cfg.randomization.reinit.value, "ssim_window": cfg.similarity.ssim_window.value,
                     "hog_correlation": cfg.similarity.hog_correlation.value,
                     "hog_pixels_per_cell": hog_pixels_per_cell(data.image_size, cfg.similarity.hog_pixels_per_cell),
                     "hog_cells_per_block": cfg.similarity.hog_cells_per_block,
                     "batchnorm_stats": cfg.randomization.batchnorm_stats.value, "target": cfg.target.value},
        "stages": scored.stages,
        "engine": {"passes_per_image_per_stage": scored.passes_per_image},
        "device": str(s.device),
        "threads": s.threads,
        "determinism": s.determinism,
        "seed": cfg.seed,
        "versions": versions(),
    }


def write_outputs(plan: Plan, df: pd.DataFrame, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                  report: Callable[[Path, pd.DataFrame, dict[str, Any], dict[str, np.ndarray]], None],
                  started: float, calibration: Optional[pd.DataFrame] = None) -> None:
    """scores.parquet, calibration.parquet, maps.npz, config.yaml, the report (report.md, report.html,
    summary.csv) and meta.json, each written atomically."""
    run_dir = plan.run_dir
    store.atomic_write(run_dir / "scores.parquet", lambda f: df.to_parquet(f, index=False))
    if calibration is not None:
        store.atomic_write(run_dir / "calibration.parquet", lambda f: calibration.to_parquet(f, index=False))

    def write_npz(f: Path) -> None:
        with open(f, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    store.atomic_write(run_dir / "maps.npz", write_npz)
    store.write_text(run_dir / "config.yaml", yaml.safe_dump(store.to_plain(plan.cfg), sort_keys=False))
    t_rep = time.time()
    meta.setdefault("timings", {})["total_s"] = time.time() - started
    report(run_dir, df, meta, arrays)
    meta["timings"]["report_s"] = time.time() - t_rep
    meta["timings"]["total_s"] = time.time() - started
    store.write_json(run_dir / "meta.json", meta)


def cache_dir(cfg: ExperimentConfig) -> Path:
    """Where checkpoints are cached: ``cache_dir``, or ``<results_root>/.cache``."""
    return Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.results_root) / ".cache"


def run_guarded(plan: Plan, execute: Callable[[Plan, float], None]) -> Path:
    """Skip a finished run; otherwise mark it running, execute, and mark it done or failed.

    The results and cache folders are checked for writing first. The whole check-and-compute
    holds the run's lock: the same run started twice (two sweeps over one root) is computed
    once, the second waits and then skips it. A ``running`` status found with the lock free was
    left by an interrupted process and is redone.
    """
    cfg = plan.cfg
    store.check_writable(plan.run_dir.parent, "results_root", cfg.results_root)
    store.check_writable(cache_dir(cfg), "cache_dir" if cfg.cache_dir else "results_root",
                         cfg.cache_dir or cfg.results_root)
    with store.run_lock(plan.run_dir):
        if store.is_finished(plan.run_dir) and not cfg.overwrite:
            log.info("run %s is already finished at %s; skipping it (overwrite=true redoes it)", plan.run_id,
                     plan.run_dir)
            return plan.run_dir
        previous = store.read_status(plan.run_dir)
        if previous and previous.get("state") == "running":
            log.warning("run %s was left running by pid %s (interrupted); redoing it", plan.run_id,
                        previous.get("pid"))
        store.remove_temporaries(plan.run_dir)
        started = store.mark_running(plan.run_dir)
        try:
            execute(plan, started)
        except BaseException as err:
            store.mark_failed(plan.run_dir, started, err)
            err.run_dir = plan.run_dir  # type: ignore[attr-defined]  # for a sweep's list of failures
            log.error("run %s failed: %s (status in %s)", plan.run_id, err, plan.run_dir / "status.json")
            raise
        store.mark_done(plan.run_dir, started, RUN_FILES)
    log.info("run %s done: %s", plan.run_id, plan.run_dir)
    return plan.run_dir
