"""The paper's values (``paper_values.yaml``, cited there) side by side with a run's."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import yaml


@lru_cache(maxsize=1)
def paper_values() -> dict[str, Any]:
    return yaml.safe_load(resources.files("benchmark.report").joinpath("paper_values.yaml").read_text())


def cascading_expectation(method: str, metric: str) -> tuple[str | None, str | None]:
    """(expected outcome, the paper's finding) for the cascading test, or (None, None) where it says nothing."""
    entry = paper_values()["cascading"].get(method)
    if not entry:
        return None, None
    outcome = entry.get(metric, entry.get("*"))
    return outcome, entry["finding"] if outcome else None


def cascading_comparison(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per method the paper reports on: its finding, and per metric "paper outcome / this run's verdict"."""
    rows = []
    for method, g in verdicts.groupby("method", sort=False):
        row: dict[str, Any] = {"method": method}
        agree = n = 0
        for v in g.itertuples():
            expected, finding = cascading_expectation(method, v.metric)
            if expected is None:
                continue
            row["paper's finding (Inception v3)"] = finding
            row[v.metric] = f"{v.verdict} (paper: {expected})"
            if v.verdict != "inconclusive":
                n += 1
                agree += v.verdict == expected
        if len(row) > 1:
            row["agreement"] = f"{agree} of {n} decided metrics agree"
            rows.append(row)
    return pd.DataFrame(rows).fillna("")  # "": the paper does not report that metric


def data_randomization_comparison(summary: pd.DataFrame, model: str) -> pd.DataFrame:
    """This run's ABS Spearman (true- vs random-label model) beside the value read off the paper's charts."""
    dr = paper_values()["data_randomization"]
    values = dr["values"].get(model, {})
    metric, err = dr["metric"], dr["reading_error"]
    d = summary[(summary.metric == metric) & (summary.stage == 1)]
    rows = []
    for r in d.itertuples():
        paper = values.get(r.method)
        if paper is None:
            continue
        inside = r.ci_low - err <= paper <= r.ci_high + err
        rows.append({"method": r.method, f"this run: {metric} [95% CI]": _fmt(r.mean, r.ci_low, r.ci_high),
                     f"paper ({dr['data']}, +-{err})": f"{paper:.2f}", "difference": r.mean - paper,
                     "tied values": r.tie_fraction,
                     "vs paper": "agrees" if inside else "disagrees"})
    return pd.DataFrame(rows)


def _fmt(mean: float, lo: float, hi: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.2f} [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else f"{mean:.2f}"
