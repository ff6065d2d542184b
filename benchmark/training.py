"""Train and evaluate the paper's models; checkpoints cached by a hash of what sets the weights."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from benchmark import rng
from benchmark.config import TrainingConfig
from benchmark.data import Dataset
from benchmark.models import Architecture
from benchmark.store import atomic_write, file_sha256, to_plain

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    model: nn.Module
    train_accuracy: float
    eval_accuracy: float
    checkpoint: Optional[str]
    from_cache: bool
    seconds: float


def build_model(arch: Architecture, data: Dataset, seed: int) -> nn.Module:
    """The architecture with every unit drawn from its own generator (seed, 'init', unit)."""
    model = arch.build(data.in_channels, data.num_classes)
    with torch.no_grad():
        for unit, paths in arch.units.items():
            g = rng.generator(seed, "init", unit)
            for path in paths:
                arch.init_module(model.get_submodule(path), g)
    return model


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on (N, C, H, W) images."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(images[i : i + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == labels[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(images))


def checkpoint_key(arch: Architecture, data: Dataset, training: TrainingConfig, seed: int,
                   labels: str = "true") -> str:
    """Hash of everything that affects the trained weights."""
    spec: dict[str, Any] = {
        "arch": arch.name,
        "data": data.name,
        "data_provenance": data.provenance,
        "training": to_plain(training),
        "seed": seed,
        "labels": labels,
        "torch": torch.__version__.split("+")[0],
        "format": 1,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_checked(path: Path) -> Optional[dict[str, torch.Tensor]]:
    digest_file = path.with_suffix(".sha256")
    if not path.exists() or not digest_file.exists():
        return None
    if file_sha256(path) != digest_file.read_text().strip():
        log.warning("checkpoint %s does not match its hash (corrupted or truncated); retraining", path)
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a file that passes the hash but does not load is still not valid
        log.warning("checkpoint %s could not be read (%s); retraining", path, err)
        return None


def _save_checked(path: Path, state: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda p: torch.save(state, p))
    atomic_write(path.with_suffix(".sha256"), lambda p: p.write_text(file_sha256(path) + "\n"))


def train_model(
    arch: Architecture,
    data: Dataset,
    training: TrainingConfig,
    seed: int,
    device: torch.device,
    cache_dir: Optional[Path],
    progress: bool = True,
    weights: Optional[str] = None,
) -> TrainedModel:
    """Train on the true labels (or load ``weights`` / the cached checkpoint)."""
    start = time.time()
    model = build_model(arch, data, seed).to(device)
    if weights is not None:
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(f"model.weights={weights!r} does not exist; give the path of a state dict")
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        ckpt, cached = str(path), True
    else:
        key = checkpoint_key(arch, data, training, seed)
        ckpt_path = Path(cache_dir) / "checkpoints" / f"{arch.name}_{data.name}_{key}.pt" if cache_dir else None
        state = _load_checked(ckpt_path) if ckpt_path else None
        if state is not None:
            model.load_state_dict(state)
            cached = True
            log.info("loaded checkpoint %s", ckpt_path)
        else:
            fit(model, data.train_images, data.train_labels, training, seed, device, progress)
            cached = False
            if ckpt_path:
                _save_checked(ckpt_path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        ckpt = str(ckpt_path) if ckpt_path else None
    model.eval()
    train_acc = evaluate(model, data.train_images, data.train_labels)
    eval_acc = evaluate(model, data.eval_images, data.eval_labels)
    log.info("%s on %s: train accuracy %.4f, held-out accuracy %.4f%s", arch.name, data.name, train_acc,
             eval_acc, " (cached)" if cached else "")
    return TrainedModel(model, train_acc, eval_acc, ckpt, cached, time.time() - start)


def fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, training: TrainingConfig, seed: int,
        device: torch.device, progress: bool = True) -> None:
    """Adam on cross-entropy; batches shuffled by the generator (seed, 'shuffle')."""
    if training.epochs < 1 or training.batch_size < 1 or training.lr <= 0:
        raise ValueError(
            f"training.epochs={training.epochs}, training.batch_size={training.batch_size} and "
            f"training.lr={training.lr} must all be positive"
        )
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    g = rng.generator(seed, "shuffle")
    n = len(images)
    for epoch in range(training.epochs):
        order = torch.randperm(n, generator=g)
        total, correct, seen = 0.0, 0, 0
        bar = tqdm(range(0, n, training.batch_size), desc=f"epoch {epoch + 1}/{training.epochs}",
                   disable=not progress, leave=False)
        for i in bar:
            idx = order[i : i + training.batch_size]
            x, y = images[idx].to(device), labels[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        log.info("epoch %d/%d: loss %.4f, train accuracy %.4f", epoch + 1, training.epochs, total / seen,
                 correct / seen)
    model.eval()
