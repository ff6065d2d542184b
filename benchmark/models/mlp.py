"""The MNIST MLP of Adebayo et al. 2018: 784-2500-1500-500-10 with ReLU (PROTOCOL.md, Models)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class MnistMLP(nn.Module):
    def __init__(self, in_features: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.hidden1 = nn.Linear(in_features, 2500)
        self.hidden2 = nn.Linear(2500, 1500)
        self.hidden3 = nn.Linear(1500, 500)
        self.logits = nn.Linear(500, num_classes)

    def steps(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        """The forward pass as a chain of steps, one per randomization unit (see ``MnistCNN.steps``)."""
        return [
            ("hidden1", lambda x: F.relu(self.hidden1(x.flatten(1)))),
            ("hidden2", lambda x: F.relu(self.hidden2(x))),
            ("hidden3", lambda x: F.relu(self.hidden3(x))),
            ("logits", self.logits),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, step in self.steps():
            x = step(x)
        return x
