"""The paper's post-processing of maps before comparison (PROTOCOL.md).

All functions are batch-first and per image: no normalization shares a maximum across the
batch. Input maps are (B, C, H, W); outputs are (B, H, W) float64 numpy arrays.
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


def abs_map(maps: torch.Tensor | np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """ABS: sum of |m| over channels, (m - min) / (p99 - min), clipped to [0, 1].

    The top 1% saturate at 1 and tie, as in the paper's code. Where the percentile equals the
    minimum (more than 99% of the map at its minimum) the maximum is used instead, so the map
    keeps its order rather than dividing by zero; a constant map stays constant (all 0).
    """
    m = np.abs(_np(maps)).sum(axis=1)
    flat = m.reshape(len(m), -1)
    lo = flat.min(axis=1)
    hi = np.percentile(flat, percentile, axis=1)
    hi = np.where(hi > lo, hi, flat.max(axis=1))
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.clip((m - lo[:, None, None]) / span[:, None, None], 0.0, 1.0)


def signed_map(maps: torch.Tensor | np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """No-ABS (diverging): signed channel sum divided by the p99 of |m|, clipped to [-1, 1]."""
    m = _np(maps).sum(axis=1)
    flat = np.abs(m.reshape(len(m), -1))
    span = np.percentile(flat, percentile, axis=1)
    span = np.where(span > 0, span, flat.max(axis=1))
    span = np.where(span > 0, span, 1.0)
    return np.clip(m / span[:, None, None], -1.0, 1.0)


def minmax_map(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    """SSIM / HOG input of the paper's code: the signed channel sum min-max scaled to [0, 1].

    A constant map has no scale and becomes all zeros; its similarity is reported as NaN.
    """
    m = _np(maps).sum(axis=1)
    flat = m.reshape(len(m), -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (m - lo[:, None, None]) / span[:, None, None]


PROCESSORS = {"abs": abs_map, "signed": signed_map, "minmax": minmax_map}
