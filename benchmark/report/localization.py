"""The report's section on data with known regions (``data=planted``): every map against where the evidence is.

Reads a run's ``localization.parquet`` (``benchmark.localization`` scores of every map, written by the run) and
lays out, per score (pointing game, AUC, mass), the mean over images with its bootstrap interval, methods by
stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from benchmark import rng
from benchmark.report.stats import fmt_ci, mean_ci


def read_localization(run_dir: Path) -> Optional[pd.DataFrame]:
    """localization.parquet (every map against the known regions), None where the data know no regions."""
    path = Path(run_dir) / "localization.parquet"
    return pd.read_parquet(path) if path.exists() else None


LOCALIZATION_SCORES = {"pointing": "pointing game (share of maps whose largest pixel lies in the region)",
                       "auc": "AUC of the map's values for \"inside the region\" (0.5: no better than chance)",
                       "mass": "share of the map's mass inside the region"}


def localization_table(loc: pd.DataFrame, score: str, layers: list[str], methods: list[str],
                       seed: int = 0) -> pd.DataFrame:
    """Rows methods, columns stages: mean [95% bootstrap CI] over images of one localization score."""
    cells = {}
    for (method, stage), g in loc[loc.score == score].groupby(["method", "stage"], sort=False):
        v = g.value.dropna().to_numpy()
        lo, hi = mean_ci(v, 0.95, 2000, rng.derive_seed(seed, "localization", method, score, int(stage)))
        cells[method, int(stage)] = fmt_ci(float(v.mean()) if len(v) else np.nan, lo, hi)
    rows = {m: [cells.get((m, k), "") for k in range(len(layers))] for m in methods if (m, 0) in cells}
    return pd.DataFrame.from_dict(rows, orient="index", columns=layers)


def localization_blocks(loc: Optional[pd.DataFrame], layers: list[str], methods: list[str],
                        meta: dict[str, Any]) -> list[tuple]:
    """The report's section on data with known regions: one table per score (none without localization.parquet)."""
    if loc is None or loc.empty:
        return []
    n = loc.image.nunique()
    blocks: list[tuple] = [
        ("h", 2, "Where the evidence is: localization against the known regions"),
        ("p", f"The data know where each image's evidence is ({meta['data'].get('label', 'a known region')}). Every "
              f"scored map (all {n} images, every stage) against that region, from the map's unclipped |map| summed "
              "over channels (benchmark.localization): a faithful map of the trained model points at the region, "
              "and after randomization it must stop doing so. Localization alone does not tell a faithful map from "
              "an input detector (the edge control points at a bright region at every stage); the change between "
              "stages does. Mean [95% bootstrap interval] over images; every row is in localization.parquet.")]
    for score, label in LOCALIZATION_SCORES.items():
        if (loc.score == score).any():
            blocks += [("h", 3, label[0].upper() + label[1:]),
                       ("table", localization_table(loc, score, layers, methods, meta.get("seed", 0)), True)]
    return blocks
