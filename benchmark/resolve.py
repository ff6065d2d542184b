"""What a config names, made concrete before any compute: the model's architecture (built and probed when its units
must be derived), the methods with their complete settings, and digests of the input files the run reads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from benchmark import store
from benchmark.config import ExperimentConfig
from benchmark.data import PHOTO_LOADERS
from benchmark.methods import Method, build_methods
from benchmark.models import EXTERNAL, Architecture, get_architecture, with_overrides
from benchmark.validation import channels_classes

log = logging.getLogger(__name__)


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
    methods = (build_methods(spec, arch.modality) if spec or not extra else []) + list(extra or [])
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"methods {twice} are selected twice; give each method once (a callable is reported under "
                         "its __name__: rename one, or wrap it with benchmark.methods.CallableMethod(fn, name=...))")
    reasons = {m.name: m.skip(arch) for m in methods}
    mismatched = [m.name for m in methods if m.modality not in ("any", arch.modality)]
    if mismatched:  # another modality's method is never a default: asked for, it is an error
        other = "image" if arch.modality == "text" else "text"
        raise ValueError(f"method {mismatched[0]!r} {reasons[mismatched[0]]}; remove {', '.join(mismatched)} from "
                         f"method (the {other} methods do not apply to model {arch.name!r})")
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


def example_shape(cfg: ExperimentConfig) -> tuple[int, int, int]:
    """(C, H, W) of the run's inputs, known before any data is loaded."""
    if cfg.data.name in PHOTO_LOADERS:
        crop = cfg.data.crop or 224
        return (3, crop, crop)
    return (1, 28, 28)  # digits, MNIST and Fashion-MNIST share MNIST's layout


def resolve_architecture(cfg: ExperimentConfig) -> Architecture:
    """The built-in architecture ``model.name`` names, or one built from ``model.target`` / ``model.arch``."""
    m = cfg.model
    if m.name in TEXT_MODELS:
        return text_architecture_for(cfg)
    if m.name not in EXTERNAL:
        if m.target is not None or m.arch is not None:
            raise ValueError(f"model.target / model.arch apply to model=custom and model=torchvision; model "
                             f"{m.name!r} is built in: remove them, or choose model=custom / model=torchvision")
        arch = get_architecture(m.name)
        if m.units is None and m.gradcam_layer is None:
            return arch
        return with_overrides(arch, arch.build(*channels_classes(cfg)), m.units, m.gradcam_layer)
    from benchmark.models import external

    build = None
    if m.name == "custom":
        def build(channels: int = 0, classes: int = 0):  # a fresh instance each time (two for data randomization)
            fresh = external.build_target(m.target)
            if m.weights is not None:
                from benchmark.checkpoints import load_weights

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


TEXT_MODELS = ("minilm", "hf")


def text_architecture_for(cfg: ExperimentConfig) -> Architecture:
    """model=minilm (the bundled all-MiniLM-L6-v2) or model=hf (model.name_or_path), with a head for the data's
    classes; every setting checked before anything is trained."""
    from transformers import AutoConfig

    from benchmark.data import TEXT_DATA
    from benchmark.data.text import model_max_length, read_text_file
    from benchmark.models.text import OUTPUTS, TextModelSpec, load_tokenizer, minilm_path, text_architecture

    m = cfg.model
    if m.target is not None or m.arch is not None:
        raise ValueError(f"model.target / model.arch do not apply to model={m.name}; remove them")
    if cfg.data.name not in TEXT_DATA:
        raise ValueError(f"model={m.name} is a text classifier and data.name={cfg.data.name!r} holds images; use "
                         "data=sentiment or data=text_file (data.root=<file>)")
    if m.name == "minilm":
        if m.name_or_path is not None:
            raise ValueError(f"model.name_or_path={m.name_or_path!r} does not apply to model=minilm (the bundled "
                             "all-MiniLM-L6-v2); use model=hf model.name_or_path=... for another model")
        path = str(minilm_path())
    else:
        if not m.name_or_path:
            raise ValueError("model=hf needs model.name_or_path=<folder or hub name> of a Hugging Face model")
        path = str(Path(m.name_or_path).expanduser()) if Path(m.name_or_path).expanduser().exists() else m.name_or_path
    output = m.output if m.output is not None else "loss"
    if output not in OUTPUTS:
        raise ValueError(f"model.output={m.output!r} must be one of {list(OUTPUTS)}")
    tokenizer = load_tokenizer(path)
    try:
        limit = model_max_length(tokenizer, AutoConfig.from_pretrained(path))
    except (OSError, ValueError) as err:
        raise ValueError(f"model.name_or_path={path!r} has no readable config.json ({str(err).splitlines()[0]})") from None
    if m.max_length is not None and not (isinstance(m.max_length, int) and 3 <= m.max_length <= limit):
        raise ValueError(f"model.max_length={m.max_length!r} must be a whole number in [3, {limit}] (the model reads at "
                         f"most {limit} tokens); longer sentences are truncated, and the count is recorded")
    if cfg.data.name == "sentiment":
        from benchmark.data.text import check_sources

        check_sources(cfg.data.sources)
        classes = 2
    else:
        classes = len(read_text_file(cfg.data)[2]["label_names"])
    arch = text_architecture(m.name, TextModelSpec(path, m.max_length or limit), classes, output)
    if m.units is not None:
        arch = with_overrides(arch, arch.build(0, classes), m.units, None)
    return arch


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
    if cfg.data.name == "text_file" and cfg.data.root and Path(cfg.data.root).expanduser().is_file():
        out["data.root"] = store.file_sha256(Path(cfg.data.root).expanduser())[:16]
    if cfg.data.name == "sentiment":
        from benchmark.data.text import SENTIMENT_FILES, sentiment_root

        root = sentiment_root(cfg.data.root)
        out["data.root"] = _tree_digest(sorted(root / f for f in SENTIMENT_FILES.values()), root)
    if cfg.model.name == "hf" and cfg.model.name_or_path and Path(cfg.model.name_or_path).expanduser().is_dir():
        root = Path(cfg.model.name_or_path).expanduser()
        out["model.name_or_path"] = _tree_digest(sorted(p for p in root.rglob("*") if p.is_file()), root)
    if cfg.data.root is not None and Path(cfg.data.root).expanduser().is_dir() and cfg.data.name != "sentiment":
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
