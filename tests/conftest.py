import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))


class TinyCNN(nn.Module):
    """A small CNN built from nn.ReLU modules (what Captum's GuidedBackprop hooks)."""

    def __init__(self, functional: bool = False):
        super().__init__()
        self.functional = functional
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6 * 7 * 7, 5)

    def forward(self, x):
        act = F.relu if self.functional else None
        x = self.conv1(x)
        x = act(x) if act else self.relu1(x)
        x = F.max_pool2d(x, 2)
        x = self.conv2(x)
        x = act(x) if act else self.relu2(x)
        x = F.max_pool2d(x, 2)
        return self.fc(x.flatten(1))


@pytest.fixture
def tiny_cnn():
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def digits_batch():
    """A handful of real digits in MNIST layout, (6, 1, 28, 28)."""
    from sklearn.datasets import load_digits

    from benchmark.data.digits import digits_as_mnist

    bunch = load_digits()
    return digits_as_mnist(bunch.images[:6]), torch.as_tensor(bunch.target[:6])
