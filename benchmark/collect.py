"""Gather the finished runs under a results root into one table.

A run folder is any folder holding a ``status.json``. It is used only when it is finished
(``done`` and every listed file matches its recorded hash); every other run folder is listed as
skipped with its state and the reason, never read as a result. Hydra's own folders
(``.hydra``) and the checkpoint cache (``.cache``) are not searched.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmark import store

log = logging.getLogger(__name__)

ROW_KEY = ["run_id", "test", "stage", "method", "metric", "image"]


@dataclass
class RunRecord:
    """One finished run: where it is, its config and meta, and its number of score rows."""

    run_id: str
    run_dir: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    n_rows: int


@dataclass
class Skipped:
    run_dir: Path
    state: str  # running | interrupted | failed | unfinished (missing status or a file that fails its hash)
    reason: str


@dataclass
class Collection:
    scores: pd.DataFrame
    runs: list[RunRecord] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def run_dirs(root: Path) -> list[Path]:
    """Every run folder under ``root`` (``root`` itself included), sorted, outside .hydra and .cache."""
    root = Path(root)
    found = []
    for status in root.rglob("status.json"):
        rel = status.parent.relative_to(root).parts
        if any(part.startswith(".") for part in rel):  # .hydra, .cache, an overwrite's staging folder
            continue
        found.append(status.parent)
    return sorted(found)


def _skip_reason(run_dir: Path) -> Skipped:
    status = store.read_status(run_dir)
    if status is None:
        return Skipped(run_dir, "unfinished", "status.json is missing or unreadable")
    state = status.get("state", "unknown")
    if state == "failed":
        return Skipped(run_dir, "failed", str(status.get("error", "no error recorded")))
    if state == "running" and not store.lock_is_held(Path(run_dir) / store.RUN_LOCK):
        return Skipped(run_dir, "interrupted", f"started by pid {status.get('pid')}, whose process is gone (the run's "
                       "lock is free); rerun its command to redo it")
    if state == "running":
        return Skipped(run_dir, "running", f"started {status.get('started')} by pid {status.get('pid')}, not done")
    return Skipped(run_dir, "unfinished", f"state {state!r} but a listed file is missing or fails its hash")


def collect(root: Path) -> Collection:
    """The scores of every finished run under ``root``, one row per key, plus what was skipped."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root={str(root)!r} is not a folder; give the results folder of a run or sweep, "
                         "e.g. root=results/")
    tables, runs, skipped = [], [], []
    for run_dir in run_dirs(root):
        if not store.is_finished(run_dir, ["scores.parquet", "meta.json", "config.yaml"]):
            skipped.append(_skip_reason(run_dir))
            continue
        df = pd.read_parquet(run_dir / "scores.parquet")
        meta = json.loads((run_dir / "meta.json").read_text())
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        run_id = meta.get("run_id", run_dir.name)
        runs.append(RunRecord(run_id, run_dir, config, meta, len(df)))
        tables.append(df)
    scores = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=ROW_KEY + ["value"])
    dup = scores.duplicated(ROW_KEY, keep=False)
    if dup.any():
        ids = sorted(scores.loc[dup, "run_id"].unique())
        raise ValueError(f"runs {ids} appear in more than one folder under root={str(root)!r}; "
                         "remove the copies or point root at one of them")
    log.info("collected %d finished runs (%d rows) under %s; skipped %d", len(runs), len(scores), root,
             len(skipped))
    return Collection(scores, runs, skipped)
