"""The gradient family on token maps, through the engine's shared passes: the gradient, gradient x input, Integrated
Gradients, SmoothGrad and VarGrad at the word embeddings, each reduced per token by its ``reduction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from benchmark.methods.base import GradientPass, Method
from benchmark.methods.primitives import NoisyStats
from benchmark.methods.tokens import BASELINES, TokenNoisyGradients, TokenPathGradients, check_reduction, reduce_tokens


class _TokenMethod(Method):
    """A gradient method on token maps: its per-dimension values (``values``), reduced per token by ``reduction``."""

    modality = "text"
    reduction: str = "l2"

    @property
    def signed(self) -> bool:  # type: ignore[override]
        return self.reduction in ("sum", "dot")

    def check(self) -> None:
        check_reduction(self.name, self.reduction)

    def values(self, results) -> torch.Tensor:
        """(B, L + 3, D + 3) values in the text layout, from the primitives' results."""
        raise NotImplementedError

    def combine(self, results):
        return reduce_tokens(self.values(results), results.inputs, self.reduction)


@dataclass(frozen=True)
class TokenGradient(_TokenMethod):
    """The gradient at each token's embedding, reduced per token (default: its L2 norm)."""

    name = "gradient"
    reduction: str = "l2"

    def primitives(self):
        return [GradientPass()]

    def values(self, results):
        return results[GradientPass()]


@dataclass(frozen=True)
class TokenGradientXInput(_TokenMethod):
    """Gradient times embedding, summed over the embedding (reduction sum: the dot product g . e)."""

    name = "gradient_x_input"
    reduction: str = "sum"

    def primitives(self):
        return [GradientPass()]

    def values(self, results):
        return results[GradientPass()] * results.inputs


@dataclass(frozen=True)
class TokenIntegratedGradients(_TokenMethod):
    """IG at the embeddings from a zero, [PAD] or [MASK] baseline (``baseline``; 0.0 means zero), summed per token."""

    name = "integrated_gradients"
    n_steps: int = 50
    rule: str = "linspace"
    baseline: Any = "zero"
    reduction: str = "sum"

    @property
    def token_baseline(self) -> str:
        return "zero" if self.baseline in (0, 0.0, "zero") and not isinstance(self.baseline, bool) else str(self.baseline)

    def check(self) -> None:
        super().check()
        if self.token_baseline not in BASELINES:
            raise ValueError(f"method.{self.name}.baseline={self.baseline!r}: a text model's IG baseline is one of "
                             f"{list(BASELINES)} (the zero embedding, or the [PAD] / [MASK] token's)")

    def primitives(self):
        return [TokenPathGradients(self.n_steps, self.rule, token_baseline=self.token_baseline)]

    def values(self, results):
        return results[self.primitives()[0]]


@dataclass(frozen=True)
class TokenSmoothGrad(_TokenMethod):
    name = "smoothgrad"
    n_samples: int = 50
    noise_level: float = 0.15
    reduction: str = "l2"

    def primitives(self):
        return [TokenNoisyGradients(self.noise_level, self.n_samples)]

    def values(self, results):
        stats: NoisyStats = results[self.primitives()[0]]
        return stats.mean


@dataclass(frozen=True)
class TokenVarGrad(_TokenMethod):
    name = "vargrad"
    n_samples: int = 25
    noise_level: float = 0.15
    reduction: str = "sum"

    @property
    def signed(self) -> bool:  # type: ignore[override]
        return False

    def primitives(self):
        return [TokenNoisyGradients(self.noise_level, self.n_samples)]

    def values(self, results):
        return results[self.primitives()[0]].var
