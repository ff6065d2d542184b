"""How the reports' figures look and are labelled.

One palette everywhere: Okabe & Ito's colorblind-safe colors, a fixed color per method (the
same in every figure and every run), the controls in black (edge, dashed) and gray (noise,
dotted), the calibration band as a light gray band.
"""

from __future__ import annotations

from typing import Any

import matplotlib

from benchmark.methods import CONTROLS, METHODS

OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7"}
# Yellow is too faint as a thin line on white: six colors, and a marker per method on top.
_CYCLE = ["blue", "orange", "bluish_green", "vermillion", "reddish_purple", "sky_blue"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h"]
VERDICT_COLORS = {"pass": OKABE_ITO["bluish_green"], "fail": OKABE_ITO["vermillion"], "inconclusive": "#999999"}
BAND_COLOR = "#d9d9d9"
NULL_COLOR = "#8c6d9e"  # the fair null's hatching
SERIES_LINES = ["-", "--", "-.", ":"]  # one line style per seed (or other series) of a method
CONTROL_STYLE = {"edge": dict(color="#000000", ls="--", lw=1.3), "noise": dict(color="#7f7f7f", ls=":", lw=1.6)}

METRIC_LABELS = {
    "spearman_abs": "Spearman rank correlation, ABS maps",
    "spearman": "Spearman rank correlation, no-ABS maps",
    "ssim": "SSIM",
    "hog": "HOG similarity",
    "entropy_change": "Relative entropy change (efficient MPRT)",
}
matplotlib.rcParams.update({"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 9,
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
    """The stage axis of a test's figures (``Check.report_text``)."""
    from benchmark.checks import report_text_of

    return report_text_of(test, {}).axis


def is_similarity(metric: str) -> bool:
    """Whether a metric is a similarity (higher: more similar), which the verdict rules and the -1 to 1 axis
    assume; a metric the registry does not know is taken for one."""
    import benchmark.checks  # noqa: F401  (the tests' modules register their metrics)
    from benchmark.similarity import METRICS

    m = METRICS.get(metric)
    return m is None or m.higher_is_more_similar
