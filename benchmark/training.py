"""Train and evaluate the paper's models; checkpoints cached by a hash of what sets the weights."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from benchmark import rng
from benchmark.config import TrainingConfig
from benchmark.data import Dataset
from benchmark.models import Architecture
from benchmark.runtime import torch_threads
from benchmark.checkpoints import _load_checked, _save_checked, load_weights
from benchmark.store import locked, to_plain

log = logging.getLogger(__name__)


Labels = Literal["true", "random"]


class MemorizationError(RuntimeError):
    """The random-label model did not reach the memorization gate within max_epochs."""


@dataclass
class TrainedModel:
    model: nn.Module
    labels: str  # true | random
    train_accuracy: Optional[float]  # on the labels it was trained with (None: not trained here)
    eval_accuracy: Optional[float]  # on the held-out split's true labels (None: labels unknown)
    checkpoint: Optional[str]
    from_cache: bool
    seconds: float
    epochs: Optional[int] = None  # epochs run (None when loaded)


def label_permutation(n: int, seed: int) -> torch.Tensor:
    """The fixed permutation of training labels, from its own generator (seed, 'label_permutation')."""
    return torch.randperm(n, generator=rng.generator(seed, "label_permutation"))


def training_labels(data: Dataset, labels: Labels, seed: int) -> torch.Tensor:
    if labels == "true":
        return data.train_labels
    if labels == "random":
        return data.train_labels[label_permutation(len(data.train_labels), seed)]
    raise ValueError(f"labels={labels!r} must be 'true' or 'random'")


def build_model(arch: Architecture, data: Dataset, seed: int) -> nn.Module:
    """The architecture with every unit drawn from its own generator (seed, 'init', unit)."""
    model = arch.build(data.in_channels, data.num_classes)
    with torch.no_grad():
        for unit, paths in arch.units.items():
            g = rng.generator(seed, "init", unit)
            for path in paths:
                if arch.fresh_modules is None or path in arch.fresh_modules:
                    arch.init_module(model.get_submodule(path), g)
    return model


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on (N, C, H, W) images."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    if images.dim() == 3 and not images.is_floating_point():  # token rows: batches of similar length pad less
        order = torch.argsort(images[..., 1].sum(1), stable=True)
        images, labels = images[order], labels[order]
    for i in range(0, len(images), batch_size):
        logits = model(images[i : i + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == labels[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(images))


def checkpoint_key(arch: Architecture, data: Dataset, training: TrainingConfig, seed: int,
                   labels: Labels = "true") -> str:
    """Hash of everything that affects the trained weights (the label permutation included)."""
    train = to_plain(training)
    if labels == "true":  # the random-label settings do not affect a true-label model
        for key in ("memorization_gate", "max_epochs", "random_lr", "random_batch_size"):
            train.pop(key, None)
    else:
        train.pop("epochs", None)
    perm = training_labels(data, labels, seed)
    spec: dict[str, Any] = {
        "arch": arch.name,
        "data": data.name,
        "data_provenance": data.provenance,
        "training": train,
        "seed": seed,
        "labels": labels,
        "labels_sha": hashlib.sha256(perm.numpy().tobytes()).hexdigest()[:16],
        "torch": torch.__version__.split("+")[0],
        "format": 1,
    }
    if arch.text is not None:  # text models: which pretrained body and how long a sentence it reads
        spec["text_model"] = [str(arch.text.name_or_path), int(arch.text.max_length)]
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_model(
    arch: Architecture,
    data: Dataset,
    training: TrainingConfig,
    seed: int,
    device: torch.device,
    cache_dir: Optional[Path],
    progress: bool = True,
    weights: Optional[str] = None,
    labels: Labels = "true",
) -> TrainedModel:
    """Train on the true or the permuted labels (or load ``weights`` / the cached checkpoint).

    True labels: ``training.epochs`` epochs. Random labels: epochs until the training accuracy
    on the permuted labels reaches ``training.memorization_gate``; ``MemorizationError`` if
    ``training.max_epochs`` runs out first (nothing is cached then).
    """
    start = time.time()
    if arch.source == "torchvision":
        return load_pretrained(arch, data, seed, device, weights, start)
    model = build_model(arch, data, seed).to(device)
    targets = training_labels(data, labels, seed)
    epochs_run: Optional[int] = None
    if weights is not None:
        model.load_state_dict(load_weights(weights, model))
        ckpt, cached = str(weights), True
    else:
        key = checkpoint_key(arch, data, training, seed, labels)
        name = f"{arch.name}_{data.name}_{labels}_{key}.pt"
        ckpt_path = Path(cache_dir) / "checkpoints" / name if cache_dir else None
        # One process trains a checkpoint; another one asking for it meanwhile waits and loads it.
        with locked(ckpt_path.with_suffix(".pt.lock"), f"checkpoint {name}") if ckpt_path else nullcontext():
            if ckpt_path:  # half-written files of a process killed while it saved this checkpoint
                for stale in ckpt_path.parent.glob(f".{ckpt_path.stem}.*.tmp"):
                    stale.unlink(missing_ok=True)
            state = _load_checked(ckpt_path) if ckpt_path else None
            if state is not None:
                model.load_state_dict(state)
                cached = True
                log.info("loaded checkpoint %s", ckpt_path)
            else:
                settings, gate = training, None
                if labels == "random":
                    settings = dataclasses.replace(
                        training,
                        lr=training.random_lr if training.random_lr is not None else training.lr,
                        batch_size=training.random_batch_size or training.batch_size)
                    gate = training.memorization_gate
                with torch_threads(training.num_threads):
                    epochs_run = fit(model, data.train_images, targets, settings, seed, device, progress, gate=gate)
                cached = False
                if ckpt_path:
                    _save_checked(ckpt_path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        ckpt = str(ckpt_path) if ckpt_path else None
    model.eval()
    train_acc = evaluate(model, data.train_images, targets)
    eval_acc = evaluate(model, data.eval_images, data.eval_labels)
    log.info("%s on %s (%s labels): train accuracy %.4f, held-out accuracy %.4f%s", arch.name, data.name, labels,
             train_acc, eval_acc, " (cached)" if cached else "")
    return TrainedModel(model, labels, train_acc, eval_acc, ckpt, cached, time.time() - start, epochs_run)


def given_model(model: nn.Module, data: Dataset, device: torch.device, source: str,
                labels: Labels = "true") -> TrainedModel:
    """A model used as it is (a user's instance, a torchvision model, ``model=custom`` without training):
    moved to ``device``, eval mode, its accuracy measured where the data have labels."""
    start = time.time()
    model = model.to(device).eval()
    known = data.eval_labels >= 0
    eval_acc = evaluate(model, data.eval_images[known], data.eval_labels[known]) if bool(known.any()) else None
    train_acc = None
    if len(data.train_images) and labels == "true" and bool((data.train_labels >= 0).all()):
        train_acc = evaluate(model, data.train_images, data.train_labels)
    return TrainedModel(model, labels, train_acc, eval_acc, source, True, time.time() - start)


def load_pretrained(arch: Architecture, data: Dataset, seed: int, device: torch.device, weights: Optional[str],
                    start: float) -> TrainedModel:
    """An ImageNet model: torchvision weights or a file, or random weights (``weights=None``); never trained.

    Inception v3 maps ImageNet-normalized inputs back to [-1, 1] itself (torchvision's
    ``transform_input``); with the paper's [-1, 1] scaling the data are already there.
    """
    from benchmark.models import imagenet

    model = build_model(arch, data, seed)
    if weights is not None and Path(weights).expanduser().is_file():  # checked like any other weights file
        model.load_state_dict(load_weights(weights, model))
        source = f"file {weights}"
    else:
        source = imagenet.load_weights(model, arch.name, weights)
    if weights is None:
        log.warning("%s has random weights (model.weights=null): a smoke run, not a sanity check of a trained "
                    "model; set model.weights=DEFAULT (torchvision, downloads once) or a state-dict file", arch.name)
    if hasattr(model, "transform_input") and data.provenance.get("preprocessing"):
        model.transform_input = data.provenance["preprocessing"]["scaling"] == "imagenet"
    model = model.to(device).eval()
    known = data.eval_labels >= 0
    eval_acc = evaluate(model, data.eval_images[known], data.eval_labels[known]) if bool(known.any()) else None
    return TrainedModel(model, "true", None, eval_acc, source, weights is not None, time.time() - start)


def _rewritten(model: nn.Module):
    """The model's reversible rewrite with the same values and gradients (``MnistCNN.equivalent_rewrite``), if any."""
    rewrite = getattr(model, "equivalent_rewrite", None)
    return rewrite() if rewrite is not None else nullcontext()


def fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, training: TrainingConfig, seed: int,
        device: torch.device, progress: bool = True, gate: Optional[float] = None) -> int:
    """Adam on cross-entropy; batches shuffled by the generator (seed, 'shuffle').

    Without a gate, ``training.epochs`` epochs. With one, epochs until the eval-mode accuracy on
    (images, labels) reaches it, at most ``training.max_epochs``. Returns the epochs run.
    """
    if training.epochs < 1 or training.batch_size < 1 or training.lr <= 0:
        raise ValueError(
            f"training.epochs={training.epochs}, training.batch_size={training.batch_size} and "
            f"training.lr={training.lr} must all be positive"
        )
    model.train()
    # fused Adam: one kernel for all parameters (several times faster on the MLP's 6.5M weights)
    opt = torch.optim.Adam(model.parameters(), lr=training.lr, weight_decay=training.weight_decay, fused=True)
    g = rng.generator(seed, "shuffle")
    n = len(images)
    n_epochs = training.epochs if gate is None else training.max_epochs
    accuracy = 0.0
    for epoch in range(n_epochs):
        order = torch.randperm(n, generator=g)
        total, correct, seen = 0.0, 0, 0
        bar = tqdm(range(0, n, training.batch_size), desc=f"epoch {epoch + 1}/{n_epochs}",
                   disable=not progress, leave=False)
        for i in bar:
            idx = order[i : i + training.batch_size]
            x, y = images[idx].to(device), labels[idx].to(device)
            with _rewritten(model):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            if not bool(torch.isfinite(loss)):
                raise ValueError(f"training diverged in epoch {epoch + 1}: the loss became {float(loss)}; lower "
                                 f"training.lr={training.lr} (or training.random_lr) and rerun; nothing was cached")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        if gate is None:
            log.info("epoch %d/%d: loss %.4f, train accuracy %.4f", epoch + 1, n_epochs, total / seen,
                     correct / seen)
            continue
        accuracy = evaluate(model, images, labels)
        model.train()
        log.info("epoch %d/%d: loss %.4f, train accuracy %.4f (gate %.2f)", epoch + 1, n_epochs, total / seen,
                 accuracy, gate)
        if accuracy >= gate:
            model.eval()
            return epoch + 1
    model.eval()
    if gate is not None:
        raise MemorizationError(
            f"the random-label model reached training accuracy {accuracy:.4f} after {n_epochs} epochs, below "
            f"training.memorization_gate={gate}; raise training.max_epochs={n_epochs} or training.lr={training.lr}"
        )
    return n_epochs
