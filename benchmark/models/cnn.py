"""The MNIST CNN of Adebayo et al. 2018 (PROTOCOL.md, Models)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.runtime import memory_format_of


class ConvBlock(nn.Module):
    """Convolution with 'same' padding followed by a ReLU; GradCAM reads its output."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.pool_first = False  # ReLU after the max-pool that follows; only inside MnistCNN.equivalent_rewrite

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Functional ReLU on purpose: guided backprop must not depend on nn.ReLU modules.
        return F.relu(self.conv(x))


def conv_pool(block: ConvBlock, x: torch.Tensor) -> torch.Tensor:
    """``max_pool2d(block(x), 2)``; with ``block.pool_first`` (set by ``MnistCNN.equivalent_rewrite``) the ReLU
    runs after the pooling, on a quarter of the elements.

    ReLU and max-pooling commute, values and gradients alike, Guided Backprop's included: the pooled maximum
    is positive exactly when the window's ReLU output is, and both route the gradient to the window's first
    maximum.
    """
    if block.pool_first:
        return F.relu(F.max_pool2d(block.conv(x), 2))
    return F.max_pool2d(block(x), 2)


class _Flatten(torch.autograd.Function):
    """``x.flatten(1)`` whose gradient comes back in ``x``'s memory layout.

    A channels-last ``x`` otherwise gets a plain gradient, and max-pooling's backward then converts
    layouts in copies of its 4x larger input.
    """

    @staticmethod
    def forward(ctx, x):
        ctx.shape, ctx.layout = x.shape, memory_format_of(x)
        return x.flatten(1)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape).contiguous(memory_format=ctx.layout)


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
            ("conv1", lambda x: conv_pool(self.conv1, x)),
            ("conv2", lambda x: conv_pool(self.conv2, x)),
            ("fc1", lambda x: F.relu(self.fc1(_Flatten.apply(x)))),
            ("logits", self.logits),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, step in self.steps():
            x = step(x)
        return x

    @contextmanager
    def equivalent_rewrite(self, keep: Sequence[nn.Module] = ()) -> Iterator["MnistCNN"]:
        """For the block: the ReLU after the max-pooling in each convolution block not in ``keep``; undone on exit.

        The same values and gradients bit for bit (``conv_pool``), with a quarter of the ReLU's work. A block whose
        output someone reads (GradCAM's layer, hooked) goes in ``keep`` and runs as declared.
        """
        blocks = [b for b in (self.conv1, self.conv2) if not any(b is k for k in keep)]
        previous = [(b, b.pool_first) for b in blocks]
        try:
            for b in blocks:
                b.pool_first = True
            yield self
        finally:
            for b, flag in previous:
                b.pool_first = flag


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

