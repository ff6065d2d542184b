"""The MNIST CNN of Adebayo et al. 2018 (PROTOCOL.md, Models)."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Module):
    """Convolution with 'same' padding followed by a ReLU; GradCAM reads its output."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Functional ReLU on purpose: guided backprop must not depend on nn.ReLU modules.
        return F.relu(self.conv(x))


class MnistCNN(nn.Module):
    """conv 5x5x32 + ReLU, maxpool 2, conv 5x5x64 + ReLU, maxpool 2, FC 1024 + ReLU, FC 10."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, size: int = 28) -> None:
        super().__init__()
        self.conv1 = ConvBlock(in_channels, 32)
        self.conv2 = ConvBlock(32, 64)
        self.fc1 = nn.Linear(64 * (size // 4) ** 2, 1024)
        self.logits = nn.Linear(1024, num_classes)

    def steps(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        """The forward pass as a chain of steps, one per randomization unit (``forward`` runs them in turn).

        A cascade stage that re-initializes only the top units leaves the activations of the steps below
        them unchanged; the engine computes those once for every stage (``Engine.explain_stages``).
        """
        return [
            ("conv1", lambda x: F.max_pool2d(self.conv1(x), 2)),
            ("conv2", lambda x: F.max_pool2d(self.conv2(x), 2)),
            ("fc1", lambda x: F.relu(self.fc1(x.flatten(1)))),
            ("logits", self.logits),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, step in self.steps():
            x = step(x)
        return x


def init_default(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initializer of Conv and Linear layers, drawn from ``generator``.

    Same distributions as ``reset_parameters``: Kaiming-uniform weights with a=sqrt(5) and
    biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    for sub in module.modules():
        if isinstance(sub, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(sub.weight, a=math.sqrt(5), generator=generator)
            if sub.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(sub.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(sub.bias, -bound, bound, generator=generator)

