"""Shared work the engine computes once for every method that asks for it, and what methods read back.

A primitive is a hashable request; equal requests are computed once, and requests with the same ``share``
key run one stream of items (SmoothGrad and VarGrad at one noise level read the same noisy samples). Each
primitive owns its work: how many items it needs per image (``n_items``), the segments of items it feeds
the engine (``segments``) and how its running sums become its result (``result``). A new primitive is one
class; the engine has no type switches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Hashable, Optional, Sequence

import torch

from benchmark.sampling import noise_scale, path_alphas, standard_noise


@dataclass
class Segment:
    """A run of items of one image; each target sums rows [0, limit) into an accumulator.

    ``make`` builds the items' inputs (length, ...) and optional per-item multipliers of their gradients.
    """

    row: int  # image row in the batch
    length: int
    make: Callable[[], tuple[torch.Tensor, Optional[torch.Tensor]]]
    targets: list[tuple[Any, int, bool]]  # (accumulator key, limit, also squares)
    capture: bool = False  # this item's pass also records the GradCAM layer's activation and gradient


@dataclass
class NoisyStats:
    mean: torch.Tensor
    var: torch.Tensor


@dataclass
class Results:
    """What methods read: primitive results, the inputs and the GradCAM layer's tensors."""

    inputs: torch.Tensor
    image_ids: torch.Tensor
    seed: int
    stage_key: str
    values: dict["Primitive", Any] = field(default_factory=dict)
    layer_activation: Optional[torch.Tensor] = None
    layer_gradient: Optional[torch.Tensor] = None

    def __getitem__(self, primitive: "Primitive") -> Any:
        return self.values[primitive]


@dataclass(frozen=True)
class Primitive:
    """A hashable request for shared work; equal requests are computed once."""

    # Items of one image run in this order of ranks (single passes, then noisy samples, then paths).
    rank: ClassVar[int] = 0
    # Forward passes without gradients (``Perturbation``), run apart from the gradient items.
    forward_only: ClassVar[bool] = False

    @property
    def guided(self) -> bool:
        """Whether its passes run with guided ReLUs (in chunks of their own)."""
        return False

    def share(self) -> Hashable:
        """Requests with equal keys share one stream of items."""
        return self

    def n_items(self, group: Sequence["Primitive"]) -> int:
        """Items per image for the group of requests that share this one's stream."""
        raise NotImplementedError

    def segments(self, group: Sequence["Primitive"], row: int, x: torch.Tensor, image_id: int, seed: int,
                 capture: bool) -> list[Segment]:
        """The group's items for one image ``x`` (C, H, W) at batch row ``row``."""
        raise NotImplementedError

    def result(self, sums: torch.Tensor, squares: Optional[torch.Tensor]) -> Any:
        """The result methods read, from the float64 sums (and sums of squares) of its items' gradients."""
        return sums.float()


@dataclass(frozen=True)
class Perturbation(Primitive):
    """Forward passes only: the target's score on masked copies of each image (``benchmark.engine.forward``).

    ``prepare`` gives an image's (n, H, W) boolean masks (True: the pixel takes the fill's value in every
    channel) and what ``finish`` needs besides; ``finish`` turns the scores of the masked copies and of the image
    into the (1, H, W) map. Requests with the same fill share one stream: each distinct masked copy of an image
    is run once for all of them.
    """

    fill: str = "zero"  # zero | mean | blur
    blur_sigma: float = 0.0  # 0: sized to the image (benchmark.methods.perturbation.auto_blur_sigma)
    output: str = "logit"  # logit | probability
    forward_only: ClassVar[bool] = True
    rank = 3

    def share(self):
        return ("perturbation", self.fill, self.blur_sigma if self.fill == "blur" else 0.0)

    def prepare(self, x: torch.Tensor, image_id: int, seed: int) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def finish(self, x: torch.Tensor, fill: torch.Tensor, masks: torch.Tensor, aux: Any, scores: torch.Tensor,
               base: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class GradientPass(Primitive):
    """d logit_target / d x at the input, plain or with guided ReLUs (one pass per image)."""

    guided: bool = False  # type: ignore[assignment]

    def n_items(self, group):
        return 1

    def segments(self, group, row, x, image_id, seed, capture):
        return [Segment(row, 1, lambda: (x[None], None), [((self, row), 1, False)], capture=capture and not self.guided)]


@dataclass(frozen=True)
class NoisyGradients(Primitive):
    """Gradients at ``n_samples`` noisy copies x + N(0, (noise_level * (max x - min x))^2).

    Requests with the same ``noise_level`` share their samples: sample j is the same draw for every
    method and every stage, so SmoothGrad and VarGrad come from one set of passes (the most asked for).
    """

    noise_level: float
    n_samples: int
    rank = 1

    def share(self):
        return ("noisy", self.noise_level)

    def n_items(self, group):
        return max(p.n_samples for p in group)

    def segments(self, group, row, x, image_id, seed, capture):
        n, sd, device = self.n_items(group), float(noise_scale(x[None], self.noise_level)), x.device

        def make():
            z = torch.stack([standard_noise(seed, image_id, j, x.shape) for j in range(n)])
            return x[None] + sd * z.to(device), None

        return [Segment(row, n, make, [((p, row), p.n_samples, True) for p in group])]

    def result(self, sums, squares):
        mean = sums / self.n_samples
        var = squares / self.n_samples - mean * mean
        return NoisyStats(mean.float(), var.float())


def constant_image(value: float | tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    """An image like ``x`` (C, H, W) holding ``value`` everywhere, or ``value[c]`` in channel c.

    >>> constant_image((0.0, 1.0), torch.zeros(2, 1, 2))[:, 0].tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    """
    if not isinstance(value, tuple):
        return torch.full_like(x, value)
    if len(value) != x.shape[0]:
        raise ValueError(f"a baseline of {len(value)} channel values for inputs of {x.shape[0]} channels")
    return torch.tensor(value, dtype=x.dtype, device=x.device).view(-1, *([1] * (x.dim() - 1))).expand_as(x)


@dataclass(frozen=True)
class PathGradients(Primitive):
    """Integrated Gradients along the straight path from ``baseline`` to the (noisy) input.

    With ``n_samples`` > 0 the path starts from each of the noisy copies of ``NoisyGradients`` and the
    IG maps are averaged (SmoothGrad around IG).
    """

    n_steps: int
    rule: str = "linspace"
    # The constant baseline image: one value, or one value per channel (the input invariance test's shifted
    # baseline, ``baseline + shift``).
    baseline: float | tuple[float, ...] = 0.0
    n_samples: int = 0
    noise_level: float = 0.0
    rank = 2

    def n_items(self, group):
        return self.n_steps * max(1, self.n_samples)

    def segments(self, group, row, x, image_id, seed, capture):
        device = x.device
        alphas, weights = path_alphas(self.n_steps, self.rule)
        alphas, weights = alphas.to(device), weights.to(device)
        shape = (-1,) + (1,) * x.dim()
        base = constant_image(self.baseline, x)
        if self.n_samples == 0:
            starts, scale = [x], 1.0
        else:
            sd = float(noise_scale(x[None], self.noise_level))
            starts = [x + sd * standard_noise(seed, image_id, j, x.shape).to(device) for j in range(self.n_samples)]
            scale = 1.0 / self.n_samples
        segs = []
        for xs in starts:
            def make(xs=xs):
                diff = xs - base
                inputs = base[None] + alphas.view(shape) * diff[None]
                return inputs, (weights.view(shape) * scale) * diff[None]

            segs.append(Segment(row, self.n_steps, make, [((self, row), self.n_steps, False)]))
        return segs
