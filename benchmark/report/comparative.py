"""One report over every finished run under a results root (a sweep, or several experiments).

Built on ``benchmark.collect``: finished runs are read, every other run folder is listed as
skipped with its reason. Each run is analysed exactly as its own report does (same summaries,
same calibration band, same verdict rule, here the report's rule), then laid out as methods x
tests x models x seeds.

Output in ``out`` (default ``<root>/report``): ``report.md``, ``report.html`` (self-contained),
``summary.csv`` (every run's summary rows), ``verdicts.csv``, ``figures/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from benchmark import store
from benchmark.checks import report_text_of
from benchmark.collect import Collection, collect
from benchmark.config import NON_RESULT_KEYS, VerdictConfig
from benchmark.methods import CONTROLS
from benchmark.report import figures as F
from benchmark.report import paper
from benchmark.report.render import markdown, to_html
from benchmark.report.analysis import Analysis, analyze, expected_controls, read_calibration, read_null
from benchmark.report.run_tables import summary_csv, versions_text
from benchmark.report.stats import fmt_ci, nan_reasons_text, rule_text, summarize
from benchmark.report.style import metric_label

log = logging.getLogger(__name__)

GROUP = ["test", "model", "data", "profile", "variant"]


def _group_name(key: tuple) -> str:
    test, model, data, profile, variant = key
    return f"{test} · {model} · {data} · profile {profile} · variant {variant}"


def variant(config: dict[str, Any], meta: dict[str, Any]) -> str:
    """Runs that differ only in their seed share a variant: a hash of the config without the seed, plus a hint.

    Seeds of one variant are laid side by side; runs with other settings (images, methods,
    method settings, training) get their own rows.
    """
    plain = {k: v for k, v in config.items() if k not in NON_RESULT_KEYS | {"seed"}}
    digest = hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{digest} ({meta['images']['n']} images)"


def _provenance(run: Any, root: Path, a: Analysis) -> dict[str, Any]:
    meta = run.meta
    status = store.read_status(run.run_dir) or {}
    return {
        "run_id": run.run_id, "test": meta["test"], "model": meta["model"]["name"], "data": meta["data"]["name"],
        "profile": meta["profile"], "variant": variant(run.config, meta), "seed": meta["seed"],
        "images": meta["images"]["n"],
        "methods": len(a.methods), "stages": len(a.layers) - 1,
        "held-out accuracy": meta["model"]["eval_accuracy"],
        "finished (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime(status["finished"])) if "finished" in status
        else "",
        "time (s)": meta.get("timings", {}).get("total_s", np.nan),
        "calibration": "yes" if (run.run_dir / "calibration.parquet").exists() else "no",
        "folder": str(run.run_dir.relative_to(root)) if run.run_dir.is_relative_to(root) else str(run.run_dir),
    }


def write_comparative_report(root: Path, out: Optional[Path] = None, rule: Optional[VerdictConfig] = None,
                             metric: str = "spearman_abs") -> Path:
    """Collect, analyse and render; returns the folder holding report.html."""
    root = Path(root)
    rule = rule or VerdictConfig()
    col = collect(root)
    out = Path(out) if out is not None else root / "report"
    if not col.runs and not col.skipped:
        raise ValueError(f"root={str(root)!r} holds no run folders (no status.json below it); run an experiment "
                         "first, e.g. python experiments/model_randomization.py, or point root at its results")
    _check_stage(rule, col, root)
    analyses, summary, verdicts, prov = _analyse_runs(col, root, rule)
    store.atomic_write(out / "summary.csv", lambda p: summary.to_csv(p, index=False))
    store.atomic_write(out / "verdicts.csv", lambda p: verdicts.to_csv(p, index=False))

    blocks = _head_blocks(root, col, summary, metric, rule)
    if len(verdicts):
        blocks += _result_blocks(col, summary, verdicts, analyses, metric, rule, out / "figures")
    blocks += _provenance_blocks(root, col, prov)
    store.write_text(out / "report.md", markdown(blocks))
    store.write_text(out / "report.html", to_html(blocks, f"Sanity checks across runs: {root}"))
    log.info("comparative report of %d runs (%d skipped): %s", len(col.runs), len(col.skipped), out / "report.html")
    return out


def _check_stage(rule: VerdictConfig, col: Collection, root: Path) -> None:
    """A ``verdict.stage`` named by its layer must be a stage of the runs."""
    if rule.stage not in ("last", "first") and col.runs:
        layers = sorted({str(x) for x in col.scores.layer.unique()} - {"original", "true_labels"})
        if rule.stage not in layers:
            raise ValueError(f"verdict.stage={rule.stage!r} is no stage of the runs under root={str(root)!r}; use "
                             f"last, first or one of {layers}")


def _analyse_runs(col: Collection, root: Path, rule: VerdictConfig) -> tuple[dict[str, Analysis], pd.DataFrame, pd.DataFrame,
                                                                        list[dict[str, Any]]]:
    """Every finished run analysed as its own report does: analyses by run id, summary rows, verdicts, provenance."""
    analyses: dict[str, Analysis] = {}
    summaries, verdict_rows, prov = [], [], []
    for run in col.runs:
        scores = col.scores[col.scores.run_id == run.run_id]
        a = analyze(scores, read_calibration(run.run_dir), run.meta, rule, read_null(run.run_dir))
        analyses[run.run_id] = a
        var = variant(run.config, run.meta)
        summaries.append(summary_csv(a, run.meta).assign(variant=var))
        v = a.verdicts.assign(run_id=run.run_id, test=run.meta["test"], model=run.meta["model"]["name"],
                              data=run.meta["data"]["name"], profile=run.meta["profile"], variant=var,
                              seed=run.meta["seed"])
        verdict_rows.append(v)
        prov.append(_provenance(run, root, a))
    summary = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()
    verdicts = pd.concat(verdict_rows, ignore_index=True) if verdict_rows else pd.DataFrame()
    return analyses, summary, verdicts, prov


def _head_blocks(root: Path, col: Collection, summary: pd.DataFrame, metric: str, rule: VerdictConfig) -> list[tuple]:
    """Title and facts: runs used and skipped, the metric of the tables, the verdict rule, when it was written."""
    return [("h", 1, f"Sanity checks across runs: {root}"), ("facts", [
        ("runs used", f"{len(col.runs)} finished runs ({summary.run_id.nunique() if len(summary) else 0} with scores)"),
        ("runs skipped", f"{len(col.skipped)} (failed or unfinished; listed below with the reason)"),
        ("metric of the cross-run tables", metric_label(metric) + " (every metric is in summary.csv and "
                                                                    "verdicts.csv)"),
        ("verdict rule", f"{rule.rule.value}, stage {rule.stage!r}"),
        ("written", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
    ])]


def _result_blocks(col: Collection, summary: pd.DataFrame, verdicts: pd.DataFrame, analyses: dict[str, Analysis],
                   metric: str, rule: VerdictConfig, figs_dir: Path) -> list[tuple]:
    """The verdict matrix, the paper's values, the figures, the models and the honesty table."""
    blocks: list[tuple] = [
        ("h", 2, "Verdicts: methods x tests x models x seeds"), ("p", rule_text(rule)),
        ("p", f"Cells: verdict · mean [95% interval] of {metric_label(metric)} at the judged stage; "
              "the last column says whether the seeds agree. Runs that differ in more than their seed "
              "(images, methods, settings) are separate variants (see the provenance table)."),
        ("table", _verdict_matrix(verdicts, metric), False)]
    blocks += paper.comparative_blocks(verdicts, summary)
    blocks += [("h", 2, "Figures")]
    runs_by_id = {r.run_id: r for r in col.runs}
    blocks += _figures(col.scores, summary, verdicts, analyses, runs_by_id, metric, rule, figs_dir)
    return blocks + [
        ("h", 2, "The models"),
        ("p", "Accuracy of every model used, and the change of the model's own output per stage "
              "(held-out accuracy; Spearman of the explained images' logits against the reference "
              "model's; share of changed predictions)."),
        ("table", _models_table(col.runs), False),
        ("table", _stages_table(col.runs), False),
        ("h", 2, "Honesty: NaN scores, tied values, images, seeds, versions, time"),
        ("table", _honesty_table(col.scores, col.runs), False)]


def _provenance_blocks(root: Path, col: Collection, prov: list[dict[str, Any]]) -> list[tuple]:
    """Provenance of every run used, their versions, and the runs skipped with the reason."""
    return [("h", 2, "Provenance of every run used"),
            ("table", pd.DataFrame(prov), False),
            ("p", "Versions per run: " + "; ".join(f"{r.run_id}: {versions_text(r.meta)}" for r in col.runs)
             if col.runs else "No finished runs."),
            ("h", 2, "Runs skipped"),
            ("table", pd.DataFrame([{"folder": str(s.run_dir.relative_to(root)), "state": s.state,
                                     "reason": s.reason} for s in col.skipped]), False)
            if col.skipped else ("p", "None: every run folder under the root is finished.")]


def _verdict_matrix(verdicts: pd.DataFrame, metric: str) -> pd.DataFrame:
    v = verdicts[verdicts.metric == metric].copy()
    v["cell"] = [f"{r.verdict} · {fmt_ci(r.mean, r.ci_low, r.ci_high)}" for r in v.itertuples()]
    v["seed"] = "seed " + v.seed.astype(str)
    keys = GROUP + ["method"]
    t = v.pivot_table(index=keys, columns="seed", values="cell", aggfunc="first", sort=False)
    agree = v.groupby(keys, sort=False).verdict.agg(
        lambda s: f"all {s.iloc[0]}" if s.nunique() == 1 else ", ".join(f"{k} {n}" for k, n in s.value_counts().items()))
    t["seeds agree?"] = agree
    t = t.reset_index().fillna("")
    t.columns.name = None
    expected = [expected_controls(test) for test in t.test]  # per the row's test (input invariance: pass)
    t["method"] = [f"{m} (control; expected {e[m]})" if m in e else m for m, e in zip(t.method, expected)]
    return t


def _figures(scores: pd.DataFrame, summary: pd.DataFrame, verdicts: pd.DataFrame, analyses: dict[str, Analysis],
             runs: dict[str, Any], metric: str, rule: VerdictConfig, figs_dir: Path) -> list[tuple]:
    blocks: list[tuple] = []
    for key, g in summary.groupby(GROUP, sort=False):
        name = "_".join(str(k) for k in key)
        run_ids = list(dict.fromkeys(g.run_id))
        a0 = analyses[run_ids[0]]
        lows = [analyses[r].bands.get(metric, (np.nan, np.nan))[0] for r in run_ids]
        highs = [analyses[r].bands.get(metric, (np.nan, np.nan))[1] for r in run_ids]
        band = (float(np.nanmin(lows)), float(np.nanmax(highs))) if np.isfinite(lows).any() else (np.nan, np.nan)
        seeds = sorted(int(x) for x in g.seed.unique())
        text = report_text_of(key[0], {})
        if text.figure == "bars":
            pooled = summarize(scores[scores.run_id.isin(run_ids)].assign(layer=lambda d: d.layer.astype(str)),
                               rule.confidence, rule.n_boot, seed=0)
            bands = {m: (np.nanmin([analyses[r].bands[m][0] for r in run_ids]),
                         np.nanmax([analyses[r].bands[m][1] for r in run_ids])) for m in a0.metrics}
            paper_vals = paper.bar_values(text, key[1])
            png = F.save_png(F.bars_figure(pooled, bands, paper_vals), figs_dir / f"{name}.png")
            cap = (f"{_group_name(key)}, seeds {seeds} pooled (mean over images and seeds, 95% bootstrap interval): "
                   "bars inside the gray band of unrelated maps (widest band over the runs) mean the maps changed"
                   + (" with the labels; diamonds are the paper's MNIST values." if paper_vals is not None else "."))
        else:
            gv = verdicts[(verdicts.metric == metric) & verdicts.run_id.isin(run_ids)]
            vm = {m: (s.iloc[0] if s.nunique() == 1 else "mixed") for m, s in gv.groupby("method").verdict}
            png = F.save_png(F.curves_figure(g, metric, a0.layers, band, vm, a0.stage, key[0], series="seed"),
                             figs_dir / f"{name}.png")
            cap = (f"{_group_name(key)}: {metric_label(metric)} per stage, one line per seed ({seeds}) with its 95% "
                   "interval over images: look for methods whose lines reach the gray band of unrelated maps (widest "
                   "band over the runs) and for seeds that disagree.")
        blocks.append(("figure", f"figures/{name}.png", cap, png))
    return blocks


def _models_table(runs: list[Any]) -> pd.DataFrame:
    rows = []
    for r in runs:
        m = r.meta["model"]
        row = {"run_id": r.run_id, "model": m["name"], "seed": r.meta["seed"], "train accuracy": m["train_accuracy"],
               "held-out accuracy": m["eval_accuracy"], "checkpoint": Path(str(m.get("checkpoint", ""))).name}
        if "random_label_model" in r.meta:
            rl = r.meta["random_label_model"]
            row.update({"random-label: train accuracy (permuted labels)": rl["train_accuracy"],
                        "random-label: held-out accuracy": rl["eval_accuracy"], "random-label: epochs": rl["epochs"]})
        rows.append(row)
    return pd.DataFrame(rows)


def _stages_table(runs: list[Any]) -> pd.DataFrame:
    rows = []
    for r in runs:
        for s in r.meta["stages"]:
            rows.append({"run_id": r.run_id, "stage": s["stage"], "layer": s["layer"], "accuracy": s["accuracy"],
                         "logit Spearman": s["logit_spearman_mean"], "predictions changed": s["prediction_changed"]})
    return pd.DataFrame(rows)


def _honesty_table(scores: pd.DataFrame, runs: list[Any]) -> pd.DataFrame:
    rows = []
    for r in runs:
        d = scores[(scores.run_id == r.run_id) & (scores.stage > 0)]
        ties = d[d.metric == "spearman_abs"].tie_fraction.mean()
        rows.append({"run_id": r.run_id, "images": d.image.nunique(), "seed": r.meta["seed"],
                     "profile": r.meta["profile"], "scores": len(d), "NaN": int(d.value.isna().sum()),
                     "NaN reasons": nan_reasons_text(d.nan_reason) or "-",
                     "tied values, ABS (mean)": ties,
                     "controls": ", ".join(m for m in dict.fromkeys(d.method) if m in CONTROLS),
                     "torch": r.meta.get("versions", {}).get("torch"),
                     "time (s)": r.meta.get("timings", {}).get("total_s")})
    return pd.DataFrame(rows)
