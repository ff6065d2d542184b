"""A run before it computes: every setting validated, the model resolved, the inputs loaded.

``validate`` is every check that needs neither data nor training (the model is built and probed with
one forward pass when its units must be derived); ``setup`` loads the data and picks the explained
images. Both fail with the key, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from benchmark import store
from benchmark.config import ConvInputGrad, ExperimentConfig, Target, resolve_profile
from benchmark.data import PHOTO_LOADERS, Dataset, check_data_name, check_holdout_fraction, load_dataset
from benchmark.methods import Method, build_methods
from benchmark.models import EXTERNAL, Architecture, get_architecture, with_overrides
from benchmark.randomization import Stage
from benchmark.report.stats import check_verdict
from benchmark.runtime import configure_determinism, keep_freed_memory, select_device, set_threads
from benchmark.similarity import check_metrics, hog_pixels_per_cell
from benchmark.training import check_weights_file

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """A validated run: what will be computed, known before any data is loaded or model trained."""

    cfg: ExperimentConfig
    arch: Architecture
    methods: list[Method]
    stages: list[Stage]
    test: str  # the scores' `test` column: cascading | independent | bottom_up | data_randomization
    run_id: str
    run_dir: Path
    # Digests of what the run reads besides its settings (input files; a given model and images).
    inputs: dict[str, Any] = field(default_factory=dict)


def resolve_methods(cfg: ExperimentConfig, arch: Architecture, skip_unsupported: bool = False,
                    extra: Optional[list[Method]] = None) -> list[Method]:
    """Build the selected methods and write their complete settings back into ``cfg.method``.

    ``method_settings`` (set by experiment configs) applies to selected methods only and takes
    precedence over ``method.<name>.<key>``. It is cleared afterwards, so the run id and
    config.yaml see exactly the settings that ran. Methods that need a convolutional layer are
    an error on a model without one, or dropped with a logged reason if ``skip_unsupported``.
    ``extra``: methods given as objects (the Python API), appended in their order.
    """
    for name in cfg.method_settings:
        if name not in cfg.method and not name.startswith("captum_"):
            from benchmark.methods import METHODS

            if name not in METHODS:
                raise ValueError(f"method_settings has {name!r}, not a known method; use some of {sorted(METHODS)}")
    spec = {name: {**(settings or {}), **(cfg.method_settings.get(name) or {})}
            for name, settings in cfg.method.items()}
    methods = (build_methods(spec) if spec or not extra else []) + list(extra or [])
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"methods {twice} are selected twice; give each method once (a callable is reported under "
                         "its __name__: rename one, or wrap it with benchmark.methods.CallableMethod(fn, name=...))")
    reasons = {m.name: m.skip(arch) for m in methods}
    unsupported = [name for name, why in reasons.items() if why]
    if unsupported and (not skip_unsupported or len(unsupported) == len(methods)):
        raise ValueError(f"method {unsupported[0]!r} {reasons[unsupported[0]]}; remove {', '.join(unsupported)} "
                         "from method or choose a convolutional model")
    if unsupported:
        log.info("model %r: skipping %s (%s)", arch.name, ", ".join(unsupported), reasons[unsupported[0]])
        methods = [m for m in methods if not reasons[m.name]]
    cfg.method = {m.name: store.to_plain(m) for m in methods}
    cfg.method_settings = {}
    return methods


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


def _check_ranges(cfg: ExperimentConfig) -> None:
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


def _check_counts(cfg: ExperimentConfig) -> None:
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


def validate(cfg: ExperimentConfig, arch: Optional[Architecture] = None,
             extra_methods: Optional[list[Method]] = None) -> tuple[Architecture, list[Method]]:
    """Every check that needs neither data nor training; fails with the key, the value and the fix.

    ``arch``: the architecture of a model given as an instance (the Python API); otherwise resolved from
    ``cfg.model``.
    """
    resolve_profile(cfg)
    check_finite(cfg)
    check_names(cfg)
    _check_counts(cfg)
    _check_ranges(cfg)
    given = arch is not None and arch.source == "given"
    if not given:
        check_data_name(cfg.data.name)
    check_holdout_fraction(cfg.data.holdout_fraction)
    if arch is None:
        arch = resolve_architecture(cfg)
    _check_initializers(cfg, arch)
    methods = resolve_methods(cfg, arch, cfg.skip_unsupported_methods, extra_methods)
    check_metrics(list(cfg.similarity.metrics))
    check_verdict(cfg.verdict)
    _check_similarity(cfg, arch)
    if not given:
        _check_model_data(cfg, arch)
    return arch, methods


def _check_initializers(cfg: ExperimentConfig, arch: Architecture) -> None:
    """Under ``reinit=layer_default`` a derived unit is redrawn by ``reset_parameters``: every parameter needs one."""
    from benchmark.config import Reinit
    from benchmark.models.derive import reset_init, without_initializer

    if cfg.randomization.reinit != Reinit.layer_default or arch.init_module is not reset_init:
        return
    model = arch.build(*_channels_classes(cfg)) if arch.source != "given" else arch.build(0, 0)
    missing = without_initializer([model.get_submodule(p) for paths in arch.units.values() for p in paths])
    if missing:
        raise ValueError(f"randomization.reinit=layer_default redraws each module with its reset_parameters(), and "
                         f"{', '.join(missing)} own parameters without one; use randomization.reinit="
                         "truncated_normal or uniform (or profile=paper), or give those modules reset_parameters()")


def _tree_digest(files: list[Path], root: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(store.file_sha256(f).encode())
    return h.hexdigest()[:16]


def input_digests(cfg: ExperimentConfig) -> dict[str, str]:
    """SHA-256 of the content of every input file the run reads (weights, image folder, MNIST files, class index),
    so that a changed file is a different run; recorded in meta.json (``inputs``)."""
    out: dict[str, str] = {}
    weights = cfg.model.weights
    if weights is not None and Path(weights).expanduser().is_file():
        out["model.weights"] = store.file_sha256(Path(weights).expanduser())[:16]
    if cfg.data.class_index is not None and Path(cfg.data.class_index).expanduser().is_file():
        out["data.class_index"] = store.file_sha256(Path(cfg.data.class_index).expanduser())[:16]
    if cfg.data.root is not None and Path(cfg.data.root).expanduser().is_dir():
        root = Path(cfg.data.root).expanduser()
        if cfg.data.name == "image_folder":
            from benchmark.data.photos import EXTENSIONS

            files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
        else:
            from benchmark.data.mnist import FOLDERS

            raw = root / FOLDERS[cfg.data.name] / "raw" if cfg.data.name in FOLDERS else None
            files = sorted(p for p in raw.glob("*-ubyte*") if p.is_file()) if raw and raw.is_dir() else []
        if files:
            out["data.root"] = _tree_digest(files, root)
    return out


def example_shape(cfg: ExperimentConfig) -> tuple[int, int, int]:
    """(C, H, W) of the run's inputs, known before any data is loaded."""
    if cfg.data.name in PHOTO_LOADERS:
        crop = cfg.data.crop or 224
        return (3, crop, crop)
    return (1, 28, 28)  # digits, MNIST and Fashion-MNIST share MNIST's layout


def resolve_architecture(cfg: ExperimentConfig) -> Architecture:
    """The built-in architecture ``model.name`` names, or one built from ``model.target`` / ``model.arch``."""
    m = cfg.model
    if m.name not in EXTERNAL:
        if m.target is not None or m.arch is not None:
            raise ValueError(f"model.target / model.arch apply to model=custom and model=torchvision; model "
                             f"{m.name!r} is built in: remove them, or choose model=custom / model=torchvision")
        arch = get_architecture(m.name)
        if m.units is None and m.gradcam_layer is None:
            return arch
        return with_overrides(arch, arch.build(*_channels_classes(cfg)), m.units, m.gradcam_layer)
    from benchmark.models import external

    build = None
    if m.name == "custom":
        def build(channels: int = 0, classes: int = 0):  # a fresh instance each time (two for data randomization)
            fresh = external.build_target(m.target)
            if m.weights is not None:
                from benchmark.training import load_weights

                fresh.load_state_dict(load_weights(m.weights, fresh))
            return fresh

        model = build()
        name, source, pre = m.target.partition(":")[2].split(".")[-1], "custom", None
        if cfg.data.name in PHOTO_LOADERS:
            from benchmark.models.imagenet import Preprocessing

            pre = Preprocessing(resize=cfg.data.resize or 256, crop=cfg.data.crop or 224)
    else:
        if m.target is not None:
            raise ValueError("model.target applies to model=custom; model=torchvision takes model.arch")
        external.check_torchvision_arch(m.arch)
        if cfg.data.name not in PHOTO_LOADERS:
            raise ValueError(f"model=torchvision (model.arch={m.arch!r}) is an ImageNet model and data.name="
                             f"{cfg.data.name!r} is not photographs; use data=image_folder (data.root=<folder>) or "
                             "data=skimage_photos")
        model, _ = external.build_torchvision_any(m.arch, m.weights)
        name, source, pre = m.arch, "torchvision_any", external.torchvision_preprocessing(m.arch)
        if cfg.data.crop is None:
            cfg.data.crop, cfg.data.resize = pre.crop, cfg.data.resize or pre.resize
    example = torch.zeros((2,) + example_shape(cfg))
    return external.architecture_of(model, example, name, units=m.units, gradcam_layer=m.gradcam_layer,
                                    source=source, preprocessing=pre, notes=f"model={m.name} {m.target or m.arch}",
                                    build=build)


def _channels_classes(cfg: ExperimentConfig) -> tuple[int, int]:
    return (3, 1000) if cfg.data.name in PHOTO_LOADERS else (1, 10)


def _check_model_data(cfg: ExperimentConfig, arch: Architecture) -> None:
    from benchmark.models.imagenet import SCALINGS, check_weights

    photos = cfg.data.name in PHOTO_LOADERS
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


def _check_similarity(cfg: ExperimentConfig, arch: Architecture) -> None:
    s = cfg.similarity
    if not 50.0 <= s.percentile <= 100.0:
        raise ValueError(f"similarity.percentile={s.percentile} must lie in [50, 100]; the paper uses 99")
    if s.hog_cells_per_block < 1:
        raise ValueError(f"similarity.hog_cells_per_block={s.hog_cells_per_block} must be at least 1, e.g. 2")
    if "hog" in s.metrics:
        side = min(arch.input_size) if cfg.data.crop is None else cfg.data.crop
        ppc = hog_pixels_per_cell(arch.input_size, s.hog_pixels_per_cell)
        if ppc < 1 or ppc * s.hog_cells_per_block > side:
            raise ValueError(
                f"similarity.hog_pixels_per_cell={s.hog_pixels_per_cell} with hog_cells_per_block="
                f"{s.hog_cells_per_block} does not fit {side}-pixel maps; choose cells of at least 1 pixel with "
                f"pixels_per_cell x cells_per_block <= {side}, or null for the default")


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
