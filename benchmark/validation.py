"""Checks of a config that need neither data nor training, each failing with the key, the value and the fix."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from benchmark.config import ExperimentConfig
from benchmark.data import PHOTO_LOADERS
from benchmark.models import Architecture
from benchmark.similarity import hog_pixels_per_cell
from benchmark.checkpoints import check_weights_file


# A name that becomes a folder of the run's path: no separators, no '..', no leading dot.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def check_finite(obj: Any, prefix: str = "") -> None:
    """Every number of the config (nested dataclasses, dicts, lists) is finite and fits 64 bits; the key named."""
    items = ([(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj)
             else list(obj.items()) if isinstance(obj, dict) else list(enumerate(obj)))
    for key, value in items:
        name = f"{prefix}{key}" if isinstance(key, str) else f"{prefix.rstrip('.')}[{key}]"
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name}={value} is not a finite number; give a finite value (see docs/bad_input.md)")
        if isinstance(value, int) and not -2**63 <= value < 2**63:
            raise ValueError(f"{name}={value} does not fit 64 bits; give a value between -2**63 and 2**63 - 1")
        if dataclasses.is_dataclass(value) or isinstance(value, (dict, list, tuple)):
            check_finite(value, f"{name}.")


def check_names(cfg: ExperimentConfig) -> None:
    """Values that name a folder of the run's path stay inside ``results_root``."""
    for key, value in (("test", cfg.test), ("model.name", cfg.model.name), ("data.name", cfg.data.name)):
        if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
            raise ValueError(f"{key}={value!r} names a folder of the run's path and must be a plain name (letters, "
                             "digits, _ . + -, no '/' or '..'), e.g. model_randomization")


def check_ranges(cfg: ExperimentConfig) -> None:
    t = cfg.training
    if not 0.0 <= t.weight_decay < 1.0:
        raise ValueError(f"training.weight_decay={t.weight_decay} must lie in [0, 1), e.g. 0.0")
    for key in ("lr", "random_lr"):
        value = getattr(t, key)
        if value is not None and value > 10.0:
            raise ValueError(f"training.{key}={value} is far too large for Adam (training diverges); use e.g. 1e-3")
    for key, value in (("seed", cfg.seed), ("data.split_seed", cfg.data.split_seed)):
        if value < 0:
            raise ValueError(f"{key}={value} must be a non-negative whole number, e.g. 0")


def check_counts(cfg: ExperimentConfig) -> None:
    for key in ("n_images", "n_saved_images", "n_figure_images"):
        value = getattr(cfg, key)
        if not isinstance(value, int) or value < (1 if key == "n_images" else 0):
            raise ValueError(f"{key}={value!r} must be a {'positive' if key == 'n_images' else 'non-negative'} "
                             "whole number, e.g. 32")
    if cfg.memory_budget_mb < 1:
        raise ValueError(f"memory_budget_mb={cfg.memory_budget_mb} must be at least 1, e.g. 1024")
    t = cfg.training
    for key in ("epochs", "batch_size", "max_epochs", "num_threads"):
        if not isinstance(getattr(t, key), int) or getattr(t, key) < 1:
            raise ValueError(f"training.{key}={getattr(t, key)!r} must be a positive whole number")
    if t.lr <= 0 or (t.random_lr is not None and t.random_lr <= 0):
        raise ValueError(f"training.lr={t.lr} and training.random_lr={t.random_lr} must be positive, e.g. 1e-3")
    if t.random_batch_size is not None and t.random_batch_size < 1:
        raise ValueError(f"training.random_batch_size={t.random_batch_size} must be a positive whole number")
    if not 0.0 < t.memorization_gate <= 1.0:
        raise ValueError(f"training.memorization_gate={t.memorization_gate} must lie in (0, 1], e.g. 0.95")
    if cfg.randomization.std <= 0:
        raise ValueError(f"randomization.std={cfg.randomization.std} must be positive, e.g. 0.01")
    if cfg.num_threads is not None and cfg.num_threads < 1:
        raise ValueError(f"num_threads={cfg.num_threads} must be at least 1 (or null for torch's default)")


def check_initializers(cfg: ExperimentConfig, arch: Architecture) -> None:
    """Under ``reinit=layer_default`` a derived unit is redrawn by ``reset_parameters``: every parameter needs one."""
    from benchmark.config import Reinit
    from benchmark.models.derive import reset_init, without_initializer

    if cfg.randomization.reinit != Reinit.layer_default or arch.init_module is not reset_init:
        return
    model = arch.build(*channels_classes(cfg)) if arch.source != "given" else arch.build(0, 0)
    missing = without_initializer([model.get_submodule(p) for paths in arch.units.values() for p in paths])
    if missing:
        raise ValueError(f"randomization.reinit=layer_default redraws each module with its reset_parameters(), and "
                         f"{', '.join(missing)} own parameters without one; use randomization.reinit="
                         "truncated_normal or uniform (or profile=paper), or give those modules reset_parameters()")


def check_model_data(cfg: ExperimentConfig, arch: Architecture) -> None:
    from benchmark.models.imagenet import SCALINGS, check_weights

    from benchmark.data import TEXT_DATA

    photos = cfg.data.name in PHOTO_LOADERS
    if arch.modality == "text":
        if cfg.model.input_scaling is not None:
            raise ValueError(f"model.input_scaling={cfg.model.input_scaling!r} applies to ImageNet models only; leave "
                             f"it null for the text model {arch.name!r}")
        if cfg.model.weights is not None:
            check_weights_file(cfg.model.weights)
        return
    if cfg.data.name in TEXT_DATA:
        raise ValueError(f"data.name={cfg.data.name!r} holds sentences and model {arch.name!r} reads images; choose "
                         "model=minilm or model=hf model.name_or_path=<folder or hub name>")
    for key in ("name_or_path", "max_length", "output"):
        if getattr(cfg.model, key) is not None:
            raise ValueError(f"model.{key}={getattr(cfg.model, key)!r} applies to text models (model=minilm, model=hf) "
                             f"only; remove it for model {arch.name!r}")
    if arch.source in ("custom", "torchvision_any"):
        _check_photo_sizes(cfg)
        return
    if arch.source == "torchvision":
        if not photos:
            raise ValueError(f"model {arch.name!r} is an ImageNet model and data.name={cfg.data.name!r} is not "
                             f"photographs; use data=image_folder (data.root=<folder>) or data=skimage_photos")
        if cfg.model.input_scaling is not None and cfg.model.input_scaling not in SCALINGS:
            raise ValueError(f"model.input_scaling={cfg.model.input_scaling!r} must be one of {list(SCALINGS)}")
        if cfg.model.input_scaling == "minus_one_one" and arch.name != "inception_v3":
            raise ValueError(f"model.input_scaling=minus_one_one is Inception v3's input; model {arch.name!r} "
                             "expects imagenet scaling (leave model.input_scaling null)")
        check_weights(arch.name, cfg.model.weights)
        _check_photo_sizes(cfg)
        return
    if photos:
        raise ValueError(f"data.name={cfg.data.name!r} holds photographs for ImageNet models; choose "
                         "model=inception_v3, vgg16, resnet50 or model=torchvision, or data=digits / mnist")
    if cfg.model.input_scaling is not None:
        raise ValueError(f"model.input_scaling={cfg.model.input_scaling!r} applies to ImageNet models only; "
                         f"leave it null for model {arch.name!r}")
    if cfg.model.weights is not None:
        check_weights_file(cfg.model.weights)


def _check_photo_sizes(cfg: ExperimentConfig) -> None:
    for key in ("resize", "crop"):
        value = getattr(cfg.data, key)
        if value is not None and (not isinstance(value, int) or value < 75):
            raise ValueError(f"data.{key}={value!r} must be a whole number of pixels of at least 75 (the "
                             "smallest input the ImageNet models take), or null for the model's own")
    if cfg.data.crop is not None and cfg.data.resize is not None and cfg.data.resize < cfg.data.crop:
        raise ValueError(f"data.resize={cfg.data.resize} is smaller than data.crop={cfg.data.crop}; "
                         "the center crop must fit the resized image")


def check_similarity(cfg: ExperimentConfig, arch: Architecture) -> None:
    s = cfg.similarity
    if not 50.0 <= s.percentile <= 100.0:
        raise ValueError(f"similarity.percentile={s.percentile} must lie in [50, 100]; the paper uses 99")
    if s.hog_cells_per_block < 1:
        raise ValueError(f"similarity.hog_cells_per_block={s.hog_cells_per_block} must be at least 1, e.g. 2")
    if "hog" in s.metrics and arch.modality == "image":
        side = min(arch.input_size) if cfg.data.crop is None else cfg.data.crop
        ppc = hog_pixels_per_cell(arch.input_size, s.hog_pixels_per_cell)
        if ppc < 1 or ppc * s.hog_cells_per_block > side:
            raise ValueError(
                f"similarity.hog_pixels_per_cell={s.hog_pixels_per_cell} with hog_cells_per_block="
                f"{s.hog_cells_per_block} does not fit {side}-pixel maps; choose cells of at least 1 pixel with "
                f"pixels_per_cell x cells_per_block <= {side}, or null for the default")


def channels_classes(cfg: ExperimentConfig) -> tuple[int, int]:
    """Input channels and classes of the run's data, known before it is loaded."""
    return (3, 1000) if cfg.data.name in PHOTO_LOADERS else (1, 10)
