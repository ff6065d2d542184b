"""A task with a known ground truth: the digits with a planted square that decides the label (``data=planted``).

Each image is one of scikit-learn's digits in MNIST layout (``benchmark.data.digits``) and a bright square of
``data.planted_size`` pixels in the 4-pixel border around the digit, at one of ten places (five along the top, five
along the bottom). With ``data.planted_variant=pattern`` the label is drawn uniformly and independently of the digit
(seeded by ``split_seed``) and the square sits at the label's place: the square is the only evidence. With
``planted_variant=digit`` the digit's own label is kept and the square sits at a place drawn independently of it: a
distractor. Either way the mask of every image's square is kept (``Dataset.eval_regions``, (N, H, W) bool), so
a map can be scored against where the evidence is (``benchmark.localization``): with the trained model a faithful
map of the pattern task points at the square, and after randomization it must stop doing so.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as _sk_load_digits

from benchmark import rng
from benchmark.config import DataConfig
from benchmark.data import Dataset
from benchmark.data.digits import digits_as_mnist, split_dataset

BORDER = 4  # pixels between the 28 x 28 image's edge and the digit's 20 x 20 box
VARIANTS = ("pattern", "digit")


def check_planted(cfg: DataConfig) -> None:
    if cfg.planted_variant not in VARIANTS:
        raise ValueError(f"data.planted_variant={cfg.planted_variant!r} is not a variant; use pattern (the square "
                         "decides the label) or digit (the square is a distractor)")
    size = cfg.planted_size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= BORDER:
        raise ValueError(f"data.planted_size={size!r} must be a whole number of pixels from 1 to {BORDER}: the square "
                         f"sits in the {BORDER}-pixel border around the digit, which a larger one would cover")


def places(size: int) -> list[tuple[int, int]]:
    """(row, column) of the square's top-left corner for each of the ten places: five along the top border, five
    along the bottom, spread over the width."""
    cols = np.linspace(1, 28 - size - 1, 5).round().astype(int)
    top, bottom = (BORDER - size) // 2, 28 - BORDER + (BORDER - size) // 2
    return [(top, int(c)) for c in cols] + [(bottom, int(c)) for c in cols]


def plant(images: torch.Tensor, where: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images with a square of 1.0 at place ``where[i]`` of each, and the squares' masks (N, H, W)."""
    out = images.clone()
    masks = torch.zeros((len(images),) + tuple(images.shape[-2:]), dtype=torch.bool)
    corners = places(size)
    for i, k in enumerate(where.tolist()):
        r, c = corners[k]
        out[i, :, r : r + size, c : c + size] = 1.0
        masks[i, r : r + size, c : c + size] = True
    return out, masks


def load_planted(cfg: DataConfig) -> Dataset:
    check_planted(cfg)
    bunch = _sk_load_digits()
    digits = torch.as_tensor(bunch.target, dtype=torch.int64)
    drawn = torch.randint(0, 10, (len(digits),), generator=rng.generator(cfg.split_seed, "planted", cfg.planted_variant))
    labels = drawn if cfg.planted_variant == "pattern" else digits
    images, masks = plant(digits_as_mnist(bunch.images), drawn, cfg.planted_size)
    pattern = cfg.planted_variant == "pattern"
    decides = "the square's place (ten places)" if pattern else "the digit; the square is a distractor"
    return split_dataset("planted", images, labels, cfg, {
        "source": "sklearn.datasets.load_digits (1797 images) with a planted square (benchmark.data.planted)",
        "layout": "8x8 scaled to [0,1], resized to 20x20, padded to 28x28; a square of 1.0 in the border",
        "label": decides,
        "planted_size": cfg.planted_size,
        "variant": cfg.planted_variant,
    }, regions=masks)
