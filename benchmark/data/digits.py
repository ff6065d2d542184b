"""scikit-learn's bundled handwritten digits, laid out like MNIST (the embedded default).

The 8x8 digits (values 0..16) are scaled to [0, 1], resized bilinearly to 20x20 and padded
to 28x28, the way MNIST centres its digits in a 20x20 box, so the paper's MNIST architectures
apply unchanged. No download: the data ship with scikit-learn.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits as _sk_load_digits

from benchmark.config import DataConfig
from benchmark.data import Dataset, stratified_split


def digits_as_mnist(images: np.ndarray) -> torch.Tensor:
    """(N, 8, 8) values in 0..16 -> (N, 1, 28, 28) float32 in [0, 1]."""
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    return F.pad(x, (4, 4, 4, 4)).clamp_(0.0, 1.0)


def split_dataset(name: str, images: torch.Tensor, labels: torch.Tensor, cfg: DataConfig, provenance: dict,
                  regions: Optional[torch.Tensor] = None) -> Dataset:
    """The bundled digits' kind of data set: a stratified train / held-out split (``data.holdout_fraction``,
    ``data.split_seed``) of ten-class images, the split added to ``provenance``, ``regions`` kept for the held-out
    images."""
    train_idx, eval_idx = stratified_split(labels.numpy(), cfg.holdout_fraction, cfg.split_seed)
    return Dataset(
        name=name,
        train_images=images[train_idx],
        train_labels=labels[train_idx],
        eval_images=images[eval_idx],
        eval_labels=labels[eval_idx],
        num_classes=10,
        provenance={
            **provenance,
            "split": f"stratified hold-out fraction {cfg.holdout_fraction}, split_seed {cfg.split_seed}",
            "n_train": len(train_idx),
            "n_eval": len(eval_idx),
        },
        eval_regions=None if regions is None else regions[eval_idx],
    )


def load_digits(cfg: DataConfig) -> Dataset:
    bunch = _sk_load_digits()
    return split_dataset("digits", digits_as_mnist(bunch.images), torch.as_tensor(bunch.target, dtype=torch.int64),
                         cfg, {"source": "sklearn.datasets.load_digits (UCI optical digits, 1797 images)",
                               "layout": "8x8 scaled to [0,1], resized to 20x20, padded to 28x28"})
