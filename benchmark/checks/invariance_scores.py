"""The input invariance test's scores and verdict (``benchmark.checks.input_invariance``).

``mean_abs_difference`` (the verdict's score) and ``max_abs_difference``: per image, the mean or the largest
|a - b| of the two stages' min-max scaled maps (0 for identical maps, 1 at most), registered as metrics. ``judge``:
the test's own rule, pass when the maps stay within ``input_invariance.tolerance`` of identical.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.similarity import METRICS, Metric, Scores, register_metric

METRIC = "mean_abs_difference"  # the verdict's score


def _differences(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, N) |a - b| of (B, H, W) maps, and (B,) whether both maps are finite."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    finite = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    with np.errstate(invalid="ignore"):
        return np.abs(a - b), finite


def _reduced(a: np.ndarray, b: np.ndarray, reduce) -> Scores:
    d, finite = _differences(a, b)
    return Scores(np.where(finite, reduce(d, 1), np.nan), [None if f else "non_finite_map" for f in finite],
                  np.full(len(d), np.nan))


def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> Scores:
    """Per image, the mean of |a - b| over the pixels of (B, H, W) maps (the min-max scaled maps: a share of the
    map's range, 0 for identical maps). A pixel or two moved by a tied max-pooling window decided the other way
    (float rounding) barely moves it; a map that changes with the shift does.

    >>> mean_abs_difference(np.zeros((1, 2, 2)), np.array([[[0.0, 0.0], [0.0, 0.4]]])).value.tolist()
    [0.1]
    """
    return _reduced(a, b, np.mean)


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> Scores:
    """Per image, the largest |a - b| over the pixels of (B, H, W) maps (min-max scaled: 0 to 1).

    >>> max_abs_difference(np.zeros((1, 2, 2)), np.full((1, 2, 2), 0.25)).value.tolist()
    [0.25]
    """
    return _reduced(a, b, np.max)


# Not similarities: 0 is identical (higher_is_more_similar=False); the test's own rule judges them (``judge``).
DIFFERENCES = {name: Metric(name, "minmax", (0.0, 1.0), False, False, lambda a, b, c, fn=fn: fn(a, b))
               for name, fn in (("mean_abs_difference", mean_abs_difference),
                                ("max_abs_difference", max_abs_difference))}
for _metric in DIFFERENCES.values():
    if _metric.name not in METRICS:
        register_metric(_metric)


def judge(v: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """The input invariance verdict per (method, metric) at the judged stage: pass (invariant) when the mean's
    interval lies within ``tolerance`` of identical maps, fail when beyond it, else inconclusive. Identical maps
    score 0 on ``mean_abs_difference`` and ``max_abs_difference`` and 1 on a similarity."""
    v = v.copy()
    for i, r in v.iterrows():
        metric = METRICS.get(r.metric)
        similarity = metric is None or metric.higher_is_more_similar
        if metric is not None and not similarity and r.metric not in DIFFERENCES:
            continue  # a score of change (entropy_change): no verdict, as in the other tests
        level = 1.0 - tolerance if similarity else tolerance
        lo, hi = (r.ci_low, r.ci_high) if np.isfinite(r.ci_low) else (r["mean"], r["mean"])
        if not np.isfinite(r["mean"]):
            outcome, why = "inconclusive", "no image scored"
        elif (lo >= level) if similarity else (hi <= level):
            outcome = "pass"
            why = f"the maps stay within {tolerance:g} of identical (interval {'above' if similarity else 'below'} " \
                  f"{level:g}): invariant"
        elif (hi < level) if similarity else (lo > level):
            outcome = "fail"
            why = f"the maps change with the shift (interval {'below' if similarity else 'above'} {level:g})"
        else:
            outcome, why = "inconclusive", f"the interval contains {level:g}"
        v.loc[i, ["verdict", "level", "why"]] = [outcome, level, why]
    return v
