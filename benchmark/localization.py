"""Maps against where the evidence is (``data=planted``): mass inside the region, the pointing game, AUC.

Per image, on the |map| summed over channels, unclipped (``maps.npz``'s ``<method>/magnitude``), or any
non-negative map:
- ``mass``: the share of the map's total inside the region (a uniform map scores the region's area share);
- ``pointing``: 1 if the map's largest pixel lies inside the region, else 0 (ties: the first in raster order);
- ``auc``: the area under the ROC curve of the map's values as a score for "inside the region"
  (``sklearn.metrics.roc_auc_score``; 0.5 for a map that does not tell inside from outside).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

SCORES = ("mass", "pointing", "auc")


def localization(maps: np.ndarray, regions: np.ndarray) -> dict[str, np.ndarray]:
    """``maps`` (N, H, W) non-negative, ``regions`` (N, H, W) bool -> score -> (N,) (NaN for an all-zero map)."""
    maps = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    regions = np.asarray(regions, dtype=bool).reshape(len(regions), -1)
    if maps.shape != regions.shape:
        raise ValueError(f"maps of shape {maps.shape} and regions of shape {regions.shape} differ")
    total = maps.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mass = np.where(total > 0, (maps * regions).sum(1) / total, np.nan)
    pointing = np.where(total > 0, regions[np.arange(len(maps)), maps.argmax(1)].astype(float), np.nan)
    auc = np.array([roc_auc_score(r, m) if total[i] > 0 and 0 < r.sum() < r.size else np.nan
                    for i, (m, r) in enumerate(zip(maps, regions))])
    return {"mass": mass, "pointing": pointing, "auc": auc}


def localization_table(arrays: dict[str, np.ndarray], regions: np.ndarray) -> pd.DataFrame:
    """Rows ``stage, layer, method, score, image, value`` from a run's ``maps.npz`` (the ``<method>/magnitude``
    arrays, (stages, images, H, W): each map's unclipped |map| over its peak, saved where the data know their
    regions) and the regions of its saved images."""
    layers = [str(x) for x in arrays["stage_layers"]]
    ids = arrays["image_ids"]
    keys = [k for k in arrays if k.endswith("/magnitude")]
    if not keys:
        raise ValueError("maps.npz has no <method>/magnitude arrays: they are saved by runs on data with known "
                         "regions (data=planted); rerun with data=planted")
    rows = []
    for key in keys:
        method = key[: -len("/magnitude")]
        for stage, maps in enumerate(arrays[key].astype(np.float32)):
            for score, values in localization(maps, regions).items():
                rows += [{"stage": stage, "layer": layers[stage], "method": method, "score": score,
                          "image": int(ids[i]), "value": float(v)} for i, v in enumerate(values)]
    return pd.DataFrame(rows)
