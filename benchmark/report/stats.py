"""Summaries behind every table and figure: mean and bootstrap interval over images, calibration
band, verdicts.

Every number a report shows comes from ``summarize`` (also written as ``summary.csv``), so a
figure, a table and the CSV agree, and each traces back to ``scores.parquet`` by a group-by
over (test, stage, method, metric).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from benchmark import rng
from benchmark.calibration import band
from benchmark.config import VerdictConfig, VerdictRule

GROUP = ["test", "stage", "layer", "method", "metric"]
# A verdict needs at least this many scored images, and at least half of the images scored.
MIN_IMAGES = 3


def nan_reasons_text(reasons: pd.Series) -> str:
    """``reason: count; ...`` of the non-null entries of a ``nan_reason`` column, most frequent first."""
    return "; ".join(f"{r}: {n}" for r, n in reasons.dropna().value_counts().items())


def mean_ci(values: np.ndarray, confidence: float, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (scipy.stats.bootstrap); (nan, nan) below 2 values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    if np.ptp(values) == 0:  # every resample has the same mean
        return float(values[0]), float(values[0])
    res = bootstrap((values,), np.mean, n_resamples=n_boot, confidence_level=confidence, method="percentile",
                    vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize(scores: pd.DataFrame, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (test, stage, layer, method, metric): images, NaN count, mean, sd, interval, ties.

    The bootstrap of each group draws from its own generator, derived from ``seed`` and the
    group's key, so a summary does not depend on which other groups exist.
    """
    rows = []
    for key, g in scores.groupby(GROUP, sort=False, observed=True):
        finite = g.value.dropna().to_numpy()
        group_seed = rng.derive_seed(seed, "bootstrap", *key)
        lo, hi = mean_ci(finite, confidence, n_boot, group_seed)
        rows.append({
            **dict(zip(GROUP, key)), "n_images": len(g), "n_nan": int(g.value.isna().sum()),
            "nan_reasons": nan_reasons_text(g.nan_reason),
            "mean": float(finite.mean()) if len(finite) else np.nan,
            "sd": float(finite.std(ddof=1)) if len(finite) > 1 else np.nan,
            "ci_low": lo, "ci_high": hi,
            "tie_fraction": float(g.tie_fraction.mean()) if g.tie_fraction.notna().any() else np.nan,
        })
    return pd.DataFrame(rows)


def bands(calibration: Optional[pd.DataFrame], metrics: list[str], coverage: float, of: str = "items",
          seed: int = 0) -> dict[str, tuple[float, float]]:
    """metric -> (low, high) of the calibration band (``of``: items or mean, ``benchmark.calibration.band``); (nan,
    nan) where the run has no calibration."""
    if calibration is None or calibration.empty:
        return {m: (np.nan, np.nan) for m in metrics}
    return {m: band(calibration, m, coverage, of, seed) for m in metrics}


def judged_stage(stages: pd.DataFrame, stage: str) -> Optional[int]:
    """The stage index the rule reads: ``last``, ``first`` or a layer name; None if the run has no such stage.

    ``stages``: rows with ``stage`` and ``layer``, stage 0 the reference.
    """
    later = stages[stages.stage > 0]
    if later.empty:
        return None
    if stage == "last":
        return int(later.stage.max())
    if stage == "first":
        return int(later.stage.min())
    hit = later[later.layer.astype(str) == stage]
    return int(hit.stage.iloc[0]) if len(hit) else None


@dataclass
class Verdict:
    outcome: str  # pass | fail | inconclusive
    reason: str


def decide(row: Optional[pd.Series], level: float, rule: VerdictConfig) -> Verdict:
    """pass: interval's upper end <= level; fail: lower end > level; else inconclusive (with the reason)."""
    if row is None:
        return Verdict("inconclusive", f"no stage {rule.stage!r} in this run")
    n_ok = row.n_images - row.n_nan
    if n_ok < MIN_IMAGES or n_ok < row.n_images / 2:
        return Verdict("inconclusive", f"only {n_ok} of {row.n_images} images scored ({row.nan_reasons})")
    if not np.isfinite(level):
        return Verdict("inconclusive", "this run has no calibration band (calibration.parquet missing)")
    if VerdictRule(rule.rule) == VerdictRule.calibration_band and getattr(rule, "band", "items") == "mean":
        # the band is already the spread of a mean of unrelated pairs: the run's mean is read against it
        if row["mean"] <= level:
            return Verdict("pass", f"mean {row['mean']:.3f} <= {level:.3f}, within the band of means of unrelated maps")
        return Verdict("fail", f"mean {row['mean']:.3f} > {level:.3f}, above the band of means of unrelated maps")
    if row.ci_high <= level:
        return Verdict("pass", f"upper end {row.ci_high:.3f} <= {level:.3f}")
    if row.ci_low > level:
        return Verdict("fail", f"lower end {row.ci_low:.3f} > {level:.3f}")
    return Verdict("inconclusive", f"interval [{row.ci_low:.3f}, {row.ci_high:.3f}] contains {level:.3f}")


def verdicts(summary: pd.DataFrame, band_by_metric: dict[str, tuple[float, float]], rule: VerdictConfig,
             stage: Optional[int]) -> pd.DataFrame:
    """One row per (method, metric) of one run: the judged stage's numbers, the level, the verdict."""
    out = []
    for (method, metric), g in summary.groupby(["method", "metric"], sort=False):
        row = None if stage is None else g[g.stage == stage]
        row = row.iloc[0] if row is not None and len(row) else None
        level = (band_by_metric.get(metric, (np.nan, np.nan))[1] if VerdictRule(rule.rule) == VerdictRule.calibration_band
                 else rule.threshold)
        if VerdictRule(rule.rule) == VerdictRule.calibration_band and np.isfinite(level) and level >= 1.0:
            # unrelated maps already reach the metric's maximum (top-1 of short sentences): it separates nothing
            v = Verdict("inconclusive", f"the band of unrelated maps reaches {level:.3f}, the metric's maximum")
        else:
            v = decide(row, level, rule)
        out.append({"method": method, "metric": metric, "stage": stage,
                    "layer": None if row is None else row.layer,
                    "mean": np.nan if row is None else row["mean"],
                    "ci_low": np.nan if row is None else row.ci_low,
                    "ci_high": np.nan if row is None else row.ci_high,
                    "level": level, "verdict": v.outcome, "why": v.reason})
    return pd.DataFrame(out)


def rule_text(rule: VerdictConfig, layer: Optional[str] = None) -> str:
    """The rule in one sentence, as the reports print it beside the verdicts."""
    pct = f"{rule.confidence:.0%}"
    where = {"last": "the last stage (every unit randomized; for data randomization, the random-label model)",
             "first": "the first randomized stage"}.get(rule.stage, f"stage {rule.stage!r}")
    if layer is not None:
        where += f" (here: {layer})"
    if VerdictRule(rule.rule) == VerdictRule.calibration_band:
        mean_band = getattr(rule, "band", "items") == "mean"
        of = "," if not mean_band else " averaged over as many pairs as the run has inputs (bootstrap),"
        level = (f"the upper edge of the calibration band (the central {rule.band_coverage:.0%} of the similarities "
                 f"of unrelated maps{of} noise vs noise and each map vs noise, measured in the run)")
    else:
        level = f"the fixed similarity {rule.threshold:g}"
    if VerdictRule(rule.rule) == VerdictRule.calibration_band and mean_band:
        return (f"Rule `calibration_band` (`verdict.band=mean`): at {where}, the mean similarity over inputs is compared "
                f"with {level}. pass: the mean is at or below that level (as low as a mean over unrelated maps can be "
                "by chance); fail: it is above it; inconclusive: fewer than "
                f"{MIN_IMAGES} inputs (or fewer than half) were scored. The {pct} bootstrap intervals are shown beside it.")
    return (f"Rule `{rule.rule.value if hasattr(rule.rule, 'value') else rule.rule}`: at {where}, the {pct} "
            f"bootstrap interval ({rule.n_boot} resamples) of the mean similarity over images is compared with "
            f"{level}. pass: its upper end is at or below that level (the maps changed that much); fail: its lower "
            "end is above it (the maps stayed more similar); inconclusive: the interval "
            f"contains the level, or fewer than {MIN_IMAGES} images (or fewer than half) were scored.")


def check_verdict(rule: VerdictConfig, key: str = "verdict") -> None:
    """Bad verdict settings fail at start with the key, the value and the fix."""
    VerdictRule(rule.rule)
    if not 0.5 <= rule.confidence < 1.0:
        raise ValueError(f"{key}.confidence={rule.confidence} must lie in [0.5, 1), e.g. 0.95")
    if not 0.5 <= rule.band_coverage < 1.0:
        raise ValueError(f"{key}.band_coverage={rule.band_coverage} must lie in [0.5, 1), e.g. 0.95")
    if rule.band not in ("items", "mean"):
        raise ValueError(f"{key}.band={rule.band!r} must be items (single unrelated pairs) or mean (the mean of as many "
                         "unrelated pairs as the run has inputs)")
    if not isinstance(rule.n_boot, int) or rule.n_boot < 100:
        raise ValueError(f"{key}.n_boot={rule.n_boot!r} must be a whole number of at least 100, e.g. 2000")
    if not rule.stage:
        raise ValueError(f"{key}.stage={rule.stage!r} must be 'last', 'first' or a stage's layer name, e.g. fc1")
    if not -1.0 <= rule.threshold <= 1.0:
        raise ValueError(f"{key}.threshold={rule.threshold} must lie in [-1, 1] (a similarity), e.g. 0.5")
