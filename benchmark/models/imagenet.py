"""ImageNet models from torchvision: Inception v3 (the paper's), VGG-16 and ResNet-50.

Each declares its randomization units in forward order (Inception v3: the paper's 17 blocks),
its GradCAM layer, its own initializer, and the input its weights expect. Weights come from
torchvision's weights API (``model.weights=DEFAULT`` or an enum name such as ``IMAGENET1K_V1``;
downloaded and cached by torchvision when online), from a local state-dict file, or are left
random (``model.weights=null``: the offline smoke path; the run says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How photographs become the model's input: resize the shorter side, center crop, scale."""

    resize: int
    crop: int
    # imagenet: (x - mean) / std per channel (torchvision's weights); minus_one_one: 2x - 1 (the
    # paper's Inception input, TF-slim preprocessing).
    scaling: str = "imagenet"

    def input_range(self) -> tuple[float, float]:
        if self.scaling == "minus_one_one":
            return (-1.0, 1.0)
        lo = min((0.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
        hi = max((1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
        return (lo, hi)


SCALINGS = ("imagenet", "minus_one_one")


def _trunc_he(weight: torch.Tensor, generator: torch.Generator) -> None:
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
    std = math.sqrt(2.0 / fan_in)
    nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std, generator=generator)


def init_inception(module: nn.Module, generator: torch.Generator) -> None:
    """The paper's code: truncated-normal He for convolution and dense weights, zero biases.

    BatchNorm scale and shift (1, 0) are set by the randomization; running statistics follow
    ``randomization.batchnorm_stats``.
    """
    for sub in module.modules():
        if isinstance(sub, (nn.Conv2d, nn.Linear)):
            _trunc_he(sub.weight, generator)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


def _init_convs(module: nn.Module, generator: torch.Generator) -> None:
    """torchvision's VGG and ResNet convolutions: Kaiming-normal (fan_out), zero biases."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            nn.init.kaiming_normal_(sub.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


def init_vgg(module: nn.Module, generator: torch.Generator) -> None:
    """torchvision's VGG initializer: convolutions as ``_init_convs``, dense layers N(0, 0.01), zero biases."""
    _init_convs(module, generator)
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, 0.0, 0.01, generator=generator)
            nn.init.zeros_(sub.bias)


def init_resnet(module: nn.Module, generator: torch.Generator) -> None:
    """torchvision's ResNet initializer: convolutions as ``_init_convs``, the fc layer PyTorch's default."""
    _init_convs(module, generator)
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.kaiming_uniform_(sub.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(sub.in_features)
            nn.init.uniform_(sub.bias, -bound, bound, generator=generator)


INCEPTION_UNITS = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                   "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                   "Mixed_7a", "Mixed_7b", "Mixed_7c"]

_VGG_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
_VGG_NAMES = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2",
              "conv4_3", "conv5_1", "conv5_2", "conv5_3"]


def inception_units() -> dict[str, tuple[str, ...]]:
    """The paper's 17 cascading blocks, forward order: Conv2d_1a_3x3 ... Mixed_7c, then Logits."""
    return {**{u: (u,) for u in INCEPTION_UNITS}, "logits": ("fc",)}


def vgg16_units() -> dict[str, tuple[str, ...]]:
    units = {name: (f"features.{i}",) for name, i in zip(_VGG_NAMES, _VGG_CONVS)}
    return {**units, "fc6": ("classifier.0",), "fc7": ("classifier.3",), "logits": ("classifier.6",)}


def resnet50_units() -> dict[str, tuple[str, ...]]:
    units: dict[str, tuple[str, ...]] = {"conv1": ("conv1", "bn1")}
    for layer, blocks in zip(range(1, 5), (3, 4, 6, 3)):
        for b in range(blocks):
            units[f"layer{layer}.{b}"] = (f"layer{layer}.{b}",)
    units["logits"] = ("fc",)
    return units


def _weights_enum(name: str):
    return torchvision.models.get_model_weights(name)


class SteppedInception3(torchvision.models.Inception3):
    """torchvision's Inception v3, unchanged, plus its eval-mode forward as one step per cascade unit.

    The steps run exactly what ``Inception3.forward`` runs in eval mode (input transform, the 16
    blocks with the two max-pools after Conv2d_2b_3x3 and Conv2d_4a_3x3, then average pool, dropout,
    flatten and fc; the auxiliary head runs only in training), so stages of a cascade can share the
    blocks below their lowest re-initialized one (``Engine.explain_stages``).
    """

    def steps(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        after = {"Conv2d_2b_3x3": self.maxpool1, "Conv2d_4a_3x3": self.maxpool2}
        out: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = []
        for name in INCEPTION_UNITS:
            block, pool = getattr(self, name), after.get(name)
            if name == "Conv2d_1a_3x3":
                out.append((name, lambda x, b=block: b(self._transform_input(x))))
            elif pool is not None:
                out.append((name, lambda x, b=block, p=pool: p(b(x))))
            else:
                out.append((name, block))
        out.append(("logits", lambda x: self.fc(torch.flatten(self.dropout(self.avgpool(x)), 1))))
        return out


class SteppedVGG(torchvision.models.VGG):
    """torchvision's VGG, unchanged, plus its forward as one step per unit of ``vgg16_units``.

    Each convolution's step runs the features from it up to the next convolution (its ReLU, and the
    max-pool that closes a block); fc6 starts with the average pool and the flattening.
    """

    def steps(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        bounds = _VGG_CONVS + [len(self.features)]
        out: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [
            (name, self.features[start:end]) for name, start, end in zip(_VGG_NAMES, bounds, bounds[1:])]
        out.append(("fc6", lambda x: self.classifier[0:3](torch.flatten(self.avgpool(x), 1))))
        out.append(("fc7", self.classifier[3:6]))
        out.append(("logits", self.classifier[6]))
        return out


class SteppedResNet(torchvision.models.ResNet):
    """torchvision's ResNet, unchanged, plus its forward as one step per unit of ``resnet50_units``:
    the stem (conv1, bn1, ReLU, max-pool), each bottleneck block, then average pool and fc."""

    def steps(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        out: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [
            ("conv1", lambda x: self.maxpool(self.relu(self.bn1(self.conv1(x)))))]
        for layer in range(1, 5):
            for b, block in enumerate(getattr(self, f"layer{layer}")):
                out.append((f"layer{layer}.{b}", block))
        out.append(("logits", lambda x: self.fc(torch.flatten(self.avgpool(x), 1))))
        return out


def build_torchvision(name: str, num_classes: int, scaling: str = "imagenet") -> nn.Module:
    """The architecture with random weights (loaded afterwards by ``load_weights``)."""
    if name == "inception_v3":
        # transform_input: torchvision's Inception weights were trained on [-1, 1] inputs; with
        # ImageNet-normalized inputs the model maps them back to [-1, 1] itself. With the paper's
        # [-1, 1] scaling the input is already there. (What inception_v3(weights=None, ...) builds.)
        return SteppedInception3(num_classes=num_classes, aux_logits=True, init_weights=False,
                                 transform_input=scaling == "imagenet")
    if name == "vgg16":  # what vgg16(weights=None, num_classes=...) builds
        return SteppedVGG(torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]), num_classes=num_classes)
    if name == "resnet50":  # what resnet50(weights=None, num_classes=...) builds
        return SteppedResNet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
    raise ValueError(f"model {name!r} is not one of the torchvision models here: {sorted(UNITS)}")


def load_weights(model: nn.Module, name: str, weights: Optional[str]) -> str:
    """Load torchvision weights ``weights`` (a weights name or DEFAULT) into ``model``; returns provenance.

    A state-dict file goes through ``checkpoints.load_weights``, which checks it against the model.
    """
    if weights is None:
        return "random (model.weights=null): no pretrained weights loaded"
    check_weights(name, weights)
    enum = _weights_enum(name)
    w = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    model.load_state_dict(w.get_state_dict(progress=False, check_hash=True))
    return f"torchvision {enum.__name__}.{w.name}"


def check_weights(name: str, weights: Optional[str]) -> None:
    """Fail before any download or data loading when ``model.weights`` cannot work."""
    if weights is None or Path(weights).expanduser().is_file():
        return
    enum = _weights_enum(name)
    if weights != "DEFAULT" and weights not in enum.__members__:
        raise ValueError(f"model.weights={weights!r} is neither a file nor a torchvision weights name of {name}; "
                         f"use one of {['DEFAULT'] + [w.name for w in enum]} or a path to a state dict")


PREPROCESSING: dict[str, Preprocessing] = {
    "inception_v3": Preprocessing(resize=342, crop=299),
    "vgg16": Preprocessing(resize=256, crop=224),
    "resnet50": Preprocessing(resize=256, crop=224),
}

UNITS: dict[str, Callable[[], dict[str, tuple[str, ...]]]] = {
    "inception_v3": inception_units, "vgg16": vgg16_units, "resnet50": resnet50_units}
# ResNet-50: the last bottleneck block, whose output is layer4's; a module the steps call themselves, so its
# forward hook fires when stages share layers too.
GRADCAM_LAYERS = {"inception_v3": "Mixed_7c", "vgg16": "features.29", "resnet50": "layer4.2"}
INITS = {"inception_v3": init_inception, "vgg16": init_vgg, "resnet50": init_resnet}
