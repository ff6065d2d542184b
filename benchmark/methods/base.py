"""What a saliency method is: settings, the primitives it needs, and how it combines them.

A method overrides one thing, ``combine``; the expensive parts are shared primitives that the
engine (``benchmark.methods.engine``) computes once for every method that asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch

if TYPE_CHECKING:
    from benchmark.methods.engine import Results


@dataclass(frozen=True)
class Primitive:
    """A hashable request for shared work; equal requests are computed once."""


@dataclass(frozen=True)
class GradientPass(Primitive):
    """d logit_target / d x at the input, plain or with guided ReLUs (one pass per image)."""

    guided: bool = False


@dataclass(frozen=True)
class NoisyGradients(Primitive):
    """Gradients at ``n_samples`` noisy copies x + N(0, (noise_level * (max x - min x))^2).

    Requests with the same ``noise_level`` share their samples: sample j is the same draw for
    every method and every stage, so SmoothGrad and VarGrad come from one set of passes.
    """

    noise_level: float
    n_samples: int


@dataclass(frozen=True)
class PathGradients(Primitive):
    """Integrated Gradients along the straight path from ``baseline`` to the (noisy) input.

    With ``n_samples`` > 0 the path starts from each of the noisy copies of
    ``NoisyGradients`` and the IG maps are averaged (SmoothGrad around IG).
    """

    n_steps: int
    rule: str = "linspace"
    baseline: float = 0.0
    n_samples: int = 0
    noise_level: float = 0.0


class Method:
    """Base of every saliency method and control: engine methods override ``primitives`` and ``combine``,
    external methods (``ExternalMethod``) override ``attribute``."""

    name: ClassVar[str]
    needs_target_layer: ClassVar[bool] = False
    uses_model: ClassVar[bool] = True
    # True when the map carries a sign worth keeping (the no-ABS comparison reads it).
    signed: ClassVar[bool] = True

    def primitives(self) -> list[Primitive]:
        return []

    def skip(self, arch: Any) -> Optional[str]:
        """Why this method cannot run on ``arch`` (a ``benchmark.models.Architecture``), or None."""
        if self.needs_target_layer and getattr(arch, "gradcam_layer", None) is None:
            return f"needs a convolutional layer and model {arch.name!r} has none"
        return None

    def check(self) -> None:
        """Raise ValueError (key, value, fix) for settings that cannot work; called when built."""

    def combine(self, results: "Results") -> torch.Tensor:
        """The map, (B, C, H, W) or (B, 1, H, W), from the primitives' results."""
        raise NotImplementedError



class ExternalMethod(Method):
    """A method outside the engine's primitives: it computes its map itself from the stage's model."""

    def attribute(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The map for inputs x (B, C, H, W) and target classes (B,)."""
        raise NotImplementedError
