"""A run's lifecycle: skip it when finished, mark it running, compute, write every file, mark it done.

Every file is written atomically (``benchmark.store``); ``status.json`` says ``done`` only after all of
``RUN_FILES`` exist, so a crash never leaves a half-written result that looks finished.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import yaml

from benchmark import store
from benchmark.data import Dataset
from benchmark.inputs import Setup, cache_dir
from benchmark.plan import Plan
from benchmark.runtime import versions
from benchmark.scoring import Scored
from benchmark.similarity import hog_pixels_per_cell

log = logging.getLogger(__name__)

RUN_FILES = ["scores.parquet", "calibration.parquet", "maps.npz", "config.yaml", "meta.json", "summary.csv",
             "report.md", "report.html"]


def finish_table(df: pd.DataFrame, plan: Plan, data: Dataset) -> pd.DataFrame:
    """Add the `test` and provenance columns of the tidy schema."""
    cfg = plan.cfg
    df.insert(0, "test", plan.test)
    for col, val in (("model", plan.arch.name), ("data", data.name), ("profile", cfg.profile.value),
                     ("seed", cfg.seed), ("run_id", plan.run_id)):
        df[col] = val
    if "nan_reason" in df:
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
        "controls": [m.name for m in plan.methods if not m.uses_model],
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
        "inputs": plan.inputs,
        "versions": versions(),
    }


def write_outputs(plan: Plan, run_dir: Path, df: pd.DataFrame, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                  report: Callable[[Path, pd.DataFrame, dict[str, Any], dict[str, np.ndarray]], None],
                  started: float, calibration: Optional[pd.DataFrame] = None,
                  null: Optional[pd.DataFrame] = None, localization: Optional[pd.DataFrame] = None) -> None:
    """scores.parquet, calibration.parquet, null.parquet (with the fair null), localization.parquet (on data with
    known regions), maps.npz, config.yaml, the report (report.md, report.html, summary.csv) and meta.json in
    ``run_dir``, each written atomically. An optional file this run does not write is removed, so a folder written
    again never keeps an earlier run's null or localization beside the new scores."""
    run_dir = Path(run_dir)
    store.atomic_write(run_dir / "scores.parquet", lambda f: df.to_parquet(f, index=False))
    if calibration is not None:
        store.atomic_write(run_dir / "calibration.parquet", lambda f: calibration.to_parquet(f, index=False))
    for name, table in (("null.parquet", null), ("localization.parquet", localization)):
        if table is None:
            (run_dir / name).unlink(missing_ok=True)
        else:
            store.atomic_write(run_dir / name, lambda f, t=table: t.to_parquet(f, index=False))

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
        store.recover_replaced(plan.run_dir)
        finished = store.is_finished(plan.run_dir, RUN_FILES)
        if finished and not cfg.overwrite:
            log.info("run %s is already finished at %s; skipping it (overwrite=true redoes it)", plan.run_id,
                     plan.run_dir)
            return plan.run_dir
        previous = store.read_status(plan.run_dir)
        if previous and previous.get("state") == "running":
            log.warning("run %s was left running by pid %s (interrupted); redoing it", plan.run_id,
                        previous.get("pid"))
        # overwrite=true over a finished run: the new run is written beside it and replaces it only when done, so an
        # interrupted overwrite leaves the previous result valid
        work = dataclasses.replace(plan, run_dir=store.staging_dir(plan.run_dir)) if finished else plan
        if finished:
            shutil.rmtree(work.run_dir, ignore_errors=True)  # an earlier overwrite that did not finish
        store.remove_temporaries(work.run_dir)
        started = _mark_running(work)
        try:
            execute(work, started)
        except BaseException as err:
            _failed(work, started, err)
            raise
        store.mark_done(work.run_dir, started, RUN_FILES)
        if finished:
            store.replace_run(work.run_dir, plan.run_dir)
    log.info("run %s done: %s", plan.run_id, plan.run_dir)
    return plan.run_dir


def _mark_running(plan: Plan) -> float:
    try:
        return store.mark_running(plan.run_dir)
    except OSError as err:
        raise ValueError(f"the run folder {plan.run_dir} cannot be written ({err.strerror or err}); its status "
                         "cannot say running: choose a results_root you can write to") from None


def _failed(plan: Plan, started: float, err: BaseException) -> None:
    """Status ``failed`` with the error; where the status itself cannot be written, the log says why, and the real
    error still propagates."""
    err.run_dir = plan.run_dir  # type: ignore[attr-defined]  # for a sweep's list of failures
    try:
        store.mark_failed(plan.run_dir, started, err)
        log.error("run %s failed: %s (status in %s)", plan.run_id, err, plan.run_dir / "status.json")
    except OSError as status_err:
        log.error("run %s failed: %s; its status.json could not be written either (%s), so it may still say "
                  "running: a rerun redoes it", plan.run_id, err, status_err)
