"""Architectures and their randomization units.

Each architecture declares its units: named groups of modules in forward order (the
cascading test walks them from the last one back), the layer GradCAM reads, and the
initializer a unit is redrawn with under the ``layer_default`` policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from benchmark.models import imagenet
from benchmark.models.cnn import MnistCNN, init_default
from benchmark.models.imagenet import Preprocessing
from benchmark.models.mlp import MnistMLP


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[[int, int], nn.Module]  # (in_channels, num_classes) -> model
    # Unit name -> module paths, in forward order (first = closest to the input).
    units: dict[str, tuple[str, ...]]
    # Module whose output GradCAM uses; None when the model has no convolutional layer.
    gradcam_layer: Optional[str]
    # The model's own initializer for one module, drawing from the generator.
    init_module: Callable[[nn.Module, torch.Generator], None]
    input_size: tuple[int, int] = (28, 28)
    notes: str = field(default="")
    # "trained": the suite trains it on the run's data; "torchvision": pretrained ImageNet weights
    # (torchvision's weights API or a file), never trained here.
    source: str = "trained"
    # How photographs become this model's input (torchvision models only).
    preprocessing: Optional[Preprocessing] = None
    # What deriving the units found (models the suite did not define): recorded in meta.json.
    derived: dict = field(default_factory=dict)
    # What the model reads: images (N, C, H, W), or text (token rows, benchmark.models.text).
    modality: str = "image"
    # The modules drawn by the run's generators when the model is built (None: every unit's). A pretrained body
    # fine-tuned here (text models) draws only its new head.
    fresh_modules: Optional[tuple[str, ...]] = None
    # Text models: where the model and tokenizer come from (benchmark.models.text.TextModelSpec).
    text: Any = None


ARCHITECTURES: dict[str, Architecture] = {
    "cnn": Architecture(
        name="cnn",
        build=lambda c, k: MnistCNN(in_channels=c, num_classes=k),
        units={"conv1": ("conv1",), "conv2": ("conv2",), "fc1": ("fc1",), "logits": ("logits",)},
        gradcam_layer="conv2",
        init_module=init_default,
        notes="Adebayo et al. 2018 MNIST CNN: conv5x5x32, pool, conv5x5x64, pool, fc1024, fc10.",
    ),
    "mlp": Architecture(
        name="mlp",
        build=lambda c, k: MnistMLP(in_features=c * 28 * 28, num_classes=k),
        units={"hidden1": ("hidden1",), "hidden2": ("hidden2",), "hidden3": ("hidden3",), "logits": ("logits",)},
        gradcam_layer=None,
        init_module=init_default,
        notes="Adebayo et al. 2018 MNIST MLP: 784-2500-1500-500-10 with ReLU.",
    ),
}

for _name, _notes in (("inception_v3", "torchvision Inception v3 (Adebayo et al. 2018's ImageNet model), 299x299; "
                                       "the paper's 17 cascading blocks"),
                      ("vgg16", "torchvision VGG-16, 224x224"), ("resnet50", "torchvision ResNet-50, 224x224")):
    _pre = imagenet.PREPROCESSING[_name]
    ARCHITECTURES[_name] = Architecture(
        name=_name,
        build=(lambda c, k, _n=_name: imagenet.build_torchvision(_n, k)),
        units=imagenet.UNITS[_name](),
        gradcam_layer=imagenet.GRADCAM_LAYERS[_name],
        init_module=imagenet.INITS[_name],
        input_size=(_pre.crop, _pre.crop),
        notes=_notes,
        source="torchvision",
        preprocessing=_pre,
    )


# Model names resolved from their settings rather than declared here (benchmark.models.external).
EXTERNAL = ("custom", "torchvision", "minilm", "hf")


def register_model(arch: Architecture) -> Architecture:
    """Add an architecture under its name (``model.name=<name>`` selects it); a taken name is an error."""
    from benchmark.registry import add

    return add(ARCHITECTURES, arch.name, arch, "model", reserved=EXTERNAL)


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"model.name={name!r} is not a known architecture; use one of {sorted(ARCHITECTURES) + list(EXTERNAL)}"
        ) from None


def with_overrides(arch: Architecture, model: Optional[nn.Module], units: Optional[dict],
                   gradcam_layer: Optional[str]) -> Architecture:
    """A declared architecture with ``model.units`` / ``model.gradcam_layer`` replacing its own (checked on
    ``model``, an instance of it)."""
    import dataclasses

    from benchmark.models.derive import check_gradcam_layer, check_units

    if units is None and gradcam_layer is None:
        return arch
    changes: dict = {}
    if units is not None:
        changes["units"] = check_units(model, units)
    if gradcam_layer is not None:
        changes["gradcam_layer"] = check_gradcam_layer(model, gradcam_layer, arch.name, arch.gradcam_layer)
    return dataclasses.replace(arch, **changes)


def unit_modules(model: nn.Module, arch: Architecture, unit: str) -> list[nn.Module]:
    """The modules of one unit, looked up by path in ``model``."""
    if unit not in arch.units:
        raise ValueError(
            f"randomization.units has {unit!r}, which model {arch.name!r} does not have; "
            f"its units are {list(arch.units)}"
        )
    return [model.get_submodule(path) for path in arch.units[unit]]
