"""``benchmark.sanity_check``: any classifier, any method, any registered test, from Python, no Hydra.

    result = benchmark.sanity_check(model, images, test="cascading", methods=["gradient", my_fn])
    result.scores            # the tidy table (the columns of scores.parquet)
    result.write("out/")     # the run folder a command-line run writes

The same loop runs behind the command line (``benchmark.core``), so a model and images given here and
the same model and images of a command-line run give bitwise-equal tables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from benchmark.api_text import TEXT_DEFAULT_METHODS, is_text_input, text_setup
from benchmark.checks import Models, get_test
from benchmark.config import ExperimentConfig
from benchmark.registry import load_plugins
from benchmark.core import Result, compute, plan, probe_inputs
from benchmark.data import Dataset
from benchmark.methods import as_method
from benchmark.inputs import Setup, check_target, runtime_setup, select_images
from benchmark.training import MemorizationError, evaluate, given_model, label_permutation

log = logging.getLogger(__name__)

# The default method list of the command line's configs (conf/sanity_check.yaml), in its order.
DEFAULT_METHODS = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "vargrad", "ig_smoothgrad",
                   "guided_backprop", "gradcam", "guided_gradcam", "edge", "noise")


def _as_images(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A tensor, an (images, labels) pair or an iterable of batches -> (N, C, H, W) float images, (N,) labels."""
    if isinstance(data, torch.Tensor):
        images, labels = data, None
    elif isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        images, labels = data
    elif isinstance(data, torch.utils.data.DataLoader) or hasattr(data, "__iter__"):
        xs, ys = [], []
        for batch in data:
            x, y = (batch, None) if isinstance(batch, torch.Tensor) else (batch[0], batch[1] if len(batch) > 1 else None)
            xs.append(torch.as_tensor(x))
            ys.append(None if y is None else torch.as_tensor(y))
        if not xs:
            raise ValueError("data yields no batches; give a tensor of images (N, C, H, W) or a non-empty DataLoader")
        images = torch.cat(xs)
        labels = None if any(y is None for y in ys) else torch.cat(ys)
    else:
        raise ValueError(f"data is a {type(data).__name__}; give a tensor of images (N, C, H, W), an "
                         "(images, labels) pair or a DataLoader")
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"data: images of shape {tuple(images.shape)} and dtype {images.dtype}; give float images "
                         "(N, C, H, W), e.g. torch.rand(8, 3, 64, 64)")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("data: the images hold NaN or Inf values; give finite images")
    if labels is None:
        labels = torch.full((len(images),), -1, dtype=torch.int64)
    labels = torch.as_tensor(labels).long().flatten()
    if len(labels) != len(images):
        raise ValueError(f"data: {len(images)} images but {len(labels)} labels; give one label per image")
    return images.detach().cpu().float(), labels.cpu()


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _model_digest(model: nn.Module) -> str:
    return _digest(*[t for t in model.state_dict().values() if isinstance(t, torch.Tensor)])


def _settings(cfg: ExperimentConfig, settings: dict[str, Any]) -> None:
    """Keywords onto the config: top-level names (``n_images=8``), groups as dicts (``randomization={...}``) or
    dotted names (``**{"similarity.metrics": [...]}``); an unknown name is an error listing the known ones."""
    for key, value in settings.items():
        obj, parts = cfg, key.split(".")
        for part in parts[:-1]:
            if not dataclasses.is_dataclass(getattr(obj, part, None)):
                raise ValueError(f"{key}={value!r}: {part!r} is not a settings group of the config")
            obj = getattr(obj, part)
        name = parts[-1]
        known = {f.name for f in dataclasses.fields(obj)}
        if name not in known:
            raise ValueError(f"{key}={value!r} is not a setting; the settings here are {sorted(known)}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            _settings(current, value)
            continue
        field_type = type(current)
        if isinstance(current, str) and hasattr(current, "value") and isinstance(value, str):  # an Enum
            try:
                value = field_type(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} must be one of {[e.value for e in field_type]}") from None
        setattr(obj, name, value)


def _architecture(model: nn.Module, example: torch.Tensor, name: Optional[str], units: Any, gradcam_layer: Any):
    """The declared architecture when ``model`` is one the suite defines (same units, same initializer), else
    one derived from ``model``'s forward pass."""
    from benchmark.models import ARCHITECTURES, with_overrides
    from benchmark.models.cnn import MnistCNN
    from benchmark.models.external import architecture_of
    from benchmark.models.mlp import MnistMLP

    builtin = {MnistCNN: "cnn", MnistMLP: "mlp"}.get(type(model))
    if builtin is not None:
        from benchmark.models.derive import probe

        derived = probe(model, example)  # the input shape check every model gets
        arch = dataclasses.replace(ARCHITECTURES[builtin], build=lambda c, k: model, source="given",
                                   name=name or builtin, input_size=tuple(example.shape[-2:]),
                                   derived={"num_classes": int(derived.output_shape[1])})
        return with_overrides(arch, model, units, gradcam_layer)
    return architecture_of(model, example, name or type(model).__name__.lower(), units=units,
                           gradcam_layer=gradcam_layer, source="given")


@contextmanager
def _visible_logs(quiet: bool) -> Iterator[None]:
    """The suite's INFO lines (the units table, each stage's accuracy) on stderr for the call, unless the caller
    configured logging itself or asked for ``quiet``."""
    logger = logging.getLogger("benchmark")
    if quiet or logger.handlers or logging.getLogger().handlers:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def _restored(*models: Optional[nn.Module]) -> Iterator[None]:
    """Each model's train/eval mode and device as the caller had them, also after an error."""
    state = [(m, m.training, next(m.parameters()).device) for m in models
             if m is not None and next(m.parameters(), None) is not None]
    try:
        yield
    finally:
        for m, training, device in state:
            m.to(device)
            m.train(training)


def sanity_check(model: nn.Module, data: Any, test: str = "cascading", methods: Optional[Sequence[Any]] = None, *,
                 random_model: Optional[nn.Module] = None,
                 train_fn: Optional[Callable[[torch.Tensor, torch.Tensor], nn.Module]] = None,
                 train_data: Any = None, model_name: Optional[str] = None, data_name: str = "given",
                 units: Optional[dict[str, list[str]]] = None, gradcam_layer: Optional[str] = None,
                 quiet: bool = False, tokenizer: Any = None, **settings: Any) -> Result:
    """Run the registered ``test`` on ``model`` for the images in ``data``; nothing is written until ``write``.

    ``model``: any ``torch.nn.Module`` classifier returning (batch, classes) logits; its units are derived
    from the order its forward pass calls its parameter-owning children (or given as ``units``).
    ``data``: images (N, C, H, W), an (images, labels) pair or a DataLoader. ``methods``: registry keys
    (``"gradient"``, ``"captum_deeplift"``), ``Method`` objects, functions ``(model, x, target) -> map`` or
    objects with ``attribute(x, target=...)``; default the command line's list. ``test="data_randomization"``
    takes the random-label model as ``random_model``, or ``train_fn(images, labels) -> model`` with
    ``train_data=(images, labels)``, trained here on a fixed permutation of the labels. Every other config
    key is a keyword of the same name (``n_images=8``, ``profile="code"``, ``randomization={"reinit": ...}``).
    The model's weights, mode and device are as they were afterwards. The units table and each stage's line
    are logged (on stderr unless logging is configured; ``quiet=True`` for none, ``progress=False`` for no bar).

    Text: ``model`` a Hugging Face sequence classifier, ``data`` a list of sentences or a (sentences, labels) pair,
    ``tokenizer`` its tokenizer (default: the model's own); token maps and token metrics (``benchmark.api_text``).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model is a {type(model).__name__}, not a torch.nn.Module classifier")
    load_plugins(settings.get("plugins") or [])
    check = get_test(str(test))
    text = is_text_input(model, data)
    images, labels = (None, None) if text else _as_images(data)
    cfg = ExperimentConfig()
    check.configure(cfg)
    cfg.model.name, cfg.data.name = model_name or type(model).__name__.lower(), data_name
    cfg.skip_unsupported_methods = methods is None
    settings.setdefault("n_images", len(data[0] if isinstance(data, tuple) else data) if text else len(images))
    _settings(cfg, settings)
    defaults = TEXT_DEFAULT_METHODS if text else (check.default_methods or DEFAULT_METHODS)
    given = [as_method(m, "text" if text else "image") for m in (defaults if methods is None else methods)]
    if not given:
        raise ValueError("methods is empty: give at least one method, e.g. methods=['gradient']")
    if test == "data_randomization" and (random_model is None) == (train_fn is None):
        raise ValueError("test='data_randomization' needs the random-label model: random_model=<model trained on "
                         "permuted labels>, or train_fn=<(images, labels) -> model> with train_data=(images, labels)")
    others = (random_model, train_fn, train_data)
    with _restored(model, random_model), _visible_logs(quiet):
        runtime = runtime_setup(cfg)
        if text:
            return _check_text(cfg, check, given, model, data, tokenizer, model_name, settings, others, runtime)
        return _check_images(cfg, check, given, model, images, labels, (model_name, data_name, units, gradcam_layer),
                             others, runtime)


def _check_text(cfg: ExperimentConfig, check: Any, given: list, model: nn.Module, data: Any, tokenizer: Any,
                model_name: Optional[str], settings: dict, others: tuple, runtime: tuple) -> Result:
    """``sanity_check`` on a text classifier: the wrapped model, its token dataset, then the run."""
    random_model, train_fn, train_data = others
    wrapped, arch, dataset = text_setup(cfg, model, data, tokenizer, model_name, settings)
    identity = _identity(model, random_model, _digest(dataset.eval_images, dataset.eval_labels))
    if random_model is not None:
        random_model = type(wrapped)(getattr(random_model, "hf", random_model), wrapped.special_ids, wrapped.output)
    p = plan(cfg, arch, given, identity, check)
    return _run(p, dataset, runtime, wrapped, (random_model, train_fn, train_data), probe=False)


def _check_images(cfg: ExperimentConfig, check: Any, given: list, model: nn.Module, images: torch.Tensor,
                  labels: torch.Tensor, naming: tuple, others: tuple, runtime: tuple) -> Result:
    """``sanity_check`` on an image classifier: its units (derived or given), the dataset, the probes, the run."""
    model_name, data_name, units, gradcam_layer = naming
    first = next(model.parameters(), None)
    if first is not None and first.is_floating_point() and first.dtype != images.dtype:
        images = images.to(first.dtype)  # a float64 (or half) model gets its own precision: maps stay float32
    example = images[:2].to(first.device if first is not None else "cpu")
    arch = _architecture(model, example, model_name, units, gradcam_layer)
    identity = _identity(model, others[0], _digest(images, labels))  # by content, in the run id
    p = plan(cfg, arch, given, identity, check)
    dataset = _dataset(images, labels, data_name, int(arch.derived["num_classes"]), identity["images"])
    return _run(p, dataset, runtime, model, others, probe=True)


def _identity(model: nn.Module, random_model: Optional[nn.Module], data_digest: str) -> dict[str, str]:
    """What the run id knows of the given models and data: their contents' digests."""
    identity = {"model": _model_digest(model), "images": data_digest}
    if random_model is not None:
        identity["random_model"] = _model_digest(random_model)
    return identity


def _run(p: Any, dataset: Dataset, runtime: tuple, model: nn.Module, others: tuple, probe: bool) -> Result:
    """The planned run on the given data: the images chosen, the target checked, the methods probed, then compute."""
    random_model, train_fn, train_data = others
    device, threads, determinism = runtime
    chosen = select_images(dataset, p.cfg.n_images)
    check_target(p.cfg, dataset, chosen[1])
    s = Setup(device, threads, dataset, chosen, cache=None, data_s=0.0, determinism=determinism)  # type: ignore
    if probe:
        probe_inputs(p.methods, s)
    return compute(p, s, _models(p, s, model, random_model, train_fn, train_data))


def _dataset(images: torch.Tensor, labels: torch.Tensor, name: str, num_classes: int, digest: str) -> Dataset:
    """The given images as the held-out split (no train split: the model is not trained here)."""
    lo, hi = float(images.min()), float(images.max())
    return Dataset(name=name, train_images=images[:0], train_labels=labels[:0], eval_images=images, eval_labels=labels,
                   num_classes=num_classes, input_range=(lo, hi),
                   provenance={"source": "given to benchmark.sanity_check", "n_eval": len(images),
                               "sha256": digest})


def _models(p, s: Setup, model: nn.Module, random_model: Optional[nn.Module], train_fn: Optional[Callable],
            train_data: Any) -> Models:
    trained = given_model(model, s.data, s.device, "given")
    if p.test != "data_randomization":
        return Models(trained)
    if random_model is None:
        random_model = _train_random(p.cfg, train_fn, train_data)
    return Models(trained, given_model(random_model, s.data, s.device, "given", labels="random"))


def _train_random(cfg: ExperimentConfig, train_fn: Callable, train_data: Any) -> nn.Module:
    """``train_fn`` on a fixed permutation of the training labels, checked against the memorization gate."""
    if train_data is None:
        raise ValueError("train_fn needs train_data=(images, labels): the data the random-label model is trained on")
    x, y = _as_images(train_data)
    if bool((y < 0).any()):
        raise ValueError("train_data has no labels; give train_data=(images, labels)")
    permuted = y[label_permutation(len(y), cfg.seed)]
    trained = train_fn(x, permuted)
    if not isinstance(trained, nn.Module):
        raise ValueError(f"train_fn returned a {type(trained).__name__}, not a torch.nn.Module")
    accuracy = evaluate(trained, x, permuted)
    if accuracy < cfg.training.memorization_gate:
        raise MemorizationError(f"the random-label model reached training accuracy {accuracy:.3f} on the permuted "
                                f"labels, below training.memorization_gate={cfg.training.memorization_gate}; train "
                                "longer or with a higher learning rate until it memorizes them")
    return trained
