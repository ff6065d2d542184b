import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.config import DataConfig
from benchmark.data import load_dataset
from benchmark.data.mnist import read_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_mnist = pytest.mark.skipif(not (SHARED / "MNIST" / "raw").exists(), reason="../shared/data/MNIST not present")


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_digits_are_in_mnist_layout():
    d = load_dataset(DataConfig())
    assert d.train_images.shape[1:] == (1, 28, 28) and len(d.eval_images) == 360
    assert d.train_images.min() >= 0 and d.train_images.max() <= 1
    assert torch.all(d.train_images[:, :, :4, :] == 0)  # the 4-pixel border, as MNIST


@needs_mnist
def test_official_test_split_alone_is_carved_deterministically():
    a = load_dataset(DataConfig(name="mnist", root=str(SHARED)))
    b = load_dataset(DataConfig(name="mnist", root=str(SHARED)))
    assert len(a.train_images) == 8000 and len(a.eval_images) == 2000
    assert a.provenance["carved"] and "only the official test split" in a.provenance["split"]
    assert torch.equal(a.eval_images, b.eval_images) and torch.equal(a.train_labels, b.train_labels)
    assert a.train_images.max() == 1.0 and a.train_images.dtype == torch.float32
    counts = torch.bincount(a.eval_labels, minlength=10)
    assert counts.min() > 150  # stratified


def test_both_splits_gz_or_plain_are_used_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (30, 28, 28)), gz=True)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(30) % 10, gz=True)
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28)), gz=False)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(20) % 10, gz=False)
    d = load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path)))
    assert len(d.train_images) == 30 and len(d.eval_images) == 20 and not d.provenance["carved"]


def test_missing_root_and_missing_files_name_the_key_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"data.root='/nonexistent/x' does not exist"):
        load_dataset(DataConfig(name="mnist", root="/nonexistent/x"))
    with pytest.raises(ValueError, match="data.root is not set"):
        load_dataset(DataConfig(name="mnist"))
    with pytest.raises(ValueError, match="set data.download=true"):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False))


def test_truncated_idx_file_is_detected(tmp_path):
    write_idx(tmp_path / "x", np.zeros((5, 4, 4)), gz=False)
    data = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(data[:-7])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "x")
