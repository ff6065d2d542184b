"""The paper's post-processing of maps before comparison (PROTOCOL.md).

All functions are batch-first and per image: no normalization shares a maximum across the
batch. Input maps are (B, C, H, W); outputs are (B, H, W) float64 numpy arrays. A map with any
NaN or infinite value (a randomized model whose output overflowed) comes out all NaN, so its
scores are NaN with ``nan_reason=non_finite_map`` rather than numbers from the finite pixels.
"""

from __future__ import annotations

import numpy as np
import torch


def _np(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().numpy()
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4:
        raise ValueError(f"maps must be (B, C, H, W); got shape {maps.shape}")
    return maps


def _non_finite_rows_to_nan(maps: np.ndarray, out: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
    out[bad] = np.nan
    return out


def abs_map(maps: torch.Tensor | np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """ABS: sum of |m| over channels, (m - min) / (p99 - min), clipped to [0, 1].

    The top 1% saturate at 1 and tie, as in the paper's code. Where the percentile equals the
    minimum (more than 99% of the map at its minimum) the maximum is used instead, so the map
    keeps its order rather than dividing by zero; a constant map stays constant (all 0).
    """
    raw = _np(maps)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.abs(raw).sum(axis=1)
        flat = m.reshape(len(m), -1)
        lo = flat.min(axis=1)
        hi = np.percentile(flat, percentile, axis=1)
        hi = np.where(hi > lo, hi, flat.max(axis=1))
        span = np.where(hi > lo, hi - lo, 1.0)
        out = np.clip((m - lo[:, None, None]) / span[:, None, None], 0.0, 1.0)
    return _non_finite_rows_to_nan(raw, out)


def signed_map(maps: torch.Tensor | np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """No-ABS (diverging): signed channel sum divided by the p99 of |m|, clipped to [-1, 1]."""
    raw = _np(maps)
    with np.errstate(invalid="ignore", over="ignore"):
        m = raw.sum(axis=1)
        flat = np.abs(m.reshape(len(m), -1))
        span = np.percentile(flat, percentile, axis=1)
        span = np.where(span > 0, span, flat.max(axis=1))
        span = np.where(span > 0, span, 1.0)
        out = np.clip(m / span[:, None, None], -1.0, 1.0)
    return _non_finite_rows_to_nan(raw, out)


def minmax_map(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    """SSIM / HOG input of the paper's code: the signed channel sum min-max scaled to [0, 1].

    A constant map has no scale and becomes all zeros; its similarity is reported as NaN.
    """
    raw = _np(maps)
    with np.errstate(invalid="ignore", over="ignore"):
        m = raw.sum(axis=1)
        flat = m.reshape(len(m), -1)
        lo, hi = flat.min(axis=1), flat.max(axis=1)
        span = np.where(hi > lo, hi - lo, 1.0)
        out = (m - lo[:, None, None]) / span[:, None, None]
    return _non_finite_rows_to_nan(raw, out)


PROCESSORS = {"abs": abs_map, "signed": signed_map, "minmax": minmax_map}
