"""MNIST and Fashion-MNIST from torchvision's raw file layout (``<root>/<Folder>/raw/*-ubyte[.gz]``).

The idx files are read directly (gzipped or not), so a folder holding only some of the
official files still works offline. When both official splits are present they are used as
they are; when only one is present (for instance only the official test split), a
deterministic, stratified train / held-out split is carved from it and the run's metadata says
so. With ``download=true`` and no files, torchvision downloads them into ``root``.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from benchmark.config import DataConfig
from benchmark.data import Dataset, stratified_split

FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format: big-endian header, then uint8 data), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08: unsigned byte
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {arr.size} values for shape {dims}")
    return arr.reshape(dims)


def _find(raw: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        if (raw / name).exists():
            return raw / name
    return None


def _split_files(raw: Path, split: str) -> Optional[tuple[Path, Path]]:
    images, labels = (_find(raw, stem) for stem in SPLITS[split])
    return (images, labels) if images and labels else None


def _read_split(files: tuple[Path, Path]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(read_idx(files[0]).astype(np.float32) / 255.0).unsqueeze(1)
    labels = torch.from_numpy(read_idx(files[1]).astype(np.int64))
    if len(images) != len(labels):
        raise ValueError(f"{files[0]} has {len(images)} images but {files[1]} has {len(labels)} labels")
    return images, labels


def _download(name: str, root: Path) -> None:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}[name]
    for train in (True, False):
        cls(root=str(root), train=train, download=True)


def load_mnist_like(cfg: DataConfig, name: str) -> Dataset:
    folder = FOLDERS[name]
    if cfg.root is None:
        raise ValueError(f"data.root is not set for data.name={name!r}; point it at the folder that holds "
                         f"{folder}/raw, e.g. data.root=../shared/data")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise ValueError(f"data.root={cfg.root!r} does not exist or is not a folder; point it at the folder "
                         f"that holds {folder}/raw (or an empty folder with data.download=true)")
    raw = root / folder / "raw"
    found = {split: _split_files(raw, split) for split in SPLITS}
    if not any(found.values()):
        if not cfg.download:
            raise ValueError(
                f"data.root={cfg.root!r}: no {folder} idx files in {raw}; set data.download=true to fetch them, "
                f"or point data.root at a folder holding {folder}/raw/t10k-images-idx3-ubyte[.gz] and the labels"
            )
        _download(name, root)
        found = {split: _split_files(raw, split) for split in SPLITS}
    g = np.random.default_rng(cfg.split_seed)
    if found["train"] and found["test"]:
        train_x, train_y = _read_split(found["train"])
        eval_x, eval_y = _read_split(found["test"])
        order = torch.from_numpy(g.permutation(len(train_x)))
        train_x, train_y = train_x[order], train_y[order]
        order = torch.from_numpy(g.permutation(len(eval_x)))
        eval_x, eval_y = eval_x[order], eval_y[order]
        split = f"official train / test split, each in a fixed order shuffled by split_seed {cfg.split_seed}"
        source = [str(p) for p in (*found["train"], *found["test"])]
    else:
        present = "train" if found["train"] else "test"
        x, y = _read_split(found[present])
        tr, ev = stratified_split(y.numpy(), cfg.holdout_fraction, cfg.split_seed)
        train_x, train_y, eval_x, eval_y = x[tr], y[tr], x[ev], y[ev]
        split = (f"only the official {present} split is present: carved into {len(tr)} train and {len(ev)} "
                 f"held-out images (stratified, holdout_fraction {cfg.holdout_fraction}, split_seed "
                 f"{cfg.split_seed})")
        source = [str(p) for p in found[present]]
    return Dataset(
        name=name, train_images=train_x, train_labels=train_y, eval_images=eval_x, eval_labels=eval_y,
        num_classes=10,
        provenance={"source": f"{folder} idx files", "files": source, "split": split,
                    "carved": not (found["train"] and found["test"]),
                    "n_train": len(train_x), "n_eval": len(eval_x)},
    )
