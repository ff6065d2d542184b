"""Report of one run: similarity-versus-stage curves per metric and a grid of maps.

Figures are PNG files under ``figures/``; ``report.html`` embeds them (base64), so it opens
without the folder and without a network.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from benchmark import store  # noqa: E402
from benchmark.methods import CONTROLS  # noqa: E402

METRIC_LABELS = {
    "spearman_abs": "Spearman rank correlation (ABS)",
    "spearman": "Spearman rank correlation (no ABS)",
    "ssim": "SSIM",
    "hog": "HOG similarity",
}


CONTROL_COLORS = {"edge": "0.15", "noise": "0.55"}


def _palette(methods: list[str]) -> dict[str, Any]:
    """Seaborn's colorblind palette for methods; controls in black and gray (drawn dashed)."""
    colors = sns.color_palette("colorblind", n_colors=10)
    others = [m for m in methods if m not in CONTROL_COLORS]
    pal: dict[str, Any] = {m: colors[i % len(colors)] for i, m in enumerate(others)}
    pal.update({m: CONTROL_COLORS[m] for m in methods if m in CONTROL_COLORS})
    return pal


def _png(fig: plt.Figure, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    store.atomic_write(path, lambda p: p.write_bytes(data))
    return data


X_LABELS = {
    "cascading": "randomized from the top down to (cumulative)",
    "bottom_up": "randomized from the bottom up to (cumulative)",
    "independent": "the one unit randomized (the rest trained)",
}


def similarity_figure(df: pd.DataFrame, metric: str, layers: list[str], methods: list[str],
                      test: str = "cascading") -> plt.Figure:
    """Mean similarity to the trained model's maps per stage, one line per method, 95% bootstrap CI."""
    d = df[df.metric == metric].dropna(subset=["value"])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    pal = _palette(methods)
    for m in methods:
        dm = d[d.method == m]
        if dm.empty:
            continue
        sns.lineplot(data=dm, x="stage", y="value", ax=ax, color=pal[m], label=m, marker="o",
                     errorbar=("ci", 95), n_boot=1000, seed=0,
                     linestyle="--" if m in CONTROLS else "-")
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=30, ha="right")
    ax.set_xlabel(X_LABELS.get(test, "stage"))
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)}\nvs. trained model's map")
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_ylim(-0.3, 1.05)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def data_randomization_figure(df: pd.DataFrame, methods: list[str]) -> plt.Figure:
    """Per method, similarity of the true-label and the random-label model's maps, 95% bootstrap CI."""
    d = df[df.stage == 1].dropna(subset=["value"])
    pairs = [[m for m in ("spearman_abs", "spearman") if m in set(d.metric)],
             [m for m in ("ssim", "hog") if m in set(d.metric)]]
    pairs = [p for p in pairs if p]
    fig, axes = plt.subplots(1, len(pairs), figsize=(6.5 * len(pairs), 4.2), squeeze=False)
    colors = sns.color_palette("colorblind", n_colors=4)
    for ax, metrics in zip(axes[0], pairs):
        sub = d[d.metric.isin(metrics)].copy()
        sub["metric"] = sub.metric.map(lambda m: METRIC_LABELS.get(m, m))
        sns.barplot(data=sub, x="method", y="value", hue="metric", order=methods, ax=ax, errorbar=("ci", 95),
                    n_boot=1000, seed=0, palette=colors[: len(metrics)] if metrics[0] != "ssim" else colors[2:])
        ax.set_xlabel("")
        ax.set_ylabel("similarity: true-label vs. random-label model")
        ax.set_ylim(-0.3, 1.05)
        ax.axhline(0.0, color="0.4", lw=0.8)
        ax.tick_params(axis="x", rotation=40)
        for label in ax.get_xticklabels():
            label.set_ha("right")
        ax.legend(title="", fontsize=8, loc="upper left")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def maps_figure(arrays: dict[str, np.ndarray], methods: list[str], layers: list[str], k: int) -> plt.Figure:
    """Rows methods, columns stages: the ABS map of saved image ``k`` in grayscale."""
    n_r, n_c = len(methods), len(layers) + 1
    fig, axes = plt.subplots(n_r, n_c, figsize=(1.25 * n_c, 1.25 * n_r), squeeze=False)
    img = arrays["images"][k]
    for r, m in enumerate(methods):
        ax = axes[r, 0]
        ax.imshow(img.mean(0) if img.shape[0] > 1 else img[0], cmap="gray")
        ax.set_ylabel(m, rotation=0, ha="right", va="center", fontsize=8)
        for c, layer in enumerate(layers):
            axes[r, c + 1].imshow(arrays[f"{m}/abs"][c, k], cmap="gray", vmin=0, vmax=1)
            if r == 0:
                axes[r, c + 1].set_title(layer, fontsize=8)
        if r == 0:
            axes[r, 0].set_title("input", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.2)
    return fig


def _summary_table(df: pd.DataFrame, metric: str, methods: list[str], layers: list[str]) -> pd.DataFrame:
    d = df[df.metric == metric]
    g = d.groupby(["method", "stage"])["value"]
    mean, sd = g.mean().unstack(), g.std().unstack()
    table = mean.map(lambda v: f"{v:.3f}").astype(str) + " ± " + sd.map(lambda v: f"{v:.3f}").astype(str)
    table = table.reindex(methods)
    table.columns = [layers[c] for c in table.columns]
    return table


def _acc(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def write_run_report(run_dir: Path, df: pd.DataFrame, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                     n_figure_images: int = 3) -> None:
    run_dir = Path(run_dir)
    methods = list(dict.fromkeys(df.method))
    layers = list(meta["stages"][i]["layer"] for i in range(len(meta["stages"])))
    metrics = list(dict.fromkeys(df.metric))
    figs: list[tuple[str, str, bytes]] = []  # (file, caption, png)
    data_test = meta["test"] == "data_randomization"
    if data_test:
        name = "figures/data_randomization.png"
        png = _png(data_randomization_figure(df, methods), run_dir / name)
        figs.append((name, "Similarity between the maps of the true-label model and the random-label model on the "
                     "same held-out images (mean over images, 95% bootstrap interval): a method that depends on "
                     "the labels the model learned scores low; the edge control scores 1 by construction.", png))
    for metric in ([] if data_test else metrics):
        name = f"figures/similarity_{metric}.png"
        png = _png(similarity_figure(df, metric, layers, methods, meta["test"]), run_dir / name)
        figs.append((name, f"{METRIC_LABELS.get(metric, metric)} between each stage's map and the trained "
                     "model's map (mean over images, 95% bootstrap interval); a method that depends on the "
                     "model falls as layers are randomized, the edge control stays at 1, noise stays near 0.",
                     png))
    n_fig = min(n_figure_images, len(arrays["images"]))
    for k in range(n_fig):
        name = f"figures/maps_image{int(arrays['image_ids'][k])}.png"
        png = _png(maps_figure(arrays, methods, layers, k), run_dir / name)
        figs.append((name, f"ABS maps of held-out image {int(arrays['image_ids'][k])} (rows: methods; "
                     + ("columns: true-label and random-label model). Look for maps that look the same for "
                        "both models." if data_test else
                        f"columns: {meta['test']} randomization stages). Look for maps that keep the input's "
                        "shape after the model's layers are randomized."), png))

    stages_df = pd.DataFrame(meta["stages"])[["stage", "layer", "accuracy", "logit_spearman_mean",
                                              "prediction_changed"]]
    nan = df[df.value.isna()].groupby(["method", "metric", "nan_reason"]).size().rename("count").reset_index()
    ties = df[df.metric.isin(["spearman_abs", "spearman"]) & (df.stage > 0)].groupby(
        ["method", "metric"])["tie_fraction"].mean().unstack()
    tables = {m: _summary_table(df, m, methods, layers) for m in metrics}

    model = meta["model"]
    facts = [
        ("test", "data randomization" if data_test else f"{meta['test']} model parameter randomization"),
        ("model", f"{model['name']} (held-out accuracy {_acc(model['eval_accuracy'])}, "
                  f"train accuracy {_acc(model['train_accuracy'])})"),
        ("data", f"{meta['data']['name']}: {meta['data'].get('source', '')}"),
        *([("random-label model", f"train accuracy on its permuted labels {meta['random_label_model']['train_accuracy']:.4f}"
                                   f" (gate {meta['random_label_model']['memorization_gate']}, "
                                   f"{meta['random_label_model']['epochs'] or 'cached'} epochs), held-out accuracy on "
                                   f"true labels {meta['random_label_model']['eval_accuracy']:.4f}")]
          if data_test else []),
        ("images", f"{meta['images']['n']} held-out images"),
        ("profile", f"{meta['profile']} (re-init {meta['resolved']['reinit']}, SSIM window "
                    f"{meta['resolved']['ssim_window']}, HOG correlation {meta['resolved']['hog_correlation']})"),
        ("seed", str(meta["seed"])),
        ("device", f"{meta['device']}, {meta['threads']} threads"),
        ("time", f"{meta['timings']['total_s']:.1f} s (training {meta['timings']['training_s']:.1f} s)"),
        ("run id", meta["run_id"]),
    ]

    blocks: list[tuple] = [("h", 1, f"Sanity check report: {meta['run_id']}"), ("facts", facts),
                           ("h", 2, "Similarity to the trained model's maps")]
    for metric in metrics:
        blocks += [("h", 3, f"{METRIC_LABELS.get(metric, metric)} (mean ± sd over images)"),
                   ("table", tables[metric], True)]
    blocks += [("h", 2, "The model's own output per stage"),
               ("p", "Accuracy on the whole held-out split; Spearman of the explained images' logits against the "
                     "reference model's; share of those images whose prediction changed."),
               ("table", stages_df, False),
               ("h", 2, "Tied values (mean share per map pair, stages after the reference)"),
               ("table", ties, True) if not ties.empty else ("p", "none"),
               ("h", 2, "NaN scores"),
               ("table", nan, False) if not nan.empty else ("p", "No NaN scores."),
               ("h", 2, "Figures")]
    blocks += [("figure", name, caption, png) for name, caption, png in figs]
    store.write_text(run_dir / "report.md", _markdown(blocks))
    store.write_text(run_dir / "report.html", _html(blocks, meta["run_id"]))


def _markdown(blocks: list[tuple]) -> str:
    out: list[str] = []
    for b in blocks:
        if b[0] == "h":
            out += ["#" * b[1] + " " + b[2], ""]
        elif b[0] == "facts":
            out += [f"- **{k}**: {v}" for k, v in b[1]] + [""]
        elif b[0] == "p":
            out += [b[1], ""]
        elif b[0] == "table":
            out += [b[1].to_markdown(index=b[2], floatfmt=".3f"), ""]
        else:  # figure: the PNG file beside the report
            out += [f"![{b[2]}]({b[1]})", "", f"*{b[2]}*", ""]
    return "\n".join(out)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:0.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "figure{margin:1.5em 0}figcaption{font-size:13px;color:#444;max-width:800px}img{max-width:100%}")


def _html(blocks: list[tuple], title: str) -> str:
    """Self-contained HTML: figures embedded as base64 PNG."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if b[0] == "h":
            out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
        elif b[0] == "facts":
            out += ["<ul>"] + [f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in b[1]]
            out.append("</ul>")
        elif b[0] == "p":
            out.append(f"<p>{html.escape(b[1])}</p>")
        elif b[0] == "table":
            out.append(b[1].to_html(index=b[2], float_format="%.3f"))
        else:
            b64 = base64.b64encode(b[3]).decode()
            out.append(f"<figure><img alt='{html.escape(b[1])}' src='data:image/png;base64,{b64}'>"
                       f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)
