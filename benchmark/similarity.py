"""Similarity of two batches of maps: Spearman (ABS and no-ABS), SSIM, HOG.

Pure, batch-first functions ``(a, b) -> Scores``: ``a`` and ``b`` are (B, H, W) arrays, the
post-processed maps of the trained and the randomized model for the same B images. Numerics
follow scipy (``rankdata`` average ranks for ties, as ``spearmanr``) and scikit-image
(``structural_similarity`` on 2-D maps with an explicit data range, ``hog``). A map with a
single value has no ranks, structure or gradients: its score is NaN with a ``nan_reason``,
never a silent number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from scipy.stats import rankdata
from skimage.feature import hog
from skimage.metrics import structural_similarity

from benchmark.config import Correlation, SimilarityConfig, SsimWindow


@dataclass
class Scores:
    value: np.ndarray  # (B,) float64
    nan_reason: list[Optional[str]]  # (B,) why value is NaN, else None
    tie_fraction: np.ndarray  # (B,) share of tied values (NaN where not a rank statistic)


def tie_fraction(x: np.ndarray) -> np.ndarray:
    """(B, N) -> (B,): share of entries whose value occurs more than once in their row.

    One sort per row: an entry is tied when it equals a neighbour in sorted order.
    """
    s = np.sort(np.asarray(x).reshape(len(x), -1), axis=1)
    if s.shape[1] < 2:
        return np.zeros(len(s))
    eq = s[:, 1:] == s[:, :-1]
    tied = np.zeros(s.shape, dtype=bool)
    tied[:, 1:] |= eq
    tied[:, :-1] |= eq
    return tied.mean(axis=1)


@dataclass(frozen=True)
class Rows:
    """A (B, ...) batch of maps as (B, N) float64 rows, with what comparing it needs, computed once.

    ``ranks`` (scipy ``rankdata`` average ranks, per row) and ``ties`` (``tie_fraction``) only for rank
    statistics. A batch compared with several others (stage 0's maps, with every stage's) is prepared once:
    ranking is most of a Spearman comparison's time.
    """

    values: np.ndarray
    finite: np.ndarray  # (B,) bool
    constant: np.ndarray  # (B,) bool: one value in the row
    ranks: Optional[np.ndarray] = None
    ties: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.values)


def rows(x: np.ndarray | Rows, ranked: bool = True) -> Rows:
    """``x`` prepared for comparison (returned as is when already prepared, ranked if asked)."""
    if isinstance(x, Rows) and (x.ranks is not None or not ranked):
        return x
    v = x.values if isinstance(x, Rows) else np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    finite = np.isfinite(v).all(axis=1)
    constant = v.max(axis=1) == v.min(axis=1)
    if not ranked:
        return Rows(v, finite, constant)
    ranks = np.full(v.shape, np.nan)
    if finite.any():  # rankdata per row: the same ranks whatever other rows there are
        ranks[finite] = rankdata(v[finite], axis=1)
    return Rows(v, finite, constant, ranks, tie_fraction(v))


def _degenerate(a: np.ndarray | Rows, b: np.ndarray | Rows) -> list[Optional[str]]:
    """Why each pair of (B, N) rows cannot be compared, or None."""
    a, b = rows(a, ranked=False), rows(b, ranked=False)
    reasons: list[Optional[str]] = []
    for fa, fb, ca, cb in zip(a.finite, b.finite, a.constant, b.constant):
        if not (fa and fb):
            reasons.append("non_finite_map")
            continue
        reasons.append(
            "constant_map_both" if ca and cb else "constant_map_original" if ca
            else "constant_map_randomized" if cb else None
        )
    return reasons


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip((a * b).sum(axis=1) / den, -1.0, 1.0)


def correlation(a: np.ndarray | Rows, b: np.ndarray | Rows, kind: Correlation = Correlation.spearman) -> Scores:
    """Row-wise correlation of (B, ...) arrays (or ``rows`` of them), flattened per row; Spearman = Pearson of
    average ranks."""
    spearman_kind = Correlation(kind) == Correlation.spearman
    a, b = rows(a, ranked=spearman_kind), rows(b, ranked=spearman_kind)
    reasons = _degenerate(a, b)
    ok = np.array([r is None for r in reasons])
    value = np.full(len(a), np.nan)
    ties = np.full(len(a), np.nan)
    if ok.any():
        if spearman_kind:
            ra, rb = a.ranks[ok], b.ranks[ok]
            ties[ok] = np.maximum(a.ties[ok], b.ties[ok])
        else:
            ra, rb = a.values[ok], b.values[ok]
        value[ok] = _rowwise_pearson(ra, rb)
    return Scores(value, reasons, ties)


def spearman(a: np.ndarray | Rows, b: np.ndarray | Rows) -> Scores:
    return correlation(a, b, Correlation.spearman)


def ssim(a: np.ndarray, b: np.ndarray, window: SsimWindow = SsimWindow.gaussian) -> Scores:
    """SSIM of (B, H, W) maps in [0, 1], one 2-D comparison per image (data_range=1).

    ``gaussian``: Gaussian window, sd 1.5 (the paper's code); ``window5``: uniform 5x5 window
    (the paper's text).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    reasons = _degenerate(a, b)
    value = np.full(len(a), np.nan)
    kwargs = ({"gaussian_weights": True, "sigma": 1.5} if SsimWindow(window) == SsimWindow.gaussian
              else {"win_size": 5})
    for i, reason in enumerate(reasons):
        if reason is None:
            value[i] = structural_similarity(a[i], b[i], data_range=1.0, **kwargs)
    return Scores(value, reasons, np.full(len(a), np.nan))


def hog_pixels_per_cell(shape: tuple[int, int], configured: Optional[int] = None) -> int:
    """16 pixels (the paper's code) when a map has at least 4 such cells a side, else a quarter side."""
    if configured is not None:
        return int(configured)
    side = min(shape)
    return 16 if side >= 64 else max(1, side // 4)


def hog_features(maps: np.ndarray, pixels_per_cell: int, cells_per_block: int) -> np.ndarray:
    """(B, H, W) -> (B, F) scikit-image HOG descriptors."""
    with np.errstate(invalid="ignore", divide="ignore"):  # constant maps: NaN, reported by the caller
        return _hog_stack(maps, pixels_per_cell, cells_per_block)


def _hog_stack(maps: np.ndarray, pixels_per_cell: int, cells_per_block: int) -> np.ndarray:
    return np.stack([
        hog(m, orientations=9, pixels_per_cell=(pixels_per_cell, pixels_per_cell),
            cells_per_block=(cells_per_block, cells_per_block), feature_vector=True)
        for m in np.asarray(maps, dtype=np.float64)
    ])


def hog_similarity(a: np.ndarray, b: np.ndarray, pixels_per_cell: int, cells_per_block: int = 2,
                   kind: Correlation = Correlation.spearman) -> Scores:
    """Correlation of the HOG descriptors of (B, H, W) maps (code: Spearman; paper: Pearson)."""
    reasons = _degenerate(a, b)
    fa = hog_features(a, pixels_per_cell, cells_per_block)
    fb = hog_features(b, pixels_per_cell, cells_per_block)
    scores = correlation(fa, fb, kind)
    for i, r in enumerate(reasons):  # a constant map has no gradients, whatever HOG returns
        if r is not None:
            scores.value[i], scores.nan_reason[i], scores.tie_fraction[i] = np.nan, r, np.nan
    return scores


@dataclass(frozen=True)
class Metric:
    """A similarity metric and its semantics, read by reports and tests."""

    name: str
    input: str  # which post-processing it compares: abs | signed | minmax
    bounds: tuple[float, float]
    higher_is_more_similar: bool
    # Spearman-based, so ties matter and tie_fraction is reported (HOG: only with the code profile).
    rank_based: bool
    score: Callable[[Any, Any, SimilarityConfig], Scores]
    # What ``score`` takes in place of a batch of maps, computed once for a batch compared several times.
    prepare: Callable[[np.ndarray], Any] = lambda maps: maps


METRICS: dict[str, Metric] = {
    "spearman_abs": Metric("spearman_abs", "abs", (-1.0, 1.0), True, True, lambda a, b, c: spearman(a, b),
                           rows),
    "spearman": Metric("spearman", "signed", (-1.0, 1.0), True, True, lambda a, b, c: spearman(a, b), rows),
    "ssim": Metric("ssim", "minmax", (-1.0, 1.0), True, False,
                   lambda a, b, c: ssim(a, b, c.ssim_window or SsimWindow.gaussian)),
    "hog": Metric("hog", "minmax", (-1.0, 1.0), True, True,
                  lambda a, b, c: hog_similarity(a, b, hog_pixels_per_cell(a.shape[-2:], c.hog_pixels_per_cell),
                                                 c.hog_cells_per_block, c.hog_correlation or Correlation.spearman)),
}


def register_metric(metric: Metric) -> Metric:
    """Add a metric under its name (``similarity.metrics=[..., name]`` selects it); a taken name is an error."""
    from benchmark.registry import add

    if metric.input not in ("abs", "signed", "minmax"):
        raise ValueError(f"metric {metric.name!r}: input={metric.input!r} must be abs, signed or minmax")
    return add(METRICS, metric.name, metric, "metric")


def check_metrics(names: list[str], modality: str = "image") -> None:
    """Known metric names of the model's modality (text: ``benchmark.token_metrics``)."""
    from benchmark.token_metrics import TOKEN_METRICS

    known, other = (TOKEN_METRICS, METRICS) if modality == "text" else (METRICS, TOKEN_METRICS)
    if not names:
        raise ValueError(f"similarity.metrics is empty; choose some of {list(known)}")
    for n in names:
        if n in other and n not in known:
            raise ValueError(f"similarity.metrics has {n!r}, {'an image' if modality == 'text' else 'a token'} metric, "
                             f"and the model is {'a text' if modality == 'text' else 'an image'} classifier; use some "
                             f"of {list(known)}")
        if n not in known:
            raise ValueError(f"similarity.metrics has {n!r}, not a known metric; use some of {list(known)}")
