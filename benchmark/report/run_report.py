"""Report of one run: verdicts, similarity curves or bars with calibration band and controls, grids
of maps, the model's own output, honesty columns, the paper's values beside the run's.

Writes ``summary.csv``, ``report.md`` (figures as PNG files under ``figures/``) and a
self-contained ``report.html`` (figures embedded) into the run folder. The analysis it reads lives in
``benchmark.report.analysis``, its tables in ``benchmark.report.run_tables``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from benchmark import store
from benchmark.checks import report_text_of
from benchmark.config import VerdictConfig
from benchmark.report import figures as F
from benchmark.report import paper
from benchmark.report.analysis import (NO_VERDICT, Analysis, analyze, expected_controls,
                                       read_calibration, read_null)
from benchmark.report.render import markdown, to_html
from benchmark.report.localization import localization_blocks, read_localization
from benchmark.report.run_tables import (calibration_table, honesty_table, model_facts, null_table,
                                         stage_table, summary_csv, verdict_table, versions_text)
from benchmark.report.stats import rule_text
from benchmark.report.style import metric_label


READING = ("How to read: pass means the method's maps moved at least to the rule's level when the model (or its "
           "labels) changed, as a method that explains the model must; fail means they stayed more similar; the "
           "controls show the rule works (edge ignores the model and must fail, noise is unrelated and must pass). "
           "A verdict is only as strict as its rule: the figures below show the numbers behind it, and another rule "
           "is one command away, e.g. `python experiments/report.py root=<this folder> verdict=threshold "
           "verdict.threshold=0.3`, or `verdict.stage=<layer>` to judge another stage.")


def write_run_report(run_dir: Path, df: pd.DataFrame, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                     n_figure_images: int = 3, verdict: Optional[VerdictConfig] = None) -> None:
    """summary.csv, report.md and report.html of one run folder (the same blocks rendered twice)."""
    run_dir = Path(run_dir)
    rule = verdict or VerdictConfig()
    calibration = read_calibration(run_dir)
    a = analyze(df, calibration, meta, rule, read_null(run_dir))
    store.atomic_write(run_dir / "summary.csv", lambda p: summary_csv(a, meta).to_csv(p, index=False))
    text = report_text_of(meta["test"], meta)
    n_fig = min(n_figure_images, len(arrays["images"]))
    summary_figs = _summary_figures(run_dir, a, meta, text)
    map_figs = [] if "tokens" in arrays else _map_figures(run_dir, a, arrays, text, n_fig)
    stages_df = pd.DataFrame(meta["stages"])[["stage", "layer", "accuracy", "logit_spearman_mean",
                                              "prediction_changed", "seconds"]]
    name = "figures/model_output.png"
    model_fig = (name, "The model's own output per stage: if accuracy and the logits' correlation drop, the model "
                 "did change, so maps that stay similar are insensitive to it.",
                 F.save_png(F.model_output_figure(stages_df, meta["test"]), run_dir / name))
    blocks = _head_blocks(a, meta, arrays, text, rule) + [("figure", *f) for f in summary_figs]
    blocks += _similarity_blocks(a, calibration, rule)
    blocks += localization_blocks(read_localization(run_dir), a.layers, a.methods, meta)
    blocks += [("h", 2, "Maps")] + [("figure", *f) for f in map_figs]
    if "tokens" in arrays:
        from benchmark.report.tokens import token_blocks

        blocks += [("p", "Tokens coloured by each stage's map (red positive, blue negative, scaled per map by its largest "
                         "|value|; gray: special tokens, never scored). Hover a token for its value. A method that "
                         "explains the model loses its pattern along a row as layers are randomized.")]
        blocks += token_blocks(arrays, a.methods, a.layers, n_fig)
    blocks += _model_blocks(df, a, stages_df, model_fig)
    store.write_text(run_dir / "report.md", markdown(blocks))
    store.write_text(run_dir / "report.html", to_html(blocks, meta["run_id"]))


Figure = tuple[str, str, bytes]  # (file, caption, png)


def _summary_figures(run_dir: Path, a: Analysis, meta: dict[str, Any], text: Any) -> list[Figure]:
    """The test's summary figure (``ReportText.figure``): one figure of bars, or one curve figure per metric."""
    if text.figure == "bars":
        paper_vals = paper.bar_values(text, meta["model"]["name"])
        vmap = {(r.method, r.metric): r.verdict for r in a.verdicts.itertuples() if r.verdict != NO_VERDICT}
        name = f"figures/{meta['test']}.png"
        png = F.save_png(F.bars_figure(a.summary, a.bands, paper_vals, verdicts=vmap), run_dir / name)
        return [(name, text.caption or "Similarity of the two stages' maps per method (mean over images, 95% "
                 "bootstrap interval): bars reaching into the gray band of unrelated maps mean the maps changed.",
                 png)]
    figs = []
    by_method = {m: g for m, g in a.verdicts.groupby("method")}
    for metric in a.metrics:
        name = f"figures/similarity_{metric}.png"
        vm = {m: g.set_index("metric").loc[metric, "verdict"] for m, g in by_method.items()}
        vm = {m: v for m, v in vm.items() if v != NO_VERDICT}
        null = None if a.null is None else a.null[a.null.metric == metric]
        png = F.save_png(F.curves_figure(a.summary, metric, a.layers, a.bands[metric], vm, a.stage, meta["test"],
                                         null=null), run_dir / name)
        null_text = (" The hatched band is the fair null at each stage: the 95% interval of the similarity of two "
                     "independently randomized models' maps, what the input and the architecture alone give."
                     if null is not None and len(null) else "")
        figs.append((name, f"{metric_label(metric)} " + (text.caption or "of each stage's map to the trained "
                     "model's map: a method that explains the model falls toward the gray band of unrelated maps "
                     "as layers are randomized; the verdict in each title reads the dotted stage.") + null_text, png))
    return figs


def _map_figures(run_dir: Path, a: Analysis, arrays: dict[str, np.ndarray], text: Any, n_fig: int) -> list[Figure]:
    """ABS and no-ABS map grids of the first ``n_fig`` saved images."""
    figs = []
    for k in range(n_fig):
        image = int(arrays["image_ids"][k])
        for kind, what in (("abs", "ABS maps (grayscale, 0 to 1)"), ("signed", "no-ABS maps (blue negative, red "
                                                                               "positive, -1 to 1)")):
            name = f"figures/maps_{kind}_image{image}.png"
            png = F.save_png(F.maps_figure(arrays, a.methods, a.layers, k, kind), run_dir / name)
            figs.append((name, f"{what} of held-out image {image} (rows: methods; {text.columns}): look for rows that "
                         "keep the input's shape while the model changes.", png))
    return figs


def _facts(meta: dict[str, Any], text: Any, sentences: bool) -> list[tuple[str, str]]:
    inputs = "sentences" if sentences else "images"
    return [
        ("test", text.description),
        *model_facts(meta),
        ("data", f"{meta['data']['name']}: {meta['data'].get('source', '')}"),
        (inputs, f"{meta['images']['n']} held-out {inputs} (ids {_ids(meta['images']['ids'])})"),
        ("profile", f"{meta['profile']} (re-init {meta['resolved']['reinit']}, SSIM window "
                    f"{meta['resolved']['ssim_window']}, HOG correlation {meta['resolved']['hog_correlation']})"),
        ("seed", f"{meta['seed']} (every generator derives from it: stages, noise, calibration, bootstrap)"),
        ("device", f"{meta['device']}, {meta['threads']} threads"),
        ("time", f"{meta['timings']['total_s']:.1f} s in all (training {meta['timings']['training_s']:.1f} s, maps "
                 f"and scores {meta['timings'].get('maps_and_scores_s', float('nan')):.1f} s)"),
        ("versions", versions_text(meta)),
        ("run id", meta["run_id"]),
    ]


def _head_blocks(a: Analysis, meta: dict[str, Any], arrays: dict[str, np.ndarray], text: Any,
                 rule: VerdictConfig) -> list[tuple]:
    """Title, facts, what the test compares, the verdicts and the paper's values beside them."""
    judged_layer = a.layers[a.stage] if a.stage is not None else None
    blocks: list[tuple] = [("h", 1, f"Sanity check report: {meta['run_id']}"),
                           ("facts", _facts(meta, text, "tokens" in arrays))]
    if text.compares:
        blocks += [("h", 2, "What this test compares"), ("p", text.compares)]
    own = getattr(text, "verdict_rule", None)  # a test's own rule replaces the suite's rule and reading
    blocks += [("h", 2, "Verdicts"), ("p", own or rule_text(rule, judged_layer)),
               ("table", verdict_table(a, expected_controls(meta["test"])), True)] + ([("p", READING)] if own is None else [])
    if a.null is not None:
        blocks += [("h", 2, "The fair null: two independently randomized models"),
                   ("p", "At the judged stage, per method and metric: the similarity of the maps of two models whose "
                         "randomized units were drawn independently (the run's draw, and a second one from generators "
                         "derived from the seed and \"null\"), mean [95% bootstrap interval] over images, and how far "
                         "the trained-vs-randomized similarity fell from 1 toward it ((1 - similarity) / (1 - null): 0 "
                         "unchanged, 1 as far as two random models). A null above the calibration band is similarity "
                         "that the input and the architecture give without any learned parameter; "
                         "`verdict=random_null` judges against it."),
                   ("table", null_table(a), True)]
    if text.paper == "data_randomization":
        comp = paper.data_randomization_comparison(a.summary, meta["model"]["name"])
        blocks += [("h", 2, "Beside the paper"),
                   ("p", f"{paper.paper_values()['citation']}: ABS Spearman of the true- and random-label models' "
                         "maps read off its MNIST bar charts (+-0.05); 'agrees' when the paper's value lies within "
                         "this run's 95% interval widened by the reading error. This run's data: "
                         f"{meta['data']['name']}."), ("table", comp, False)]
    elif text.paper == "cascading" and "tokens" not in arrays:  # the paper's Inception table: image runs only
        comp = paper.cascading_comparison(a.verdicts)
        blocks += [("h", 2, "Beside the paper"),
                   ("p", f"{paper.paper_values()['citation']}, cascading randomization of Inception v3: whether each "
                         "method's maps changed once the higher layers were randomized, next to this run's verdict at "
                         f"the judged stage ({judged_layer}). The paper judged by eye on ImageNet; this run's model, "
                         "data and stage differ."), ("table", comp, False)]
    return blocks


def _similarity_blocks(a: Analysis, calibration: Optional[pd.DataFrame], rule: VerdictConfig) -> list[tuple]:
    """One stage table per metric, and the calibration table."""
    blocks: list[tuple] = [("h", 2, "Similarity per stage (mean [95% bootstrap interval] over images)")]
    for metric in a.metrics:
        blocks += [("h", 3, metric_label(metric)), ("table", stage_table(a, metric), True)]
        if a.null is not None:
            blocks += [("p", "The fair null at each stage (two independently randomized models):"),
                       ("table", stage_table(a, metric, null=True), True)]
    blocks += [("h", 2, "Calibration: similarity of unrelated maps, measured in this run"),
               ("p", "Per image, two N(0,1) noise maps (noise vs noise) and each method's trained-model map against "
                     "noise (map vs noise), post-processed and scored like every map. The band is the central "
                     f"{rule.band_coverage:.0%} of these values; the paper's appendix reports |value| < 0.005 on "
                     "every metric, HOG of uniform noise about 0.08."),
               ("table", calibration_table(a, calibration), False) if calibration is not None
               else ("p", "This run has no calibration.parquet (made by an older version); verdicts under the "
                          "calibration_band rule are inconclusive.")]
    return blocks


def _model_blocks(df: pd.DataFrame, a: Analysis, stages_df: pd.DataFrame, model_fig: Figure) -> list[tuple]:
    """The model's own output per stage, and the honesty table."""
    return [("h", 2, "The model's own output per stage"),
            ("p", "Accuracy on the whole held-out split; Spearman of the explained images' logits against the "
                  "reference model's; share of those images whose prediction changed; seconds per stage."),
            ("table", stages_df, False), ("figure", *model_fig),
            ("h", 2, "Honesty: images, NaN scores and tied values (randomized stages)"),
            ("p", "A NaN score is a map pair that cannot be compared (a constant map has no ranks); it is counted "
                  "here and left out of means. Tied values: mean share of entries of a map that share their "
                  "value with another entry (the larger of the pair); high shares inflate rank correlations."),
            ("table", honesty_table(df, a), False)]


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids)) if len(ids) <= 12 else f"{', '.join(map(str, ids[:10]))}, ... {ids[-1]}"
