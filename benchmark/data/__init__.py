"""Data sets: (images, labels) tensors with their input range and provenance."""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from benchmark.config import DataConfig

if TYPE_CHECKING:
    from benchmark.models.imagenet import Preprocessing


@dataclass
class Dataset:
    """A train split and a held-out split; images (N, C, H, W) float32, labels (N,) int64."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    num_classes: int
    # Range of the model's input space: SmoothGrad's noise scale and IG's baseline refer to it.
    input_range: tuple[float, float] = (0.0, 1.0)
    # What a reader must know about where the data came from (recorded in meta.json).
    provenance: dict[str, Any] = field(default_factory=dict)
    # Where the evidence is, where the data set knows it (data=planted): (N_eval, H, W) bool.
    eval_regions: Optional[torch.Tensor] = None
    # "image", or "text": the inputs are token rows (N, L, 3) int64 (benchmark.data.text)
    modality: str = "image"
    # Text: each held-out sentence's tokens as the tokenizer spells them (the report's heat maps), and the IDF of
    # every token id in the training split (the model-independent control).
    eval_tokens: Optional[list] = None
    idf: Optional[torch.Tensor] = None

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1]) if self.modality == "image" else 0

    @property
    def image_size(self) -> tuple[int, int]:
        if self.modality != "image":
            return 1, int(self.eval_images.shape[1])
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])


# (images, classes) of the data sets whose size is known before they are loaded (scikit-learn's bundled digits).
KNOWN_SIZES = {"digits": (1797, 10), "planted": (1797, 10)}
# Data sets without labels: target=label cannot work on them.
UNLABELLED = frozenset({"skimage_photos"})


def check_holdout_fraction(fraction: float, name: Optional[str] = None) -> None:
    """A fraction in (0, 1) and, where the data set's size is known, one that leaves an image of every class on
    both sides of the stratified split (scikit-learn holds out ceil(fraction x images))."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.holdout_fraction={fraction} must lie strictly between 0 and 1, e.g. 0.2")
    if name in KNOWN_SIZES:
        n, classes = KNOWN_SIZES[name]
        held = math.ceil(fraction * n)
        if min(held, n - held) < classes:
            raise ValueError(f"data.holdout_fraction={fraction} cannot give a stratified split of the {n} {name} "
                             f"images: {held} held out and {n - held} for training, and each side needs one of every "
                             f"one of the {classes} classes; choose a fraction such as 0.2")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a deterministic stratified train / held-out split (``data.holdout_fraction``)."""
    check_holdout_fraction(fraction)
    try:
        return train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels)
    except ValueError as err:
        raise ValueError(f"data.holdout_fraction={fraction} cannot give a stratified split of {len(labels)} images "
                         f"({err}); choose a fraction such as 0.2") from None


def _load_digits(cfg: DataConfig) -> Dataset:
    from benchmark.data.digits import load_digits

    return load_digits(cfg)


def _load_mnist(cfg: DataConfig) -> Dataset:
    from benchmark.data.mnist import load_mnist_like

    return load_mnist_like(cfg, "mnist")


def _load_fashion_mnist(cfg: DataConfig) -> Dataset:
    from benchmark.data.mnist import load_mnist_like

    return load_mnist_like(cfg, "fashion_mnist")


def _load_planted(cfg: DataConfig) -> Dataset:
    from benchmark.data.planted import load_planted

    return load_planted(cfg)


LOADERS: dict[str, Callable[[DataConfig], Dataset]] = {
    "digits": _load_digits,
    "planted": _load_planted,
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
}


def _load_image_folder(cfg: DataConfig, pre: "Preprocessing", limit: Optional[int]) -> Dataset:
    from benchmark.data.photos import load_image_folder

    return load_image_folder(cfg, pre, limit)


def _load_skimage_photos(cfg: DataConfig, pre: "Preprocessing", limit: Optional[int]) -> Dataset:
    from benchmark.data.photos import load_skimage_photos

    return load_skimage_photos(cfg, pre, limit)


# Photographs for ImageNet models: preprocessed as the model expects, no train split.
PHOTO_LOADERS: dict[str, Callable[[DataConfig, "Preprocessing", Optional[int]], Dataset]] = {
    "image_folder": _load_image_folder,
    "skimage_photos": _load_skimage_photos,
}


# Labelled sentences for text classifiers, tokenized by the model's tokenizer (benchmark.data.text).
TEXT_DATA = ("sentiment", "text_file")


def check_data_name(name: str) -> None:
    if name not in LOADERS and name not in PHOTO_LOADERS and name not in TEXT_DATA:
        raise ValueError(f"data.name={name!r} is not a known data set; use one of "
                         f"{sorted(LOADERS) + sorted(PHOTO_LOADERS) + sorted(TEXT_DATA)}")


def load_dataset(cfg: DataConfig, preprocessing: Optional["Preprocessing"] = None,
                 limit: Optional[int] = None) -> Dataset:
    """The data set; photographs need the model's ``preprocessing`` and load at most ``limit`` images."""
    check_data_name(cfg.name)
    if cfg.name in TEXT_DATA:
        from benchmark.data.text import load_text
        from benchmark.models.text import TextModelSpec

        if not isinstance(preprocessing, TextModelSpec):
            raise ValueError(f"data.name={cfg.name!r} holds sentences for text classifiers; choose model=minilm or "
                             "model=hf model.name_or_path=<folder or hub name>")
        data = load_text(cfg, preprocessing)
    elif cfg.name in PHOTO_LOADERS:
        if preprocessing is None:
            raise ValueError(f"data.name={cfg.name!r} holds photographs for ImageNet models; choose "
                             "model=inception_v3, vgg16 or resnet50")
        return PHOTO_LOADERS[cfg.name](cfg, preprocessing, limit)
    else:
        data = LOADERS[cfg.name](cfg)
    if cfg.n_train is not None:
        if not 0 < cfg.n_train <= len(data.train_images):
            raise ValueError(f"data.n_train={cfg.n_train} must lie in [1, {len(data.train_images)}] for "
                             f"{cfg.name!r}, or be null for the whole train split")
        data.train_images = data.train_images[: cfg.n_train]
        data.train_labels = data.train_labels[: cfg.n_train]
        data.provenance = {**data.provenance, "n_train": cfg.n_train,
                           "n_train_note": f"first {cfg.n_train} images of the train split"}
    return data
