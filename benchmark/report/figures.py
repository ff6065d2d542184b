"""Figures of the reports, drawn from ``summarize`` output and the saved maps.

One palette everywhere: Okabe & Ito's colorblind-safe colors, a fixed color per method (the
same in every figure and every run), the controls in black (edge, dashed) and gray (noise,
dotted), the calibration band as a light gray band. Maps: ABS in grayscale [0, 1], no-ABS in
the diverging ColorBrewer RdBu [-1, 1] (colorblind-safe), as the paper shows them.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from benchmark import store  # noqa: E402
from benchmark.methods import CONTROLS, METHODS  # noqa: E402

OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7"}
# Yellow is too faint as a thin line on white: six colors, and a marker per method on top.
_CYCLE = ["blue", "orange", "bluish_green", "vermillion", "reddish_purple", "sky_blue"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h"]
VERDICT_COLORS = {"pass": OKABE_ITO["bluish_green"], "fail": OKABE_ITO["vermillion"], "inconclusive": "#999999"}
BAND_COLOR = "#d9d9d9"
NULL_COLOR = "#8c6d9e"  # the fair null's hatching
CONTROL_STYLE = {"edge": dict(color="#000000", ls="--", lw=1.3), "noise": dict(color="#7f7f7f", ls=":", lw=1.6)}

METRIC_LABELS = {
    "spearman_abs": "Spearman rank correlation, ABS maps",
    "spearman": "Spearman rank correlation, no-ABS maps",
    "ssim": "SSIM",
    "hog": "HOG similarity",
    "entropy_change": "Relative entropy change (efficient MPRT)",
}
X_LABELS = {
    "cascading": "layers randomized, cumulative from the top (left: trained model)",
    "bottom_up": "layers randomized, cumulative from the bottom (left: trained model)",
    "independent": "the one layer randomized, the rest trained (left: trained model)",
    "data_randomization": "model",
}

plt.rcParams.update({"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 9,
                     "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.dpi": 100})


def method_style(method: str) -> dict[str, Any]:
    """Color and marker of a method, fixed by its place in the registry (captum_* after the rest)."""
    if method in CONTROL_STYLE:
        return dict(CONTROL_STYLE[method], marker=None)
    order = [m for m in METHODS if m not in CONTROLS]
    i = order.index(method) if method in order else len(order) + sum(map(ord, method)) % 7
    return {"color": OKABE_ITO[_CYCLE[i % len(_CYCLE)]], "marker": _MARKERS[i % len(_MARKERS)], "ls": "-", "lw": 1.8}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def x_label(test: str) -> str:
    """The stage axis of a test's figures: the test's own (``Check.report_text``), else ``X_LABELS``."""
    from benchmark.checks import TESTS

    hook = getattr(TESTS.get(test), "report_text", None)
    return hook({}).axis if hook is not None else X_LABELS.get(test, "stage")


def is_similarity(metric: str) -> bool:
    """Whether a metric is a similarity (higher: more similar), which the verdict rules and the -1 to 1 axis
    assume; a metric the registry does not know is taken for one."""
    import benchmark.checks  # noqa: F401  (the tests' modules register their metrics)
    from benchmark.similarity import METRICS

    m = METRICS.get(metric)
    return m is None or m.higher_is_more_similar


def save_png(fig: plt.Figure, path: Optional[Path] = None, dpi: int = 100) -> bytes:
    """PNG bytes of ``fig`` (closed afterwards), also written atomically to ``path`` if given."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        store.atomic_write(path, lambda p: p.write_bytes(data))
    return data


def _ylim(values: pd.Series) -> tuple[float, float]:
    """From -0.35 (or lower, to show every interval) to 1.05."""
    low = float(np.nanmin(values)) if len(values) and np.isfinite(values).any() else 0.0
    return (max(-1.05, min(-0.35, low - 0.05)), 1.05)


def _span(d: pd.DataFrame, band: tuple[float, float]) -> tuple[float, float]:
    """A metric that is no similarity: from its lowest to its highest value (intervals, band and 0 included)."""
    values = np.concatenate([d.ci_low.fillna(d["mean"]).to_numpy(float), d.ci_high.fillna(d["mean"]).to_numpy(float),
                             np.asarray(band, float), [0.0]])
    values = values[np.isfinite(values)]
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo) or 0.05
    return lo - pad, hi + pad


def curves_figure(summary: pd.DataFrame, metric: str, layers: list[str], band: tuple[float, float],
                  verdicts: Optional[dict[str, str]] = None, judged: Optional[int] = None,
                  test: str = "cascading", series: str = "seed", null: Optional[pd.DataFrame] = None) -> plt.Figure:
    """Similarity to the reference maps per stage: one panel per method, mean and 95% interval.

    ``summary``: rows of ``summarize`` for one test (and, with several seeds, a ``series`` column:
    one line each). Every panel shows the controls, the calibration band and the judged stage.
    ``null``: ``summarize`` rows of the fair null for this metric, drawn as a hatched band per method.
    """
    d = summary[summary.metric == metric]
    similarity = is_similarity(metric)
    methods = [m for m in dict.fromkeys(d.method) if m not in CONTROLS]
    controls = [m for m in dict.fromkeys(d.method) if m in CONTROLS]
    # one free panel for the legend
    ncols = max(1, min(5, math.ceil((len(methods) + 1) / 2)))
    nrows = max(1, math.ceil((len(methods) + 1) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.75 * ncols, 2.5 * nrows + 0.5), squeeze=False,
                             sharex=True, sharey=True)
    x = np.arange(len(layers))
    multi = series in d.columns and d[series].nunique() > 1
    for ax, method in zip(axes.flat, methods):
        if np.isfinite(band[0]):
            ax.axhspan(band[0], band[1], color=BAND_COLOR, zorder=0)
        for c in controls:
            dc = d[d.method == c].groupby("stage")["mean"].mean()
            ax.plot(dc.index, dc.values, **CONTROL_STYLE.get(c, {"color": "k", "ls": "--"}), zorder=2)
        st = method_style(method)
        if null is not None and len(null):
            dn = null[null.method == method].groupby("stage")[["mean", "ci_low", "ci_high"]].mean().sort_index()
            ax.fill_between(dn.index, dn.ci_low, dn.ci_high, facecolor="none", hatch="////", edgecolor=NULL_COLOR,
                            lw=0.0, zorder=1)
            ax.plot(dn.index, dn["mean"], color=NULL_COLOR, ls="--", lw=0.9, zorder=1)
        dm = d[d.method == method]
        groups = list(dm.groupby(series)) if multi else [(None, dm)]
        for k, (_, g) in enumerate(groups):
            g = g.sort_values("stage")
            ax.fill_between(g.stage, g.ci_low, g.ci_high, color=st["color"], alpha=0.25 if not multi else 0.12,
                            lw=0, zorder=3)
            ax.plot(g.stage, g["mean"], color=st["color"], marker=st["marker"], ms=4, lw=st["lw"],
                    ls=["-", "--", "-.", ":"][k % 4] if multi else "-", zorder=4)
        if judged is not None:
            ax.axvline(judged, color="#555555", lw=0.8, ls=(0, (1, 2)), zorder=1)
        title = method
        if verdicts and method in verdicts:
            title += f": {verdicts[method]}"
            ax.set_title(title, color=VERDICT_COLORS.get(verdicts[method], "black"), fontweight="bold")
        else:
            ax.set_title(title)
        ax.axhline(0.0, color="#bbbbbb", lw=0.6, zorder=1)
        ax.grid(alpha=0.25)
        ax.set_ylim(*(_ylim(d.ci_low.fillna(d["mean"])) if similarity else _span(d, band)))
    for ax in axes.flat[len(methods):]:
        ax.set_visible(False)
    for ax in axes.flat[max(0, len(methods) - ncols):len(methods)]:  # lowest panel of each column
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xticks(x)
        ax.set_xticklabels(layers, rotation=35, ha="right")
    for ax in axes[:, 0]:
        ax.set_ylabel("similarity (-1 to 1)" if similarity else metric)
    handles = [Line2D([], [], color="#333333", lw=1.8, marker="o", ms=4, label="method: mean over images"),
               Patch(color="#333333", alpha=0.25, label="95% bootstrap interval")]
    handles += [Line2D([], [], **CONTROL_STYLE[c], label=f"{c} control") for c in controls if c in CONTROL_STYLE]
    if np.isfinite(band[0]):
        handles.append(Patch(color=BAND_COLOR, label=f"unrelated maps (calibration) [{band[0]:.2f}, {band[1]:.2f}]"))
    if null is not None and len(null):
        handles.append(Patch(facecolor="none", hatch="////", edgecolor=NULL_COLOR, ls="--",
                             label="fair null: two random models (mean, 95%)"))
    if judged is not None:
        handles.append(Line2D([], [], color="#555555", lw=0.8, ls=(0, (1, 2)), label="stage the verdict reads"))
    if multi:
        handles += [Line2D([], [], color="#333333", ls=["-", "--", "-.", ":"][k % 4], label=f"{series} {s}")
                    for k, s in enumerate(sorted(d[series].unique()))]
    fig.suptitle(f"{metric_label(metric)} {'to' if similarity else 'relative to'} the reference model's map\n"
                 f"x: {x_label(test)}", fontsize=11)
    fig.tight_layout()
    free = axes.flat[len(methods)]  # the legend sits in the first free panel
    free.set_visible(True)
    free.axis("off")
    free.legend(handles=handles, loc="center left", frameon=False, fontsize=8.5, borderaxespad=0)
    return fig


def bars_figure(summary: pd.DataFrame, bands: dict[str, tuple[float, float]],
                paper: Optional[dict[str, float]] = None, paper_metric: str = "spearman_abs",
                verdicts: Optional[dict[tuple[str, str], str]] = None) -> plt.Figure:
    """Data randomization: per metric, similarity of the true-label and random-label model's maps per method."""
    d = summary[summary.stage == 1]
    metrics = list(dict.fromkeys(d.metric))
    methods = list(dict.fromkeys(d.method))
    ncols = 2 if len(metrics) > 1 else 1
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 3.6 * nrows + 0.5), squeeze=False)
    x = np.arange(len(methods))
    for ax, metric in zip(axes.flat, metrics):
        lo, hi = bands.get(metric, (np.nan, np.nan))
        if np.isfinite(lo):
            ax.axhspan(lo, hi, color=BAND_COLOR, zorder=0)
        dm = d[d.metric == metric].set_index("method").reindex(methods)
        ylo, yhi = _ylim(dm.ci_low.fillna(dm["mean"]))
        ax.set_ylim(ylo, yhi)
        for i, m in enumerate(methods):
            r = dm.loc[m]
            control = m in CONTROLS
            color = "#ffffff" if control else method_style(m)["color"]
            ax.bar(i, r["mean"], color=color, edgecolor="#000000" if control else color,
                   hatch="//" if control else None, lw=0.8, zorder=2)
            if np.isfinite(r.ci_low):
                ax.errorbar(i, r["mean"], yerr=[[r["mean"] - r.ci_low], [r.ci_high - r["mean"]]], color="black",
                            capsize=3, lw=1, zorder=3)
            if verdicts and (m, metric) in verdicts:
                v = verdicts[(m, metric)]
                ax.text(i, ylo + 0.02, {"pass": "P", "fail": "F", "inconclusive": "?"}[v], ha="center", va="bottom",
                        color=VERDICT_COLORS[v], fontweight="bold", fontsize=9)
            if paper and metric == paper_metric and m in paper:
                ax.plot(i, paper[m], marker="D", color="black", mfc="white", ms=6, zorder=4)
        ax.set_xticks(x)
        ax.set_xticklabels(methods, rotation=40, ha="right")
        ax.axhline(0.0, color="#bbbbbb", lw=0.6)
        ax.set_ylabel("similarity (-1 to 1)")
        ax.set_title(metric_label(metric))
        ax.grid(axis="y", alpha=0.25)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    handles = [Patch(facecolor="#777777", label="method: mean over images"),
               Line2D([], [], color="black", marker="|", ms=10, lw=0, label="95% bootstrap interval"),
               Patch(facecolor="white", edgecolor="black", hatch="//", label="control (edge, noise)"),
               Patch(color=BAND_COLOR, label="unrelated maps (calibration)")]
    if paper:
        handles.append(Line2D([], [], marker="D", color="black", mfc="white", lw=0, label="paper (MNIST)"))
    if verdicts:
        handles.append(Line2D([], [], lw=0, label="P / F / ?: verdict (pass, fail, inconclusive)"))
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, -0.03))
    fig.suptitle("Similarity of the true-label model's and the random-label model's maps", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def _shrink(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks of a 2-D map (rows and columns past the last whole block dropped)."""
    a = np.asarray(a, dtype=np.float32).squeeze()
    if f == 1:
        return a
    h, w = a.shape[0] // f, a.shape[1] // f
    return a[: h * f, : w * f].reshape(h, f, w, f).mean(axis=(1, 3))


def maps_figure(arrays: dict[str, np.ndarray], methods: list[str], layers: list[str], k: int,
                kind: str = "abs") -> plt.Figure:
    """Rows methods, columns stages, for saved image ``k``: ABS maps in grayscale, no-ABS maps in RdBu.

    Drawn as one 8-bit RGB mosaic (one image, not one axes per map): fast, and every tile shares the
    color scale of the colorbar. Maps larger than the about 100 pixels a tile gets in the figure are
    shrunk by block means first, so a figure of large maps holds little memory.
    """
    signed = kind == "signed"
    cmap = plt.get_cmap("RdBu_r" if signed else "gray")
    vmin, vmax = (-1.0, 1.0) if signed else (0.0, 1.0)
    img = arrays["images"][k]
    img = img.mean(0) if img.shape[0] > 1 else img[0]
    f = max(1, round(img.shape[0] / 100))
    img = _shrink(img, f)
    h, w = img.shape
    gap = max(1, h // 10)
    n_r, n_c = len(methods), len(layers) + 1
    mosaic = np.full((n_r * (h + gap) - gap, n_c * (w + gap) - gap, 3), 255, dtype=np.uint8)
    span = float(img.max() - img.min()) or 1.0
    gray = plt.get_cmap("gray")((img - img.min()) / span, bytes=True)[..., :3]
    for r, m in enumerate(methods):
        y = r * (h + gap)
        mosaic[y:y + h, :w] = gray
        for c in range(len(layers)):
            x = (c + 1) * (w + gap)
            tile = (_shrink(arrays[f"{m}/{kind}"][c, k], f) - vmin) / (vmax - vmin)
            mosaic[y:y + h, x:x + w] = cmap(np.clip(tile, 0, 1), bytes=True)[..., :3]
    fig, ax = plt.subplots(figsize=(0.95 * n_c + 2.4, 0.95 * n_r + 0.7))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([c * (w + gap) + w / 2 for c in range(n_c)])
    ax.set_xticklabels(["input", *layers], rotation=30, ha="left")
    ax.xaxis.tick_top()
    ax.set_yticks([r * (h + gap) + h / 2 for r in range(n_r)])
    ax.set_yticklabels(methods)
    ax.tick_params(length=0)
    for sp in ax.spines.values():
        sp.set_visible(False)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(vmin, vmax))
    cb = fig.colorbar(sm, ax=ax, shrink=0.5, pad=0.02)
    cb.set_label("no-ABS map (signed, -1 to 1)" if signed else "ABS map (0 to 1)")
    return fig


def model_output_figure(stages: pd.DataFrame, test: str) -> plt.Figure:
    """The model's own output per stage: held-out accuracy, logit Spearman, share of changed predictions."""
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    x = np.arange(len(stages))
    for col, label, color, marker in (("accuracy", "held-out accuracy", OKABE_ITO["blue"], "o"),
                                      ("logit_spearman_mean", "Spearman of logits vs reference", OKABE_ITO["orange"], "s"),
                                      ("prediction_changed", "share of predictions changed", OKABE_ITO["vermillion"], "^")):
        ax.plot(x, stages[col].astype(float), color=color, marker=marker, label=label, lw=1.8)
    ax.set_xticks(x)
    ax.set_xticklabels(stages.layer, rotation=30, ha="right")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("share or correlation (0 to 1)")
    ax.set_xlabel(x_label(test))
    ax.grid(alpha=0.25)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig
