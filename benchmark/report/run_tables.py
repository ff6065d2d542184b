"""Tables and facts of one run's report: summary.csv, verdicts, similarity per stage, the fair null,
calibration, honesty, the model's accuracy and the versions used.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from benchmark.report.analysis import CONTROL_EXPECTED, Analysis
from benchmark.report.stats import fmt_ci, nan_reasons_text
from benchmark.report.style import metric_label

VERSION_KEYS = ("python", "torch", "torchvision", "numpy", "scipy", "scikit-image", "captum")


def summary_csv(a: Analysis, meta: dict[str, Any]) -> pd.DataFrame:
    """summary.csv: one row per stage, method and metric, with the band and (on the judged stage) the verdict."""
    s = a.summary.copy()
    s["band_low"] = s.metric.map(lambda m: a.bands[m][0])
    s["band_high"] = s.metric.map(lambda m: a.bands[m][1])
    v = a.verdicts.set_index(["method", "metric"])
    judged = s.stage == a.stage
    s["verdict"] = [v.loc[(m, k), "verdict"] if j else "" for m, k, j in zip(s.method, s.metric, judged)]
    s["verdict_level"] = [v.loc[(m, k), "level"] if j else np.nan for m, k, j in zip(s.method, s.metric, judged)]
    if a.null is not None:  # the fair null beside every randomized stage
        n = a.null.set_index(["stage", "method", "metric"])[["mean", "ci_low", "ci_high"]]
        n.columns = ["null_mean", "null_ci_low", "null_ci_high"]
        s = s.join(n, on=["stage", "method", "metric"])
    for col, val in (("run_id", meta["run_id"]), ("model", meta["model"]["name"]), ("data", meta["data"]["name"]),
                     ("profile", meta["profile"]), ("seed", meta["seed"])):
        s[col] = val
    return s


def verdict_table(a: Analysis, controls: Optional[dict[str, str]] = None) -> pd.DataFrame:
    """Rows methods, columns metrics: "verdict · mean [95% CI]" at the judged stage; ``controls``: the verdict each
    control should get (None: ``CONTROL_EXPECTED``)."""
    expected = CONTROL_EXPECTED if controls is None else controls
    v = a.verdicts.copy()
    v["cell"] = [f"{r.verdict} · {fmt_ci(r.mean, r.ci_low, r.ci_high)}" for r in v.itertuples()]
    t = v.pivot(index="method", columns="metric", values="cell").reindex(index=a.methods, columns=a.metrics)
    t.columns = [metric_label(m) for m in t.columns]
    t.index = [f"{m} (control; expected {expected[m]})" if m in expected else m for m in t.index]
    return t


def stage_table(a: Analysis, metric: str, null: bool = False) -> pd.DataFrame:
    """Rows methods, columns stages: mean [95% CI] of the scores (``null``: of the fair null; stage 0 empty)."""
    summary = a.null if null else a.summary
    d = summary[summary.metric == metric]
    cells = {(r.method, r.stage): fmt_ci(r.mean, r.ci_low, r.ci_high) for r in d.itertuples()}
    rows = {m: [cells.get((m, s), "") for s in range(len(a.layers))] for m in a.methods}
    return pd.DataFrame.from_dict(rows, orient="index", columns=a.layers)


def null_table(a: Analysis) -> pd.DataFrame:
    """Rows methods, columns metrics at the judged stage: "null mean [95% CI] · fell f" (``fell_toward_null``)."""
    v = a.verdicts.copy()
    v["cell"] = [f"{fmt_ci(r.null_mean, r.null_ci_low, r.null_ci_high)} · fell {r.fell_toward_null:.2f}"
                 if np.isfinite(r.null_mean) else "n/a" for r in v.itertuples()]
    t = v.pivot(index="method", columns="metric", values="cell").reindex(index=a.methods, columns=a.metrics)
    t.columns = [metric_label(m) for m in t.columns]
    return t


def calibration_table(a: Analysis, calibration: Optional[pd.DataFrame]) -> pd.DataFrame:
    if calibration is None:
        return pd.DataFrame()
    rows = []
    for metric in a.metrics:
        c = calibration[calibration.metric == metric]
        nn = c[c.kind == "noise_vs_noise"].value
        mn = c[c.kind == "map_vs_noise"].value
        rows.append({"metric": metric_label(metric), "band low": a.bands[metric][0], "band high": a.bands[metric][1],
                     "noise vs noise: mean": nn.mean(), "map vs noise: mean": mn.mean(),
                     "map vs noise: most similar method": (c[c.kind == "map_vs_noise"].groupby("method").value.mean()
                                                           .idxmax() if mn.notna().any() else ""),
                     "pairs": int(c.value.notna().sum()), "NaN": int(c.value.isna().sum())})
    return pd.DataFrame(rows)


def honesty_table(scores: pd.DataFrame, a: Analysis) -> pd.DataFrame:
    """Per method: images, NaN scores with their reasons, tied-value shares (randomized stages only)."""
    later = scores[scores.stage > 0]
    rows = []
    for m in a.methods:
        d = later[later.method == m]
        ties = d[d.metric.isin(["spearman_abs", "spearman"])].groupby("metric").tie_fraction.mean()
        rows.append({"method": m, "images": d.image.nunique(), "scores": len(d), "NaN": int(d.value.isna().sum()),
                     "NaN reasons": nan_reasons_text(d.nan_reason) or "-",
                     "tied values, ABS": ties.get("spearman_abs", np.nan),
                     "tied values, no-ABS": ties.get("spearman", np.nan)})
    return pd.DataFrame(rows)


def _acc(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def model_facts(meta: dict[str, Any]) -> list[tuple[str, str]]:
    model = meta["model"]
    out = [("model", f"{model['name']}: held-out accuracy {_acc(model.get('eval_accuracy'))}, "
                     f"train accuracy {_acc(model.get('train_accuracy'))}")]
    if "random_label_model" in meta:
        r = meta["random_label_model"]
        out.append(("random-label model", f"train accuracy on its permuted labels {r['train_accuracy']:.4f} (gate "
                                          f"{r['memorization_gate']}, {r['epochs'] or 'cached'} epochs), held-out "
                                          f"accuracy on true labels {r['eval_accuracy']:.4f}"))
    return out


def versions_text(meta: dict[str, Any]) -> str:
    v = meta.get("versions", {})
    return ", ".join(f"{k} {v[k]}" for k in VERSION_KEYS if v.get(k))
