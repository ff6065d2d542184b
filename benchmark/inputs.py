"""What a run's execution starts from: device and threads, the data, the explained images, the cache folder."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from benchmark.config import ConvInputGrad, ExperimentConfig, Target
from benchmark.data import Dataset, load_dataset
from benchmark.models import Architecture, get_architecture
from benchmark.runtime import configure_determinism, keep_freed_memory, select_device, set_threads


def select_images(data: Dataset, n_images: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n_images`` of the held-out split (already a fixed shuffle): images, labels, ids."""
    available = len(data.eval_images)
    if n_images > available:
        raise ValueError(
            f"n_images={n_images} but the held-out split of {data.name!r} has {available} images; "
            f"set n_images to at most {available}"
        )
    return data.eval_images[:n_images], data.eval_labels[:n_images], torch.arange(n_images)


@dataclass
class Setup:
    """What a run's execution starts from: device, threads, data, the explained images, the cache."""

    device: torch.device
    threads: int
    data: Dataset
    images: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    cache: Path
    data_s: float
    determinism: dict[str, Any] = field(default_factory=dict)  # the settings scores depend on
    spill_dir: Optional[Path] = None  # where the saved maps spill while stages run (the run's folder)


def preprocessing(cfg: ExperimentConfig, arch: Architecture):
    """The model's input preprocessing with the configured scaling (ImageNet models), else None."""
    if arch.text is not None:  # text models: the tokenizer's folder and the longest sentence read
        return arch.text
    if arch.preprocessing is None:
        return None
    pre = arch.preprocessing
    crop = cfg.data.crop or pre.crop
    resize = cfg.data.resize or (pre.resize if cfg.data.crop is None else max(crop, round(crop * pre.resize / pre.crop)))
    return dataclasses.replace(pre, resize=resize, crop=crop, scaling=cfg.model.input_scaling or "imagenet")


def runtime_setup(cfg: ExperimentConfig) -> tuple[torch.device, int, dict[str, Any]]:
    """Threads, device and the determinism settings the scores depend on."""
    threads = set_threads(cfg.num_threads)
    device = select_device(cfg.device)
    determinism = {**configure_determinism(device), "training_threads": cfg.training.num_threads,
                   "conv_input_grad": ConvInputGrad(cfg.conv_input_grad).value, **keep_freed_memory()}
    return device, threads, determinism


def check_target(cfg: ExperimentConfig, data: Dataset, labels: torch.Tensor) -> None:
    if Target(cfg.target) == Target.label and not bool((labels >= 0).all()):
        raise ValueError(f"target=label but data {data.name!r} has no labels for these images; use "
                         "target=predicted or target=original_prediction")


def setup(cfg: ExperimentConfig, arch: Optional[Architecture] = None) -> Setup:
    device, threads, determinism = runtime_setup(cfg)
    t0 = time.time()
    arch = arch or get_architecture(cfg.model.name)
    pre = preprocessing(cfg, arch)
    data = load_dataset(cfg.data, pre, limit=cfg.n_images if pre is not None else None)
    images = select_images(data, cfg.n_images)
    check_target(cfg, data, images[1])
    return Setup(device, threads, data, images, cache_dir(cfg), time.time() - t0, determinism)


def cache_dir(cfg: ExperimentConfig) -> Path:
    """Where checkpoints are cached: ``cache_dir``, or ``<results_root>/.cache``."""
    return Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.results_root) / ".cache"
