"""A task with a known ground truth: the digits with a planted square that decides the label (``data=planted``).

Each image is one of scikit-learn's digits in MNIST layout (``benchmark.data.digits``), or with
``data.planted_base=mnist`` one of the MNIST images under ``data.root`` (both splits as ``data=mnist`` reads them,
each split's squares drawn from its own generator), and a bright square of
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
BASES = ("digits", "mnist")


def check_planted(cfg: DataConfig) -> None:
    if cfg.planted_variant not in VARIANTS:
        raise ValueError(f"data.planted_variant={cfg.planted_variant!r} is not a variant; use pattern (the square "
                         "decides the label) or digit (the square is a distractor)")
    if cfg.planted_base not in BASES:
        raise ValueError(f"data.planted_base={cfg.planted_base!r} is not a base; use digits (scikit-learn's bundled "
                         "digits) or mnist (the MNIST files under data.root, e.g. data.root=../shared/data)")
    if cfg.planted_base == "mnist" and cfg.root is None:
        raise ValueError("data.planted_base=mnist reads the MNIST files under data.root, which is not set; point it at "
                         "the folder that holds MNIST/raw, e.g. data.root=../shared/data")
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


def _provenance(cfg: DataConfig, source: str, layout: str) -> dict:
    pattern = cfg.planted_variant == "pattern"
    return {"source": f"{source} with a planted square (benchmark.data.planted)", "layout": layout,
            "label": "the square's place (ten places)" if pattern else "the digit; the square is a distractor",
            "planted_size": cfg.planted_size, "variant": cfg.planted_variant, "base": cfg.planted_base}


def _overlap(images: torch.Tensor, masks: torch.Tensor) -> float:
    """The share of images whose digit already has ink (> 0) under the square's place, before planting."""
    return float((images.amax(1) * masks > 0).flatten(1).any(1).float().mean())


def load_planted(cfg: DataConfig) -> Dataset:
    check_planted(cfg)
    if cfg.planted_base == "mnist":
        return _load_planted_mnist(cfg)
    bunch = _sk_load_digits()
    digits = torch.as_tensor(bunch.target, dtype=torch.int64)
    drawn = torch.randint(0, 10, (len(digits),), generator=rng.generator(cfg.split_seed, "planted", cfg.planted_variant))
    labels = drawn if cfg.planted_variant == "pattern" else digits
    images, masks = plant(digits_as_mnist(bunch.images), drawn, cfg.planted_size)
    return split_dataset("planted", images, labels, cfg, _provenance(
        cfg, "sklearn.datasets.load_digits (1797 images)",
        "8x8 scaled to [0,1], resized to 20x20, padded to 28x28; a square of 1.0 in the border"), regions=masks)


def _load_planted_mnist(cfg: DataConfig) -> Dataset:
    """MNIST (``data=mnist``'s files and split under ``data.root``) with a square planted in every image. MNIST
    centres each digit's 20 x 20 box by its centre of mass, so a stroke may reach into the border: the share of
    images whose square covers ink is in the provenance (``overlap``)."""
    from benchmark.data.mnist import load_mnist_like

    base = load_mnist_like(cfg, "mnist")
    pattern = cfg.planted_variant == "pattern"
    parts, overlap = {}, {}
    for split in ("train", "eval"):
        images, digits = getattr(base, f"{split}_images"), getattr(base, f"{split}_labels")
        drawn = torch.randint(0, 10, (len(digits),),
                              generator=rng.generator(cfg.split_seed, "planted", cfg.planted_variant, "mnist", split))
        planted, masks = plant(images, drawn, cfg.planted_size)
        overlap[split] = round(_overlap(images, masks), 4)
        parts[split] = (planted, drawn if pattern else digits, masks)
    provenance = {**base.provenance, **_provenance(cfg, "MNIST idx files", "28x28 in [0,1]; a square of 1.0 in the "
                                                   "4-pixel border"), "overlap": overlap}
    return Dataset(name="planted", train_images=parts["train"][0], train_labels=parts["train"][1],
                   eval_images=parts["eval"][0], eval_labels=parts["eval"][1], num_classes=10,
                   provenance=provenance, eval_regions=parts["eval"][2])
