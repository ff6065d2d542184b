"""Where an engine item's input comes from: the IG quadrature on [0, 1] and the noisy copies' draws.

Every draw comes from a generator derived from (seed, "input_noise", image, sample), so an image gets the
same noise at every stage and in any batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from benchmark import rng

IG_RULES = ("linspace", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def path_alphas(n_steps: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on [0, 1] and their weights for the IG integral.

    ``linspace`` is the paper's code (PAIR saliency: linspace(0, 1, n), equal weights); the
    others follow Captum's names and definitions.
    """
    n = n_steps
    if n < 1:
        raise ValueError(f"n_steps={n} must be at least 1")
    if rule == "linspace":
        a, w = np.linspace(0.0, 1.0, n), np.full(n, 1.0 / n)
    elif rule == "riemann_left":
        a, w = np.arange(n) / n, np.full(n, 1.0 / n)
    elif rule == "riemann_right":
        a, w = np.arange(1, n + 1) / n, np.full(n, 1.0 / n)
    elif rule == "riemann_middle":
        a, w = (np.arange(n) + 0.5) / n, np.full(n, 1.0 / n)
    elif rule == "riemann_trapezoid":
        if n < 2:
            raise ValueError("rule 'riemann_trapezoid' needs n_steps >= 2")
        # Captum's definition: steps of 1/n with the two ends halved (weights sum to 1 - 1/n)
        a, w = np.linspace(0.0, 1.0, n), np.full(n, 1.0 / n)
        w[0] = w[-1] = 0.5 / n
    elif rule == "gausslegendre":
        x, wx = np.polynomial.legendre.leggauss(n)
        a, w = (x + 1) / 2, wx / 2
    else:
        raise ValueError(f"rule={rule!r} is not an IG rule; use one of {list(IG_RULES)}")
    return torch.tensor(a, dtype=torch.float32), torch.tensor(w, dtype=torch.float32)


def noise_scale(x: torch.Tensor, noise_level: float) -> torch.Tensor:
    """Per-image noise sd: noise_level * (max x - min x), as the PAIR saliency package."""
    flat = x.flatten(1)
    return noise_level * (flat.max(1).values - flat.min(1).values)


def standard_noise(seed: int, image_id: int, sample: int, shape: Sequence[int]) -> torch.Tensor:
    """The standard normal draw behind noisy sample ``sample`` of image ``image_id``."""
    return torch.randn(tuple(shape), generator=rng.generator(seed, "input_noise", image_id, sample))
