"""The model parameter randomization test, end to end (Adebayo et al. 2018, section 4).

``run(cfg)`` validates the config, trains (or loads) the model, computes every method's maps
for the trained model once, then for each stage re-initializes the stage's units, recomputes
the maps, scores them against the trained model's maps and drops them. Only the first images'
maps are kept (``maps.npz``). Output: ``<results_root>/model_randomization/<run_id>/``.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
import yaml
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from benchmark import store
from benchmark.config import ExperimentConfig, Target, resolve_profile
from benchmark.data import Dataset, check_data_name, load_dataset
from benchmark.methods import CONTROLS, METHODS, Engine, Method, build_methods
from benchmark.models import Architecture, get_architecture
from benchmark.postprocess import PROCESSORS
from benchmark.randomization import Stage, randomized, stages
from benchmark.runtime import select_device, set_threads, versions
from benchmark.similarity import METRICS, check_metrics, hog_pixels_per_cell
from benchmark.training import evaluate, train_model

log = logging.getLogger(__name__)

RUN_FILES = ["scores.parquet", "maps.npz", "config.yaml", "meta.json", "report.md", "report.html"]


@dataclass
class Plan:
    """A validated run: what will be computed, known before any training."""

    cfg: ExperimentConfig
    arch: Architecture
    methods: list[Method]
    stages: list[Stage]
    run_id: str
    run_dir: Path


def plan(cfg: ExperimentConfig) -> Plan:
    """Check every setting that can be checked without data or training; fail with the fix."""
    resolve_profile(cfg)
    arch = get_architecture(cfg.model.name)
    check_data_name(cfg.data.name)
    methods = resolve_methods(cfg)
    for m in methods:
        if m.needs_target_layer and arch.gradcam_layer is None:
            raise ValueError(
                f"method {m.name!r} needs a convolutional layer and model {arch.name!r} has none; "
                f"remove {m.name} from method or choose a convolutional model"
            )
    check_metrics(list(cfg.similarity.metrics))
    for key in ("n_images", "n_saved_images", "n_figure_images"):
        value = getattr(cfg, key)
        if not isinstance(value, int) or value < (1 if key == "n_images" else 0):
            raise ValueError(f"{key}={value!r} must be a {'positive' if key == 'n_images' else 'non-negative'} "
                             "whole number, e.g. 32")
    if cfg.memory_budget_mb < 1:
        raise ValueError(f"memory_budget_mb={cfg.memory_budget_mb} must be at least 1, e.g. 1024")
    if cfg.randomization.std <= 0:
        raise ValueError(f"randomization.std={cfg.randomization.std} must be positive, e.g. 0.01")
    stage_list = stages(arch, cfg.randomization.order, cfg.randomization.units)
    rid = store.run_id(cfg)
    run_dir = Path(cfg.results_root) / cfg.test / rid
    return Plan(cfg, arch, methods, stage_list, rid, run_dir)


def resolve_methods(cfg: ExperimentConfig) -> list[Method]:
    """Build the selected methods and write their complete settings back into ``cfg.method``.

    ``method_settings`` (set by experiment configs) applies to selected methods only and takes
    precedence over ``method.<name>.<key>``. It is cleared afterwards, so the run id and
    config.yaml see exactly the settings that ran.
    """
    for name in cfg.method_settings:
        if name not in METHODS:
            raise ValueError(f"method_settings has {name!r}, not a known method; use some of {sorted(METHODS)}")
    spec = {name: {**(settings or {}), **(cfg.method_settings.get(name) or {})}
            for name, settings in cfg.method.items()}
    methods = build_methods(spec)
    cfg.method = {m.name: store.to_plain(m) for m in methods}
    cfg.method_settings = {}
    return methods


def select_images(data: Dataset, n_images: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n_images`` of the held-out split (already a fixed shuffle): images, labels, ids."""
    available = len(data.eval_images)
    if n_images > available:
        raise ValueError(
            f"n_images={n_images} but the held-out split of {data.name!r} has {available} images; "
            f"set n_images to at most {available}"
        )
    ids = torch.arange(n_images)
    return data.eval_images[:n_images], data.eval_labels[:n_images], ids


def process(maps: dict[str, torch.Tensor], inputs: set[str], percentile: float) -> dict[str, dict[str, np.ndarray]]:
    """method -> post-processing name -> (B, H, W) float32.

    Rounded to float32 before scoring, so the maps saved in maps.npz are exactly what the
    metrics compared and an independent re-check reproduces the table.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, m in maps.items():
        out[name] = {}
        for kind in inputs:
            fn = PROCESSORS[kind]
            arr = fn(m, percentile) if kind in ("abs", "signed") else fn(m)
            out[name][kind] = arr.astype(np.float32)
    return out


def logit_change(trained: torch.Tensor, current: torch.Tensor) -> dict[str, Any]:
    """How much the model's own output moved: per-image Spearman of logits, prediction flips."""
    t, c = trained.double().numpy(), current.double().numpy()
    finite = bool(np.isfinite(c).all())
    rhos = [spearmanr(a, b).statistic if np.ptp(b) > 0 and np.ptp(a) > 0 else np.nan for a, b in zip(t, c)]
    return {
        "logit_spearman_mean": float(np.nanmean(rhos)) if not np.all(np.isnan(rhos)) else None,
        "prediction_changed": float((t.argmax(1) != c.argmax(1)).mean()),
        "output_finite": finite,
    }


def run(cfg: ExperimentConfig) -> Path:
    """Run the test (or find it finished) and return its folder."""
    p = plan(cfg)
    if store.is_finished(p.run_dir) and not cfg.overwrite:
        log.info("run %s is already finished at %s; skipping it (overwrite=true redoes it)", p.run_id, p.run_dir)
        return p.run_dir
    started = store.mark_running(p.run_dir)
    try:
        _execute(p, started)
    except BaseException as err:
        store.mark_failed(p.run_dir, started, err)
        log.error("run %s failed: %s", p.run_id, err)
        raise
    store.mark_done(p.run_dir, started, RUN_FILES)
    log.info("run %s done: %s", p.run_id, p.run_dir)
    return p.run_dir


def _execute(p: Plan, started: float) -> None:
    cfg, arch = p.cfg, p.arch
    timings: dict[str, float] = {}
    threads = set_threads(cfg.num_threads)
    device = select_device(cfg.device)
    t0 = time.time()
    data = load_dataset(cfg.data)
    x, labels, ids = select_images(data, cfg.n_images)
    timings["data_s"] = time.time() - t0

    cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.results_root) / ".cache"
    trained = train_model(arch, data, cfg.training, cfg.seed, device, cache, cfg.progress, cfg.model.weights)
    timings["training_s"] = trained.seconds
    model = trained.model
    target_layer = model.get_submodule(arch.gradcam_layer) if arch.gradcam_layer else None
    engine = Engine(model, p.methods, target_layer=target_layer, seed=cfg.seed,
                    memory_budget_mb=cfg.memory_budget_mb)
    metrics = [METRICS[n] for n in cfg.similarity.metrics]
    inputs = {m.input for m in metrics}
    k_saved = min(cfg.n_saved_images, len(x))

    rows: list[dict[str, Any]] = []
    saved: dict[str, list[np.ndarray]] = {}
    stage_meta: list[dict[str, Any]] = []
    reference: dict[str, dict[str, np.ndarray]] = {}
    trained_logits: Optional[torch.Tensor] = None
    t_maps = time.time()
    for stage in tqdm(p.stages, desc="stages", disable=not cfg.progress):
        t_stage = time.time()
        with randomized(model, arch, stage, cfg.randomization, cfg.seed):
            with torch.no_grad():
                logits = model(x.to(device)).float().cpu()
            if trained_logits is None:
                trained_logits = logits
            accuracy = evaluate(model, data.eval_images, data.eval_labels)
            if Target(cfg.target) == Target.predicted:
                target = logits.argmax(1)
            elif Target(cfg.target) == Target.original_prediction:
                target = trained_logits.argmax(1)
            else:
                target = labels
            maps = engine.explain(x, target, ids, stage_key=f"stage{stage.index}")
        processed = process(maps, inputs, cfg.similarity.percentile)
        if stage.index == 0:
            reference = processed
        for method in p.methods:
            for metric in metrics:
                s = metric.score(reference[method.name][metric.input], processed[method.name][metric.input],
                                 cfg.similarity)
                for i in range(len(x)):
                    rows.append({
                        "stage": stage.index, "layer": stage.layer, "method": method.name,
                        "metric": metric.name, "image": int(ids[i]), "value": float(s.value[i]),
                        "nan_reason": s.nan_reason[i], "tie_fraction": float(s.tie_fraction[i]),
                        "target": int(target[i]),
                    })
            for kind in ("abs", "signed", "minmax"):
                arr = processed[method.name].get(kind)
                if arr is None:
                    arr = process({method.name: maps[method.name][:k_saved]}, {kind},
                                  cfg.similarity.percentile)[method.name][kind]
                saved.setdefault(f"{method.name}/{kind}", []).append(arr[:k_saved])
        change = logit_change(trained_logits, logits)
        stage_meta.append({"stage": stage.index, "layer": stage.layer, "units_randomized": list(stage.units),
                           "accuracy": accuracy, **change, "seconds": time.time() - t_stage})
        log.info("stage %d (%s): accuracy %.3f, logit Spearman %.3f", stage.index, stage.layer, accuracy,
                 change["logit_spearman_mean"] if change["logit_spearman_mean"] is not None else float("nan"))
    timings["maps_and_scores_s"] = time.time() - t_maps

    df = pd.DataFrame(rows)
    df.insert(0, "test", cfg.randomization.order.value)
    for col, val in (("model", arch.name), ("data", data.name), ("profile", cfg.profile.value),
                     ("seed", cfg.seed), ("run_id", p.run_id)):
        df[col] = val
    df["nan_reason"] = df["nan_reason"].astype("string")
    run_dir = p.run_dir
    store.atomic_write(run_dir / "scores.parquet", lambda f: df.to_parquet(f, index=False))

    arrays = {k: np.stack(v) for k, v in saved.items()}  # (stages, K, H, W)
    arrays["images"] = x[:k_saved].numpy().astype(np.float32)
    arrays["image_ids"] = ids[:k_saved].numpy()
    arrays["stage_layers"] = np.array([s.layer for s in p.stages])

    def write_npz(f: Path) -> None:
        with open(f, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    store.atomic_write(run_dir / "maps.npz", write_npz)
    store.write_text(run_dir / "config.yaml", yaml.safe_dump(store.to_plain(cfg), sort_keys=False))
    meta = {
        "run_id": p.run_id,
        "test": cfg.randomization.order.value,
        "experiment": cfg.test,
        "model": {"name": arch.name, "train_accuracy": trained.train_accuracy,
                  "eval_accuracy": trained.eval_accuracy, "checkpoint": trained.checkpoint,
                  "from_cache": trained.from_cache, "gradcam_layer": arch.gradcam_layer,
                  "units": {k: list(v) for k, v in arch.units.items()}},
        "data": {"name": data.name, **data.provenance, "input_range": list(data.input_range)},
        "images": {"n": len(x), "ids": ids.tolist(), "split": "held-out"},
        "methods": {m.name: store.to_plain(m) for m in p.methods},
        "controls": [m.name for m in p.methods if m.name in CONTROLS],
        "profile": cfg.profile.value,
        "resolved": {"reinit": cfg.randomization.reinit.value, "ssim_window": cfg.similarity.ssim_window.value,
                     "hog_correlation": cfg.similarity.hog_correlation.value,
                     "hog_pixels_per_cell": hog_pixels_per_cell(data.image_size, cfg.similarity.hog_pixels_per_cell),
                     "hog_cells_per_block": cfg.similarity.hog_cells_per_block,
                     "batchnorm_stats": cfg.randomization.batchnorm_stats.value},
        "stages": stage_meta,
        "engine": {"passes_per_image_per_stage": engine.passes_per_image, "max_chunk": engine.max_chunk},
        "device": str(device),
        "threads": threads,
        "seed": cfg.seed,
        "versions": versions(),
        "timings": {**timings, "total_s": time.time() - started},
    }
    from benchmark.report import write_run_report

    t_rep = time.time()
    write_run_report(run_dir, df, meta, arrays, n_figure_images=cfg.n_figure_images)
    meta["timings"]["report_s"] = time.time() - t_rep
    meta["timings"]["total_s"] = time.time() - started
    store.write_json(run_dir / "meta.json", meta)
