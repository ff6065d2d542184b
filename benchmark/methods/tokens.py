"""What every token-level method shares: the text layout's rows, the reduction of the embedding dimension per token,
and the engine primitives whose noise and paths touch only the scored tokens' embeddings.

Inputs are in the text layout of ``benchmark.models.text`` (rows: tokens then the [PAD] / [MASK] / [UNK]
embeddings; channels: the embedding then mask, scored, id); maps are (B, L), one value per token row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.methods.primitives import NoisyGradients, PathGradients, Segment
from benchmark.models.text import EXTRA, MASK_CH, SCORED_CH, SPECIAL
from benchmark.sampling import path_alphas, standard_noise


REDUCTIONS = ("l2", "l1", "sum", "dot")
BASELINES = ("zero", "pad", "mask")
REPLACEMENTS = ("delete", "mask", "unk", "pad")


def token_rows(x: torch.Tensor) -> int:
    return x.shape[-2] - len(SPECIAL)


def reduce_tokens(m: torch.Tensor, inputs: torch.Tensor, reduction: str) -> torch.Tensor:
    """(B, L + 3, D + 3) per-dimension values -> (B, L) per token."""
    L, D = token_rows(inputs), inputs.shape[-1] - EXTRA
    v = m[:, :L, :D].double()
    if reduction == "l2":
        out = v.pow(2).sum(-1).sqrt()
    elif reduction == "l1":
        out = v.abs().sum(-1)
    elif reduction == "sum":
        out = v.sum(-1)
    elif reduction == "dot":
        out = (v * inputs[:, :L, :D].double()).sum(-1)
    else:
        raise ValueError(f"reduction={reduction!r} must be one of {list(REDUCTIONS)}")
    return out.float()


def check_reduction(name: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"method.{name}.reduction={reduction!r} must be one of {list(REDUCTIONS)} (l2: the gradient's "
                         "norm per token; dot: gradient x embedding, summed)")


def embedding_spread(x: torch.Tensor) -> float:
    """The standard deviation of the scored tokens' embedding values (SmoothGrad's noise scale for text)."""
    L, D = token_rows(x), x.shape[-1] - EXTRA
    e = x[:L, :D].detach()[x[:L, SCORED_CH] > 0.5]
    return float(e.std()) if e.numel() > 1 else 0.0


@dataclass(frozen=True)
class TokenNoisyGradients(NoisyGradients):
    """Gradients at noisy copies of a sentence: N(0, (noise_level x sd)^2) added to the scored tokens' embeddings,
    sd the spread of those values (``embedding_spread``); the same draw j at every stage."""

    def share(self):
        return ("token_noisy", self.noise_level)

    def segments(self, group, row, x, image_id, seed, capture):
        n = self.n_items(group)
        L, D = token_rows(x), x.shape[-1] - EXTRA
        sd = self.noise_level * embedding_spread(x)
        scored = (x[:L, SCORED_CH] > 0.5).to(x.dtype)[None, :, None]

        real = max(1, int((x[:L, MASK_CH] > 0.5).sum()))  # draws of the sentence's own length: batch-independent

        def make():
            z = torch.stack([standard_noise(seed, image_id, j, (real, D)) for j in range(n)]).to(x.device, x.dtype)
            noisy = x[None].repeat(n, 1, 1)
            noisy[:, :real, :D] += sd * z * scored[:, :real]
            return noisy, None

        return [Segment(row, n, make, [((p, row), p.n_samples, True) for p in group])]


@dataclass(frozen=True)
class TokenPathGradients(PathGradients):
    """Integrated Gradients along the straight path from a baseline sentence to the sentence: the scored tokens'
    embeddings start at zero, or at the [PAD] or [MASK] embedding; [CLS], [SEP] and padding stay as they are."""

    token_baseline: str = "zero"

    def segments(self, group, row, x, image_id, seed, capture):
        alphas, weights = path_alphas(self.n_steps, self.rule)
        alphas, weights = alphas.to(x.device, x.dtype), weights.to(x.device, x.dtype)
        L, D = token_rows(x), x.shape[-1] - EXTRA
        scored = x[:L, SCORED_CH] > 0.5
        base = x.clone()
        if self.token_baseline == "zero":
            base[:L, :D][scored] = 0.0
        else:
            vec = x[L + SPECIAL.index(self.token_baseline), :D]
            base[:L, :D][scored] = vec
        shape = (-1, 1, 1)

        def make():
            diff = x - base
            return base[None] + alphas.view(shape) * diff[None], weights.view(shape) * diff[None]

        return [Segment(row, self.n_steps, make, [((self, row), self.n_steps, False)])]
