"""Perturbation methods: occlusion, leave-one-out and LIME, from forward passes only.

Each asks the engine for one ``Perturbation`` primitive: a set of boolean masks per image (True: the pixel is
deleted, i.e. takes the fill's value in every channel) and how the target scores of the masked images become
the map. The engine (``benchmark.engine.forward``) runs every distinct masked image of an image once under
``no_grad``, for all methods with the same fill (occlusion with window = stride and leave-one-out on the same
grid read the same passes), in memory-budgeted chunks, and through every stage explained together, the
unchanged lower layers computed once.

- ``occlusion``: Zeiler and Fergus' sliding window with Captum ``Occlusion``'s semantics: windows at 0, stride,
  2 x stride, ... until one reaches the far edge (cropped there); each pixel gets the mean score drop
  f(x) - f(x_window) over the windows that cover it.
- ``leave_one_out``: one region at a time (SLIC superpixels or a grid of cells); each pixel gets its region's
  score drop. On 1-pixel cells it is Captum's ``FeatureAblation`` without a feature mask.
- ``lime``: Ribeiro et al. 2016 over the same regions: ``n_samples`` random on/off vectors (each region kept
  with probability 1/2, drawn from the run's generator for the image), the masked images' target scores,
  weights exp(-d^2 / (2 width^2)) of the cosine distance d between the image and its masked copy (Captum
  ``Lime``'s default kernel), a weighted ridge fit (scikit-learn); each pixel gets its region's coefficient.

Fills (``zero``, ``mean``, ``blur``), windows and regions are ``benchmark.methods.masks``. Scores: the target's
logit or its softmax probability (``output``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from benchmark import rng
from benchmark.methods.base import Method
from benchmark.methods.masks import (FILLS, OUTPUTS, REGIONS, _spread, default_segments, default_window, grid_labels,
                                     region_masks, slic_labels, window_masks)
from benchmark.methods.primitives import Perturbation

# -- primitives --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OcclusionScores(Perturbation):
    window: tuple[int, int] = (0, 0)  # 0: sized to the input
    stride: tuple[int, int] = (0, 0)

    def sizes(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        auto = default_window(height), default_window(width)
        window = tuple(w or a[0] for w, a in zip(self.window, auto))
        stride = tuple(s or (a[1] if not w else max(1, w // 2)) for s, w, a in zip(self.stride, self.window, auto))
        return window, stride  # type: ignore[return-value]

    def prepare(self, x, image_id, seed):
        return window_masks(x.shape[1], x.shape[2], *self.sizes(x.shape[1], x.shape[2])), None

    def finish(self, x, fill, masks, aux, scores, base):
        return _spread(base - scores, masks, mean=True)


@dataclass(frozen=True)
class RegionScores(Perturbation):
    """The regions of leave-one-out and LIME: SLIC superpixels or grid cells."""

    regions: str = "slic"
    n_segments: int = 0  # SLIC's requested count; 0: default_segments
    compactness: float = 0.1
    cell: int = 0  # grid cell side; 0: occlusion's default window

    def labels(self, x: torch.Tensor) -> np.ndarray:
        h, w = x.shape[1:]
        if self.regions == "grid":
            return grid_labels(h, w, self.cell or default_window(min(h, w))[0])
        return slic_labels(x, self.n_segments or default_segments(h, w), self.compactness)

    def prepare(self, x, image_id, seed):
        return region_masks(self.labels(x)), None

    def finish(self, x, fill, masks, aux, scores, base):
        return _spread(base - scores, masks, mean=False)


@dataclass(frozen=True)
class LimeScores(RegionScores):
    n_samples: int = 1000
    kernel_width: float = 1.0
    alpha: float = 1.0  # ridge penalty

    def draws(self, n_regions: int, image_id: int, seed: int) -> torch.Tensor:
        """(n_samples, R) on/off vectors (1: the region is kept), the same at every stage."""
        g = rng.generator(seed, "lime", image_id)
        return (torch.rand((self.n_samples, n_regions), generator=g) < 0.5).to(torch.float32)

    def prepare(self, x, image_id, seed):
        labels = torch.from_numpy(self.labels(x))
        regions = region_masks(labels.numpy())
        z = self.draws(len(regions), image_id, seed)
        masks = z[:, labels] < 0.5  # (n, H, W): deleted where the pixel's region is switched off
        return masks, (z, regions)

    def weights(self, x: torch.Tensor, fill: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
        """exp(-d^2 / (2 width^2)), d = 1 - cos(x, x masked), without building the masked copies: per pixel, the
        channel sums x.x, x.fill and fill.fill, combined by each mask (cosine_similarity's eps of 1e-8)."""
        xd, fd = x.double(), fill.double()
        a, b, c = (xd * xd).sum(0).flatten(), (xd * fd).sum(0).flatten(), (fd * fd).sum(0).flatten()
        m = masks.reshape(len(masks), -1).double()
        dot = (1 - m) @ a + m @ b
        norm_p = ((1 - m) @ a + m @ c).sqrt().clamp(min=1e-8)
        cos = dot / (norm_p * a.sum().sqrt().clamp(min=1e-8))
        d = 1.0 - cos
        return torch.exp(-(d * d) / (2 * self.kernel_width**2)).numpy()

    def finish(self, x, fill, masks, aux, scores, base):
        from sklearn.linear_model import Ridge

        z, regions = aux
        w = self.weights(x.cpu(), fill.cpu(), masks)
        fit = Ridge(alpha=self.alpha).fit(z.numpy(), scores.double().numpy(), sample_weight=w)
        return _spread(torch.from_numpy(fit.coef_).float(), regions, mean=False)


# -- methods -----------------------------------------------------------------------------------------------------
def _pair(value: Optional[int]) -> tuple[int, int]:
    return (0, 0) if value is None else (int(value), int(value))


@dataclass(frozen=True)
class _Perturbing(Method):
    """Settings every perturbation method has, and their checks."""

    fill: str = "zero"
    blur_sigma: Optional[float] = None  # None: 10 px at 224, scaled to the image
    output: str = "logit"

    def _fill_args(self) -> dict[str, Any]:
        return {"fill": self.fill, "blur_sigma": float(self.blur_sigma or 0.0), "output": self.output}

    def check(self) -> None:
        key = f"method.{self.name}"
        if self.fill not in FILLS:
            raise ValueError(f"{key}.fill={self.fill!r} is not a fill; use one of {list(FILLS)}")
        if self.blur_sigma is not None and (isinstance(self.blur_sigma, bool) or not isinstance(self.blur_sigma, (int, float))
                                            or not 0 < self.blur_sigma < float("inf")):
            raise ValueError(f"{key}.blur_sigma={self.blur_sigma!r} must be a positive number of pixels, e.g. 2.0, "
                             "or null for the default (10 px at 224, scaled)")
        if self.output not in OUTPUTS:
            raise ValueError(f"{key}.output={self.output!r} is not a score; use one of {list(OUTPUTS)}")

    def combine(self, results):
        return results[self.primitives()[0]]


def _positive_int(key: str, value: Any, example: str, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r} must be a positive whole number of pixels, e.g. {example}"
                         + (", or null to size it to the input" if allow_none else ""))


@dataclass(frozen=True)
class Occlusion(_Perturbing):
    name = "occlusion"
    window: Optional[int] = None  # None: about a seventh of the side (4 at 28, 32 at 224)
    stride: Optional[int] = None  # None: half the window

    def primitives(self):
        return [OcclusionScores(**self._fill_args(), window=_pair(self.window), stride=_pair(self.stride))]

    def check(self) -> None:
        super().check()
        _positive_int("method.occlusion.window", self.window, "4")
        _positive_int("method.occlusion.stride", self.stride, "2")

    def check_input(self, shape: tuple[int, int]) -> None:
        window, stride = self.primitives()[0].sizes(*shape)
        if window[0] > shape[0] or window[1] > shape[1]:
            raise ValueError(f"method.occlusion.window={self.window} is larger than the {shape[0]}x{shape[1]} images; "
                             f"use at most {min(shape)}, or null to size it to the input")
        if any(s > w and w < side for s, w, side in zip(stride, window, shape)):
            raise ValueError(f"method.occlusion.stride={max(stride)} is larger than the window ({max(window)}): pixels "
                             f"between windows would never be occluded; use a stride of at most the window")


@dataclass(frozen=True)
class _Regional(_Perturbing):
    regions: str = "slic"
    n_segments: Optional[int] = None  # SLIC's requested superpixels; None: one per 4 x 4 pixels, at most 200
    compactness: float = 0.1  # SLIC's colour-versus-space balance, on the image scaled to [0, 1]
    cell: Optional[int] = None  # grid cell side; None: occlusion's default window

    def _region_args(self) -> dict[str, Any]:
        return {**self._fill_args(), "regions": self.regions, "n_segments": int(self.n_segments or 0),
                "compactness": float(self.compactness), "cell": int(self.cell or 0)}

    def check(self) -> None:
        super().check()
        key = f"method.{self.name}"
        if self.regions not in REGIONS:
            raise ValueError(f"{key}.regions={self.regions!r} is not a segmentation; use one of {list(REGIONS)}")
        _positive_int(f"{key}.cell", self.cell, "4")
        if self.n_segments is not None and (isinstance(self.n_segments, bool) or not isinstance(self.n_segments, int)
                                            or self.n_segments < 2):
            raise ValueError(f"{key}.n_segments={self.n_segments!r} must be a whole number of at least 2, e.g. 50, "
                             "or null for one superpixel per 4 x 4 pixels")
        if isinstance(self.compactness, bool) or not isinstance(self.compactness, (int, float)) \
                or not 0 < self.compactness < float("inf"):
            raise ValueError(f"{key}.compactness={self.compactness!r} must be a positive number, e.g. 0.1")

    def n_regions(self, shape: tuple[int, int]) -> int:
        """The requested regions on images of ``shape`` (SLIC may return somewhat fewer or more)."""
        if self.regions == "grid":
            cell = self.cell or default_window(min(shape))[0]
            return (-(-shape[0] // cell)) * (-(-shape[1] // cell))
        return self.n_segments or default_segments(*shape)

    def check_input(self, shape: tuple[int, int]) -> None:
        key = f"method.{self.name}"
        if self.regions == "grid" and self.cell is not None and self.cell >= max(shape):
            raise ValueError(f"{key}.cell={self.cell} makes one region of the {shape[0]}x{shape[1]} images; use a "
                             f"cell below {max(shape)}")

    def check_regions(self, x: torch.Tensor) -> None:
        """The regions of one real image: a segmentation of a single region explains nothing."""
        n = int(self.primitives()[0].labels(x).max()) + 1
        if n < 2:
            raise ValueError(f"method.{self.name}: the {self.regions} segmentation (n_segments={self.n_segments}, "
                             f"compactness={self.compactness}) yields 1 region on the first image; raise "
                             f"method.{self.name}.n_segments or lower compactness, or use regions=grid")


@dataclass(frozen=True)
class LeaveOneOut(_Regional):
    name = "leave_one_out"

    def primitives(self):
        return [RegionScores(**self._region_args())]


@dataclass(frozen=True)
class Lime(_Regional):
    name = "lime"
    n_samples: int = 1000
    kernel_width: float = 1.0  # of the exponential kernel on cosine distance (Captum's default)
    alpha: float = 1.0  # the ridge penalty

    def primitives(self):
        return [LimeScores(**self._region_args(), n_samples=int(self.n_samples), kernel_width=float(self.kernel_width),
                           alpha=float(self.alpha))]

    def check(self) -> None:
        super().check()
        _positive_int("method.lime.n_samples", self.n_samples, "1000", allow_none=False)
        for key in ("kernel_width", "alpha"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"method.lime.{key}={value!r} must be a positive number, e.g. 1.0")
        if self.n_segments is not None and self.n_samples < self.n_segments:
            raise ValueError(f"method.lime.n_samples={self.n_samples} is below n_segments={self.n_segments}: the ridge "
                             f"fit needs at least one sample per region; use n_samples >= {self.n_segments} "
                             "(1000 by default)")

    def check_input(self, shape: tuple[int, int]) -> None:
        super().check_input(shape)
        n = self.n_regions(shape)
        if self.n_samples < n:
            raise ValueError(f"method.lime.n_samples={self.n_samples} is below the {n} regions of the {shape[0]}x"
                             f"{shape[1]} images: the ridge fit needs at least one sample per region; use "
                             f"n_samples >= {n}")

