"""The paper's values (``paper_values.yaml``, cited there) side by side with a run's."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmark.checks import report_text_of


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


def bar_values(text: Any, model: str) -> dict[str, float] | None:
    """The paper's MNIST bar-chart values of ``model`` for a test whose report text names that finding, else None."""
    return paper_values()["data_randomization"]["values"].get(model) if text.paper == "data_randomization" else None


def comparative_blocks(verdicts: pd.DataFrame, summary: pd.DataFrame) -> list[tuple]:
    """The comparative report's "Beside the paper": the cascade's outcomes against the decided verdicts of every
    test whose report text names that finding, and the MNIST bars' values beside the data randomization runs'."""
    out: list[tuple] = [("h", 2, "Beside the paper"), ("p", paper_values()["citation"] + ".")]
    casc = verdicts[verdicts.test.isin(_tests_with_paper(verdicts, "cascading"))]
    if len(casc):
        rows = []
        for r in casc.itertuples():
            expected, finding = cascading_expectation(r.method, r.metric)
            if expected is None or r.verdict == "inconclusive":
                continue
            rows.append({"model": r.model, "data": r.data, "profile": r.profile, "variant": r.variant,
                         "method": r.method,
                         "metric": r.metric, "paper": expected, "agrees": r.verdict == expected})
        if rows:
            d = pd.DataFrame(rows)
            t = d.groupby(["model", "data", "profile", "variant", "method", "paper"], sort=False).agg(
                metrics=("metric", lambda m: ", ".join(dict.fromkeys(m))), sum=("agrees", "sum"),
                count=("agrees", "count")).reset_index()
            t["this suite"] = [f"{s} of {c} (metric, seed) verdicts agree" for s, c in zip(t["sum"], t["count"])]
            out += [("p", "Cascading randomization: the paper's outcome (Inception v3 on ImageNet, judged by eye once the "
                          "higher layers were randomized) against this suite's decided verdicts, counted over metrics "
                          "the paper reports on and seeds."),
                    ("table", t.drop(columns=["sum", "count"]), False)]
    dr = summary[summary.test.isin(_tests_with_paper(summary, "data_randomization"))] if len(summary) else summary
    if len(dr):
        comps = []
        for (model, data, seed), g in dr.groupby(["model", "data", "seed"], sort=False):
            c = data_randomization_comparison(g, model)
            if len(c):
                comps.append(c.assign(model=model, data=data, seed=seed))
        if comps:
            c = pd.concat(comps, ignore_index=True)
            cols = ["model", "data", "seed"] + [k for k in c.columns if k not in ("model", "data", "seed")]
            out += [("p", "Data randomization: ABS Spearman of the true- and random-label models' maps beside the "
                          "values read off the paper's MNIST bar charts (+-0.05)."), ("table", c[cols], False)]
    return out


def _tests_with_paper(table: pd.DataFrame, finding: str) -> list[str]:
    """The tests of ``table`` whose report text sets ``finding`` of the paper beside their runs."""
    return [t for t in table.test.unique() if report_text_of(t, {}).paper == finding]
