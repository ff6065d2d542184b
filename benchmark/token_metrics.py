"""Token maps compared: the text modality's post-processing and metrics.

A token map is (B, L), one value per token row; only the scored tokens of each sentence (real tokens that are
not [CLS] / [SEP], ``benchmark.data.text``) are compared. Post-processing keeps the values themselves (a rank
metric needs no scaling): ``abs`` is |m|, ``signed`` is m, and every other position is NaN. A map that is not
finite on a scored token is +inf there, so its scores are NaN with ``nan_reason=non_finite_map``.

Metrics, per sentence, over its scored tokens: Spearman of ABS and signed values (scipy ``rankdata`` average
ranks, as ``spearmanr``), Kendall's tau-b of ABS values (``scipy.stats.kendalltau``) and the top-k intersection
of ABS values (the share of the k highest tokens of one map among the k highest of the other; k = 1, 3 and 20%
of the sentence's tokens, at least 1). A sentence with fewer than three scored tokens is scored NaN with
``nan_reason=fewer_than_3_tokens``: counted, not averaged.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
from scipy.stats import kendalltau, rankdata

from benchmark.similarity import Metric, Scores, _rowwise_pearson, tie_fraction

MIN_TOKENS = 3


def token_process(maps: dict[str, torch.Tensor], tokens: torch.Tensor) -> dict[str, dict[str, np.ndarray]]:
    """method -> abs | signed -> (B, L) float32 with NaN where a token is not scored (``tokens``: (B, L, 3))."""
    scored = (tokens[..., 2] > 0).numpy()
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, m in maps.items():
        v = m.detach().double().cpu().numpy()
        if v.shape != scored.shape:
            raise ValueError(f"method {name!r}: token map of shape {v.shape} for sentences of shape {scored.shape}")
        bad = ~np.isfinite(np.where(scored, v, 0.0)).all(axis=1)
        signed = np.where(scored, v, np.nan)
        signed[bad] = np.where(scored[bad], np.inf, np.nan)
        absolute = np.abs(signed)
        out[name] = {"abs": absolute.astype(np.float32), "signed": signed.astype(np.float32)}
    return out


def _pairs(a: np.ndarray, b: np.ndarray) -> list[tuple[Optional[str], np.ndarray, np.ndarray]]:
    """Per sentence: why it cannot be compared (or None), and its scored values in both maps."""
    out = []
    for ra, rb in zip(np.asarray(a, np.float64), np.asarray(b, np.float64)):
        keep = ~(np.isnan(ra) | np.isnan(rb))
        va, vb = ra[keep], rb[keep]
        if len(va) < MIN_TOKENS:
            out.append(("fewer_than_3_tokens", va, vb))
        elif not (np.isfinite(va).all() and np.isfinite(vb).all()):
            out.append(("non_finite_map", va, vb))
        elif va.max() == va.min() and vb.max() == vb.min():
            out.append(("constant_map_both", va, vb))
        elif va.max() == va.min():
            out.append(("constant_map_original", va, vb))
        elif vb.max() == vb.min():
            out.append(("constant_map_randomized", va, vb))
        else:
            out.append((None, va, vb))
    return out


def _score(a: np.ndarray, b: np.ndarray, fn: Callable[[np.ndarray, np.ndarray], float], ranked: bool) -> Scores:
    pairs = _pairs(a, b)
    value = np.full(len(pairs), np.nan)
    ties = np.full(len(pairs), np.nan)
    for i, (reason, va, vb) in enumerate(pairs):
        if reason is None:
            value[i] = fn(va, vb)
            if ranked:
                ties[i] = max(tie_fraction(va[None])[0], tie_fraction(vb[None])[0])
    return Scores(value, [p[0] for p in pairs], ties)


def token_spearman(a: np.ndarray, b: np.ndarray) -> Scores:
    return _score(a, b, lambda x, y: float(_rowwise_pearson(rankdata(x)[None], rankdata(y)[None])[0]), True)


def token_kendall(a: np.ndarray, b: np.ndarray) -> Scores:
    return _score(a, b, lambda x, y: float(kendalltau(x, y).statistic), True)


def top_k(n: int, k: Optional[int] = None, share: Optional[float] = None) -> int:
    return max(1, min(n, k if k is not None else math.ceil(share * n)))


def _top(values: np.ndarray, k: int) -> set:
    return set(np.argsort(-values, kind="stable")[:k].tolist())  # ties: the earlier token first


def token_top_k(a: np.ndarray, b: np.ndarray, k: Optional[int] = None, share: Optional[float] = None) -> Scores:
    def fn(x, y):
        kk = top_k(len(x), k, share)
        return len(_top(x, kk) & _top(y, kk)) / kk

    return _score(a, b, fn, True)


def _metric(name: str, kind: str, bounds: tuple[float, float], score) -> Metric:
    return Metric(name, kind, bounds, True, True, lambda a, b, c: score(a, b))


TOKEN_METRICS: dict[str, Metric] = {
    "spearman_abs": _metric("spearman_abs", "abs", (-1.0, 1.0), token_spearman),
    "spearman": _metric("spearman", "signed", (-1.0, 1.0), token_spearman),
    "kendall": _metric("kendall", "abs", (-1.0, 1.0), token_kendall),
    "top1": _metric("top1", "abs", (0.0, 1.0), lambda a, b: token_top_k(a, b, k=1)),
    "top3": _metric("top3", "abs", (0.0, 1.0), lambda a, b: token_top_k(a, b, k=3)),
    "top20pct": _metric("top20pct", "abs", (0.0, 1.0), lambda a, b: token_top_k(a, b, share=0.2)),
}
TEXT_DEFAULT_METRICS = ["spearman_abs", "spearman", "kendall", "top1", "top3", "top20pct"]


def token_noise(seed: int, which: str, image_ids, length: int) -> torch.Tensor:
    """(B, L) N(0, 1) token maps, sentence i's from its own generator (seed, "calibration", which, i)."""
    from benchmark import rng

    return torch.stack([torch.randn((length,), generator=rng.generator(seed, "calibration", which, int(i)))
                        for i in image_ids])
