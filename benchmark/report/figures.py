"""Figures of the reports, drawn from ``summarize`` output and the saved maps, in the palette and with the labels
of ``benchmark.report.style``. Maps: ABS in grayscale [0, 1], no-ABS in the diverging ColorBrewer RdBu [-1, 1]
(colorblind-safe), as the paper shows them.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from benchmark import store  # noqa: E402
from benchmark.methods import CONTROLS  # noqa: E402
from benchmark.report.style import (BAND_COLOR, CONTROL_STYLE, NULL_COLOR, OKABE_ITO, SERIES_LINES,  # noqa: E402
                                    VERDICT_COLORS, is_similarity, method_style, metric_label, x_label)


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
    fig, axes = _panel_grid(len(methods))
    multi = series in d.columns and d[series].nunique() > 1
    has_null = null is not None and len(null) > 0
    ylim = _ylim(d.ci_low.fillna(d["mean"])) if similarity else _span(d, band)
    for ax, method in zip(axes.flat, methods):
        _reference_lines(ax, d, controls, band)
        if has_null:
            _null_band(ax, null[null.method == method])
        _method_lines(ax, d[d.method == method], method, series, multi)
        if judged is not None:
            ax.axvline(judged, color="#555555", lw=0.8, ls=(0, (1, 2)), zorder=1)
        _panel_title(ax, method, verdicts)
        ax.axhline(0.0, color="#bbbbbb", lw=0.6, zorder=1)
        ax.grid(alpha=0.25)
        ax.set_ylim(*ylim)
    _label_panels(axes, len(methods), layers, "similarity (-1 to 1)" if similarity else metric)
    handles = _curves_legend(d, controls, band, has_null, judged, series if multi else None)
    fig.suptitle(f"{metric_label(metric)} {'to' if similarity else 'relative to'} the reference model's map\n"
                 f"x: {x_label(test)}", fontsize=11)
    fig.tight_layout()
    free = axes.flat[len(methods)]  # the legend sits in the first free panel
    free.set_visible(True)
    free.axis("off")
    free.legend(handles=handles, loc="center left", frameon=False, fontsize=8.5, borderaxespad=0)
    return fig


def _panel_grid(n_methods: int) -> tuple[plt.Figure, np.ndarray]:
    """One panel per method and one free panel for the legend, up to five columns sharing both axes."""
    ncols = max(1, min(5, math.ceil((n_methods + 1) / 2)))
    nrows = max(1, math.ceil((n_methods + 1) / ncols))
    return plt.subplots(nrows, ncols, figsize=(2.75 * ncols, 2.5 * nrows + 0.5), squeeze=False,
                        sharex=True, sharey=True)


def _reference_lines(ax: plt.Axes, d: pd.DataFrame, controls: list[str], band: tuple[float, float]) -> None:
    """The calibration band and the controls' mean per stage, behind a method's own lines."""
    if np.isfinite(band[0]):
        ax.axhspan(band[0], band[1], color=BAND_COLOR, zorder=0)
    for c in controls:
        dc = d[d.method == c].groupby("stage")["mean"].mean()
        ax.plot(dc.index, dc.values, **CONTROL_STYLE.get(c, {"color": "k", "ls": "--"}), zorder=2)


def _null_band(ax: plt.Axes, null: pd.DataFrame) -> None:
    """One method's fair null per stage: its 95% interval hatched, its mean dashed."""
    dn = null.groupby("stage")[["mean", "ci_low", "ci_high"]].mean().sort_index()
    ax.fill_between(dn.index, dn.ci_low, dn.ci_high, facecolor="none", hatch="////", edgecolor=NULL_COLOR,
                    lw=0.0, zorder=1)
    ax.plot(dn.index, dn["mean"], color=NULL_COLOR, ls="--", lw=0.9, zorder=1)


def _method_lines(ax: plt.Axes, dm: pd.DataFrame, method: str, series: str, multi: bool) -> None:
    """A method's mean per stage with its 95% interval shaded, one line per ``series`` value when ``multi``."""
    st = method_style(method)
    groups = list(dm.groupby(series)) if multi else [(None, dm)]
    for k, (_, g) in enumerate(groups):
        g = g.sort_values("stage")
        ax.fill_between(g.stage, g.ci_low, g.ci_high, color=st["color"], alpha=0.25 if not multi else 0.12,
                        lw=0, zorder=3)
        ax.plot(g.stage, g["mean"], color=st["color"], marker=st["marker"], ms=4, lw=st["lw"],
                ls=SERIES_LINES[k % len(SERIES_LINES)] if multi else "-", zorder=4)


def _panel_title(ax: plt.Axes, method: str, verdicts: Optional[dict[str, str]]) -> None:
    """The method's name, with its verdict in the verdict's color where it has one."""
    if verdicts and method in verdicts:
        ax.set_title(f"{method}: {verdicts[method]}", color=VERDICT_COLORS.get(verdicts[method], "black"),
                     fontweight="bold")
    else:
        ax.set_title(method)


def _label_panels(axes: np.ndarray, n_methods: int, layers: list[str], ylabel: str) -> None:
    """Hides the unused panels, names the stages under the lowest panel of each column and the y axis on the left."""
    for ax in axes.flat[n_methods:]:
        ax.set_visible(False)
    for ax in axes.flat[max(0, n_methods - axes.shape[1]):n_methods]:  # lowest panel of each column
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xticks(np.arange(len(layers)))
        ax.set_xticklabels(layers, rotation=35, ha="right")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)


def _curves_legend(d: pd.DataFrame, controls: list[str], band: tuple[float, float], null: bool,
                   judged: Optional[int], series: Optional[str]) -> list:
    """Legend of a curves figure: methods, interval, controls, band, fair null, judged stage, one entry per series."""
    handles = [Line2D([], [], color="#333333", lw=1.8, marker="o", ms=4, label="method: mean over images"),
               Patch(color="#333333", alpha=0.25, label="95% bootstrap interval")]
    handles += [Line2D([], [], **CONTROL_STYLE[c], label=f"{c} control") for c in controls if c in CONTROL_STYLE]
    if np.isfinite(band[0]):
        handles.append(Patch(color=BAND_COLOR, label=f"unrelated maps (calibration) [{band[0]:.2f}, {band[1]:.2f}]"))
    if null:
        handles.append(Patch(facecolor="none", hatch="////", edgecolor=NULL_COLOR, ls="--",
                             label="fair null: two random models (mean, 95%)"))
    if judged is not None:
        handles.append(Line2D([], [], color="#555555", lw=0.8, ls=(0, (1, 2)), label="stage the verdict reads"))
    if series is not None:
        handles += [Line2D([], [], color="#333333", ls=SERIES_LINES[k % len(SERIES_LINES)], label=f"{series} {s}")
                    for k, s in enumerate(sorted(d[series].unique()))]
    return handles


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
