"""Calibration: how similar unrelated maps are, per metric, measured inside every run.

"Dropped to the level of unrelated maps" needs that level. For every explained image the run
draws two N(0, 1) noise maps (their generators derive from (seed, "calibration", a | b, image)),
post-processes them like every saliency map, and scores with every metric of the run:

- ``noise_vs_noise``: noise map a against noise map b;
- ``map_vs_noise``: each method's map of the reference model (stage 0) against noise map b.

The rows go to ``calibration.parquet`` (the same columns as ``scores.parquet`` plus ``kind``),
never into ``scores.parquet``. The appendix of the paper reports such scores close to 0 on
every metric (|value| < 0.005, HOG of uniform noise about 0.08); here they are measured.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from benchmark import rng
from benchmark.config import SimilarityConfig
from benchmark.similarity import Metric

KINDS = ("noise_vs_noise", "map_vs_noise")


def noise_maps(seed: int, which: str, image_ids: Sequence[int], shape: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) N(0, 1) maps, image i's from its own generator (seed, "calibration", which, i)."""
    return torch.stack([torch.randn((1, *shape), generator=rng.generator(seed, "calibration", which, int(i)))
                        for i in image_ids])


def calibration_scores(reference: dict[str, dict[str, np.ndarray]], noise_a: dict[str, np.ndarray],
                       noise_b: dict[str, np.ndarray], image_ids: Sequence[int], metrics: Sequence[Metric],
                       similarity: SimilarityConfig) -> pd.DataFrame:
    """Rows ``kind, method, metric, image, value, nan_reason, tie_fraction``.

    ``reference``: method -> post-processing -> (B, H, W), the maps of stage 0; ``noise_a`` and
    ``noise_b``: post-processing -> (B, H, W), two independent noise maps per image.
    ``method`` is empty (NA) for ``noise_vs_noise``.
    """
    rows: list[dict[str, Any]] = []
    pairs = [("noise_vs_noise", None, noise_a)] + [("map_vs_noise", m, maps) for m, maps in reference.items()]
    against = {metric.name: metric.prepare(noise_b[metric.input]) for metric in metrics}  # every pair's second map
    for kind, method, maps in pairs:
        for metric in metrics:
            sc = metric.score(maps[metric.input], against[metric.name], similarity)
            for i, image in enumerate(image_ids):
                rows.append({"kind": kind, "method": method, "metric": metric.name, "image": int(image),
                             "value": float(sc.value[i]), "nan_reason": sc.nan_reason[i],
                             "tie_fraction": float(sc.tie_fraction[i])})
    df = pd.DataFrame(rows)
    df["method"] = df["method"].astype("string")
    return df


def band(calibration: pd.DataFrame, metric: str, coverage: float = 0.95, of: str = "items", seed: int = 0,
         n_boot: int = 2000) -> tuple[float, float]:
    """The central ``coverage`` share of the unrelated-map similarities of ``metric`` (both kinds pooled).

    ``of="mean"``: of the means of as many unrelated pairs as the run has inputs, drawn with replacement from the
    pooled values (``n_boot`` draws from the generator (seed, "band", metric)): the spread a run's mean similarity
    would have if every map were unrelated. (nan, nan) when the run has no finite calibration value for the metric.
    """
    rows = calibration.loc[calibration.metric == metric]
    values = rows["value"].dropna().to_numpy()
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - coverage) / 2.0
    if of == "mean":
        n = max(1, int(rows["image"].nunique()))
        g = np.random.default_rng(rng.derive_seed(seed, "band", metric))
        values = values[g.integers(0, len(values), size=(n_boot, n))].mean(axis=1)
    elif of != "items":
        raise ValueError(f"verdict.band={of!r} must be items or mean")
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)
