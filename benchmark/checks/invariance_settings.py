"""The input invariance test's settings: the shift (``mean`` or numbers, checked before any compute; its value per
channel from the data) and the tolerance of the verdict."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Optional

import torch

from benchmark.config import InputInvarianceConfig

# Beyond this |shift| float32 rounds the images' values away (x + 1e6 keeps steps of 0.06).
MAX_SHIFT = 1e6


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_settings(c: InputInvarianceConfig, channels: Optional[int] = None) -> None:
    """``shift`` is ``mean``, a finite number or one finite number per channel (``channels``, where known), not
    all zero and at most ``MAX_SHIFT``; ``tolerance`` lies in (0, 1). ValueError with the key, the value, the fix."""
    fix = ("use mean (the training split's per-channel mean), a number, e.g. input_invariance.shift=1.0, or one "
           "number per channel, e.g. input_invariance.shift=[0.5,0.4,0.4]")
    shift = c.shift
    if isinstance(shift, str):
        if shift != "mean":
            raise ValueError(f"input_invariance.shift={shift!r} is not a shift; {fix}")
    else:
        values = list(shift) if isinstance(shift, (list, tuple)) else [shift]
        if not values or not all(_number(v) for v in values):
            raise ValueError(f"input_invariance.shift={shift!r} is not a shift; {fix}")
        for v in values:
            if not math.isfinite(v):
                raise ValueError(f"input_invariance.shift={shift!r} is not a finite number; {fix}")
            if abs(v) > MAX_SHIFT:
                raise ValueError(f"input_invariance.shift={shift!r} is too large: x + shift is computed in float32, "
                                 f"which beyond |shift| = {MAX_SHIFT:g} rounds the images' values away (and overflows "
                                 "the first layer); use a shift of the data's scale, e.g. input_invariance.shift=mean")
        if all(v == 0 for v in values):
            raise ValueError(f"input_invariance.shift={shift!r} leaves the input unchanged: both stages would be the "
                             f"same model on the same images; {fix}")
        if isinstance(shift, (list, tuple)) and channels is not None and len(values) not in (1, channels):
            raise ValueError(f"input_invariance.shift={shift!r} has {len(values)} values and the model's input has "
                             f"{channels} channel(s); give one number, or one per channel")
    tol = c.tolerance
    if not _number(tol) or not math.isfinite(tol) or not 0 < tol < 1:
        raise ValueError(f"input_invariance.tolerance={tol!r} must be a number in (0, 1): how far from identical "
                         "(the mean difference of the min-max scaled maps, or 1 - similarity) a method's maps may be "
                         "and still count as invariant; e.g. 1e-3")


def shift_of(c: InputInvarianceConfig, data: Any) -> tuple[torch.Tensor, str]:
    """The shift per channel, (C,) float32, and where it came from: ``mean`` is the per-channel mean of the
    training split (of the held-out split where there is none: images given to ``benchmark.sanity_check``)."""
    channels = int(data.eval_images.shape[1])
    if isinstance(c.shift, str):
        train = len(data.train_images) > 0
        images = data.train_images if train else data.eval_images
        values = images.double().mean(dim=(0, 2, 3)).float()
        source = "mean of the training split per channel" if train else "mean of the given images per channel"
        if bool((values == 0).all()):
            raise ValueError("input_invariance.shift=mean: the data's mean is 0 in every channel, so the shift leaves "
                             "the input unchanged; give a number, e.g. input_invariance.shift=1.0")
        return values, source
    values = list(c.shift) if isinstance(c.shift, (list, tuple)) else [c.shift]
    check_settings(c, channels)
    if len(values) == 1:
        values = values * channels
    return torch.tensor([float(v) for v in values], dtype=torch.float32), "given"
