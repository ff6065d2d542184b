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


# A null at or above this is the metric's maximum: two independently randomized models give the same maps.
NULL_AT_MAXIMUM = 1.0 - 1e-6


def _row(g: Optional[pd.DataFrame], stage: Optional[int]) -> Optional[pd.Series]:
    if g is None or stage is None:
        return None
    hit = g[g.stage == stage]
    return hit.iloc[0] if len(hit) else None


def fell_toward_null(mean: float, null_mean: float) -> float:
    """How far the similarity fell from 1 (a map that ignores the model, the edge control) toward the null's level:
    (1 - mean) / (1 - null mean). 0: unchanged; 1: as low as two independently randomized models' maps; above 1:
    lower still. NaN where the null is at the metric's maximum."""
    if not (np.isfinite(mean) and np.isfinite(null_mean)) or null_mean >= NULL_AT_MAXIMUM:
        return float("nan")
    return float((1.0 - mean) / (1.0 - null_mean))


def _with_rule(rule: VerdictConfig, kind: VerdictRule) -> VerdictConfig:
    """``rule`` with another ``rule.rule`` (the interval rule the null and its fallback reuse)."""
    return VerdictConfig(rule=kind, stage=rule.stage, threshold=rule.threshold, confidence=rule.confidence,
                         n_boot=rule.n_boot, band_coverage=rule.band_coverage, band=getattr(rule, "band", "items"))


def paired_difference(scores: pd.DataFrame, null: pd.DataFrame) -> pd.DataFrame:
    """Per stage, method, metric and image: the score minus the null's score of the same image (rows of both)."""
    keys = ["test", "stage", "layer", "method", "metric", "image"]
    merged = scores[keys + ["value", "nan_reason"]].merge(
        null[keys + ["value", "nan_reason"]], on=keys, suffixes=("", "_null"))
    merged["value"] = merged["value"] - merged["value_null"]
    merged["nan_reason"] = merged["nan_reason"].fillna(merged["nan_reason_null"])
    merged["tie_fraction"] = np.nan
    return merged[keys + ["value", "nan_reason", "tie_fraction"]]


def _null_verdict(row: Optional[pd.Series], null_row: pd.Series, diff_row: Optional[pd.Series]) -> tuple[float, Verdict]:
    """The random_null rule on the paired difference (similarity minus null, per image) and its interval."""
    level = float(null_row["mean"])
    if np.isfinite(level) and level >= NULL_AT_MAXIMUM:
        return level, Verdict("fail", f"two independently randomized models give the same maps (null {level:.3f}): "
                                      "the maps do not depend on the parameters")
    if row is None or diff_row is None:
        return level, Verdict("inconclusive", "no scores at this stage")
    n_ok = diff_row.n_images - diff_row.n_nan
    if n_ok < MIN_IMAGES or n_ok < diff_row.n_images / 2:
        return level, Verdict("inconclusive", f"only {n_ok} of {diff_row.n_images} images scored "
                                              f"({diff_row.nan_reasons})")
    what = (f"similarity minus null, per image: {diff_row['mean']:+.3f} [{diff_row.ci_low:+.3f}, "
            f"{diff_row.ci_high:+.3f}]")
    if diff_row.ci_low > 0:
        return level, Verdict("fail", f"{what}: above the null")
    return level, Verdict("pass", f"{what}: not above the null")


def verdicts(summary: pd.DataFrame, band_by_metric: dict[str, tuple[float, float]], rule: VerdictConfig,
             stage: Optional[int], null: Optional[pd.DataFrame] = None,
             null_difference: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per (method, metric) of one run: the judged stage's numbers, the level, the verdict.

    ``null``: ``summarize`` rows of the run's null.parquet (the fair null); its judged stage's mean and interval,
    and how far the similarity fell toward it (``fell_toward_null``), are columns of every row under every rule;
    ``null_difference``: ``summarize`` rows of ``paired_difference``, which ``verdict.rule=random_null`` judges
    (a run without a null: against the calibration band).
    """
    out = []
    kind = VerdictRule(rule.rule)
    null_groups = ({k: g for k, g in null.groupby(["method", "metric"], sort=False)}
                   if null is not None and len(null) else {})
    diff_groups = ({k: g for k, g in null_difference.groupby(["method", "metric"], sort=False)}
                   if null_difference is not None and len(null_difference) else {})
    for (method, metric), g in summary.groupby(["method", "metric"], sort=False):
        row = _row(g, stage)
        null_row = _row(null_groups.get((method, metric)), stage)
        band_rule = kind == VerdictRule.calibration_band or (kind == VerdictRule.random_null and null_row is None)
        level = band_by_metric.get(metric, (np.nan, np.nan))[1] if band_rule else rule.threshold
        if kind == VerdictRule.random_null and null_row is not None:
            level, v = _null_verdict(row, null_row, _row(diff_groups.get((method, metric)), stage))
        elif band_rule and np.isfinite(level) and level >= 1.0:
            # unrelated maps already reach the metric's maximum (top-1 of short sentences): it separates nothing
            v = Verdict("inconclusive", f"the band of unrelated maps reaches {level:.3f}, the metric's maximum")
        else:
            v = decide(row, level, rule if kind != VerdictRule.random_null
                       else _with_rule(rule, VerdictRule.calibration_band))
            if kind == VerdictRule.random_null:
                v = Verdict(v.outcome, f"{v.reason} (no null in this run: the calibration band's upper edge)")
        mean = np.nan if row is None else row["mean"]
        null_mean = np.nan if null_row is None else null_row["mean"]
        out.append({"method": method, "metric": metric, "stage": stage,
                    "layer": None if row is None else row.layer,
                    "mean": mean,
                    "ci_low": np.nan if row is None else row.ci_low,
                    "ci_high": np.nan if row is None else row.ci_high,
                    "level": level, "verdict": v.outcome, "why": v.reason,
                    "null_mean": null_mean,
                    "null_ci_low": np.nan if null_row is None else null_row.ci_low,
                    "null_ci_high": np.nan if null_row is None else null_row.ci_high,
                    "fell_toward_null": fell_toward_null(mean, null_mean)})
    return pd.DataFrame(out)


def rule_text(rule: VerdictConfig, layer: Optional[str] = None) -> str:
    """The rule in one sentence, as the reports print it beside the verdicts."""
    pct = f"{rule.confidence:.0%}"
    where = {"last": "the last stage (every unit randomized; for data randomization, the random-label model)",
             "first": "the first randomized stage"}.get(rule.stage, f"stage {rule.stage!r}")
    if layer is not None:
        where += f" (here: {layer})"
    if VerdictRule(rule.rule) == VerdictRule.random_null:
        return (f"Rule `random_null`: at {where}, per image, the similarity of the trained and the randomized model's "
                "maps minus the fair null: the similarity of the maps of two independently randomized models (the "
                "stage's units drawn twice, the second time from generators derived from the seed and \"null\"), what "
                f"the input and the architecture alone give. The {pct} bootstrap interval ({rule.n_boot} resamples) of "
                "the mean difference decides. fail: its lower end is above 0 (the trained model's map is closer to the "
                "randomized model's than two randomized models' maps are to each other), or the null is at the "
                "metric's maximum (the map does not depend on the parameters at all, as the edge control); pass: "
                "otherwise (the map is not more similar "
                "to the trained model's than two random models' maps are to each other); inconclusive: fewer than "
                f"{MIN_IMAGES} images (or fewer than half) scored. A pass says \"not shown above the null\": read the "
                "interval for its power. \"fell\" is (1 - similarity) / (1 - null): 0 unchanged, 1 as far as two "
                "random models. A test without a null (data randomization, random logit) reads the calibration "
                "band's upper edge instead.")
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


def fmt_ci(mean: float, lo: float, hi: float, digits: int = 2) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(lo) or lo == hi:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
