"""Analysis of one run, as its report and the comparative report read it: summaries with bootstrap intervals,
the calibration band, the fair null, and the verdict per method and metric at the judged stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from benchmark import rng
from benchmark.checks import TESTS
from benchmark.config import VerdictConfig
from benchmark.report.style import is_similarity
from benchmark.report.stats import bands, judged_stage, paired_difference, summarize, verdicts

CONTROL_EXPECTED = {"edge": "fail", "noise": "pass", "idf": "fail"}


@dataclass
class Analysis:
    """Everything the tables and figures of one run read."""

    summary: pd.DataFrame  # summarize() rows
    bands: dict[str, tuple[float, float]]
    stage: Optional[int]  # the stage the verdict reads
    verdicts: pd.DataFrame
    layers: list[str]
    methods: list[str]
    metrics: list[str]
    # summarize() rows of null.parquet (the fair null: two independently randomized models), None without one.
    null: Optional[pd.DataFrame] = None


def analyze(scores: pd.DataFrame, calibration: Optional[pd.DataFrame], meta: dict[str, Any],
            rule: VerdictConfig, null: Optional[pd.DataFrame] = None) -> Analysis:
    seed = int(meta.get("seed", 0))
    summary = summarize(scores, rule.confidence, rule.n_boot, seed=seed)
    # the null's bootstrap draws from generators of its own (the groups' keys are the scores')
    has_null = null is not None and len(null) > 0
    null_summary = summarize(null, rule.confidence, rule.n_boot, seed=rng.derive_seed(seed, "null")) if has_null else None
    difference = (summarize(paired_difference(scores, null), rule.confidence, rule.n_boot,
                            seed=rng.derive_seed(seed, "null_difference")) if has_null else None)
    metrics = list(dict.fromkeys(scores.metric))
    b = bands(calibration, metrics, rule.band_coverage, getattr(rule, "band", "items"), seed)
    stage = judged_stage(pd.DataFrame(meta["stages"]), rule.stage)
    judged = no_verdict_unless_similarity(verdicts(summary, b, rule, stage, null_summary, difference))
    judge = getattr(TESTS.get(meta.get("test")), "judge", None)  # a test with its own rule (input invariance)
    if judge is not None:
        judged = judge(judged, meta)
    return Analysis(summary, b, stage, judged, [s["layer"] for s in meta["stages"]], list(dict.fromkeys(scores.method)),
                    metrics, null_summary)


# The verdict of a metric that is no similarity (not "n/a", which CSV readers take for a missing value).
NO_VERDICT = "not_applicable"
NOT_A_SIMILARITY = ("{metric} is no similarity (higher: the maps changed more), so the similarity-based "
                    "verdict rule does not apply; read its value")


def no_verdict_unless_similarity(v: pd.DataFrame) -> pd.DataFrame:
    """Verdict ``not_applicable`` for the metrics that are no similarity (``entropy_change``): the rule reads a similarity,
    and would call a large change a failure."""
    other = v.metric.map(lambda m: not is_similarity(m)) if len(v) else pd.Series([], dtype=bool)
    if other.any():
        v = v.copy()
        v.loc[other, "verdict"] = NO_VERDICT
        v.loc[other, "level"] = np.nan
        v.loc[other, "why"] = [NOT_A_SIMILARITY.format(metric=m) for m in v.metric[other]]
    return v


def expected_controls(test: str) -> dict[str, str]:
    """Control -> the verdict it should get in ``test``: the test's own (``Check.expected_controls``), else the model
    tests' (``CONTROL_EXPECTED``: edge fail, noise pass)."""
    return getattr(TESTS.get(test), "expected_controls", None) or CONTROL_EXPECTED


def read_calibration(run_dir: Path) -> Optional[pd.DataFrame]:
    path = Path(run_dir) / "calibration.parquet"
    return pd.read_parquet(path) if path.exists() else None


def read_null(run_dir: Path) -> Optional[pd.DataFrame]:
    """null.parquet (the fair null), None where the run has none (``randomization.fair_null=false``, other tests)."""
    path = Path(run_dir) / "null.parquet"
    return pd.read_parquet(path) if path.exists() else None
