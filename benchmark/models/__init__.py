"""Architectures and their randomization units.

Each architecture declares its units: named groups of modules in forward order (the
cascading test walks them from the last one back), the layer GradCAM reads, and the
initializer a unit is redrawn with under the ``layer_default`` policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from benchmark.models.cnn import MnistCNN, init_default
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


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"model.name={name!r} is not a known architecture; use one of {sorted(ARCHITECTURES)}"
        ) from None


def unit_modules(model: nn.Module, arch: Architecture, unit: str) -> list[nn.Module]:
    """The modules of one unit, looked up by path in ``model``."""
    if unit not in arch.units:
        raise ValueError(
            f"randomization.units has {unit!r}, which model {arch.name!r} does not have; "
            f"its units are {list(arch.units)}"
        )
    return [model.get_submodule(path) for path in arch.units[unit]]
