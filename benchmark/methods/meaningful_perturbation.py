"""Meaningful perturbation (Fong and Vedaldi, ICCV 2017): the smallest blur deletion that removes the target class.

For each image x and target class c, a mask m in [0, 1] (1 keeps a pixel, 0 replaces it by a blurred copy) minimizes

    lambda1 * mean_u |1 - m(u)|  +  lambda2 * TV_beta(m)  +  E_tau[ f_c(Phi(x(. - tau), m)) ]

where Phi(x, m) = m * x + (1 - m) * blur(x) (Gaussian blur of sd ``blur_sigma``, scipy, reflected borders: the
perturbation methods' blur), f_c is the
softmax probability of c, TV_beta(m) = sum_u (d1 m(u)^2 + d2 m(u)^2)^(beta / 2) / sqrt(h w) (forward differences, as
the paper code's ``tv``) and tau shifts the image by up to ``jitter`` pixels, a fresh shift every step. m is
optimized at low resolution (h x w) and upsampled bilinearly to the image's size: torch.optim.Adam, ``n_steps``
steps of ``learning_rate``, m clipped to [0, 1] after each step (as the paper's code), starting from 0.5 everywhere
(the mean of the code's uniform random start, without a draw). The map is 1 - m upsampled, (B, 1, H, W): how much
of each pixel had to be deleted (unsigned).

Defaults: the paper's (Sec. 4, 224 px ImageNet) and its code (ruthcfong/perturb_explanations,
code/caffe/python/optimize_mask.py and defaults.py): 300 Adam steps of lr 0.1, lambda1 = 1e-4 on sum |1 - m| and
lambda2 = 1e-2 on the TV sum, both over the 28 x 28 mask (mask_scale 8), beta = 3, f = the softmax layer, PIL blur
radius 10 (at the photo's own size, before its resize to 224), jitter 4 (crop offsets 0..3 of an image resized to
228 px, about +-2 px). Here the L1 term is a mean (lambda1 = 1e-4 * 28 * 28 = 0.0784) and the TV sum is divided by
the mask's side (lambda2 = 1e-2 * 28 = 0.28), so a deletion of the same relative area and outline costs about the
same at any mask size; at 28 x 28 both terms are the code's. Not followed: the code upsamples the mask by nearest
neighbour and then blurs it (radius 5), where this upsamples bilinearly; its driver starts from a blurred disc found
by a search, where this starts from 0.5.
Automatic sizes (mask_size 0, blur_sigma 0, jitter None) scale the paper's to the image (side n = H or W,
S = min(H, W)):

    mask side  max(n // 8, min(7, n // 2))     8 px: 4,  28 px: 7,     224 px: 28 (the paper's factor 8)
    blur sigma max(1, 10 S / 224)              8 px: 1,  28 px: 1.25,  224 px: 10
    jitter     max(1, round(2 S / 224)) px     8 px: 1,  28 px: 1,     224 px: 2 (shifts of -2..2)

Draws: image i's shifts come from ``rng.generator(seed, "meaningful_perturbation", sha256 of its float32 values)``,
so an image gets the same shifts at every stage and in any batch; with jitter 0 nothing is drawn (seed is unused).
All images are optimized at once, one mask each, by one (elementwise) Adam over the batch; the per-image objectives are
summed, so images do not interact. Gradients are taken for the mask only (``torch.autograd.grad``): the model's parameters,
their ``grad``, its train/eval flag and hooks are left as they were.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmark import rng
from benchmark.methods.base import ExternalMethod
from benchmark.methods.masks import auto_blur_sigma, blurred


@dataclass(frozen=True)
class MeaningfulPerturbation(ExternalMethod):
    name = "meaningful_perturbation"
    signed = False
    n_steps: int = 300
    learning_rate: float = 0.1
    lambda1: float = 0.0784  # on mean |1 - m|: the paper's 1e-4 per cell of its 28 x 28 mask
    lambda2: float = 0.28  # on TV_beta sum / mask side: the paper's 1e-2 at 28 x 28
    beta: float = 3.0
    mask_size: int = 0  # side of the low-resolution mask; 0 = auto
    blur_sigma: float = 0.0  # pixels; 0 = auto
    jitter: Optional[int] = None  # largest shift in pixels; None = auto, 0 = none
    seed: int = 0

    def check(self) -> None:
        def bad(key: str, value: object, need: str, fix: str) -> ValueError:
            return ValueError(f"method.{self.name}.{key}={value!r} {need}; {fix}")

        def number(v: object) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def whole(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not whole(self.n_steps) or self.n_steps < 1:
            raise bad("n_steps", self.n_steps, "must be a whole number >= 1", "use e.g. 300 (the paper's)")
        if not number(self.learning_rate) or self.learning_rate <= 0:
            raise bad("learning_rate", self.learning_rate, "must be a number > 0", "use e.g. 0.1 (the paper's)")
        for key, default in (("lambda1", 0.0784), ("lambda2", 0.28)):
            if not number(getattr(self, key)) or getattr(self, key) < 0:
                raise bad(key, getattr(self, key), "must be a number >= 0",
                          f"use e.g. {default} (the default: the paper's weight, see the module) or 0 to drop the term")
        if not number(self.beta) or self.beta < 1:
            raise bad("beta", self.beta, "must be a number >= 1 (the TV exponent)", "use e.g. 3 (the paper's)")
        if not whole(self.mask_size) or self.mask_size < 0:
            raise bad("mask_size", self.mask_size, "must be a whole number >= 0",
                      "use 0 (auto: 7 cells a side for 28 px, 28 for 224 px) or the side you want")
        if not number(self.blur_sigma) or self.blur_sigma < 0:
            raise bad("blur_sigma", self.blur_sigma, "must be a number >= 0",
                      "use 0 (auto: 10 * side / 224, at least 1) or a blur sd in pixels")
        if self.jitter is not None and (not whole(self.jitter) or self.jitter < 0):
            raise bad("jitter", self.jitter, "must be a whole number of pixels >= 0 or null",
                      "use null (auto: max(1, round(2 * side / 224)) px, 2 at 224 px), 0 for none, or e.g. 1")
        if not whole(self.seed):
            raise bad("seed", self.seed, "must be a whole number", "use e.g. 0")

    def check_input(self, shape: tuple[int, int]) -> None:
        """A mask finer than the images, or a shift as large as them, is an error naming the setting."""
        (height, width), side = shape, min(shape)
        if self.mask_size > side:
            raise ValueError(f"method.{self.name}.mask_size={self.mask_size!r} is finer than the {height} x {width} "
                             f"images; use 0 (auto: {self.sizes(height, width)[0][0]} here) or at most {side}")
        if self.jitter is not None and self.jitter >= side:
            raise ValueError(f"method.{self.name}.jitter={self.jitter!r} shifts by the whole {height} x {width} image; "
                             f"use null (auto: {max(1, round(2 * side / 224))} here) or less than {side}")

    def sizes(self, height: int, width: int) -> tuple[tuple[int, int], float, int]:
        """The mask's (h, w), the blur sigma and the jitter for images of ``height`` x ``width``, autos resolved."""
        side = min(height, width)
        hw = (self.mask_size, self.mask_size) if self.mask_size else tuple(
            max(1, n // 8, min(7, n // 2)) for n in (height, width))
        sigma = self.blur_sigma or auto_blur_sigma(side)
        jitter = self.jitter if self.jitter is not None else max(1, round(2 * side / 224))
        return hw, sigma, jitter  # type: ignore[return-value]

    def objective(self, model: nn.Module, x: torch.Tensor, blurred: torch.Tensor, mask: torch.Tensor,
                  target: torch.Tensor) -> torch.Tensor:
        """Each image's objective (B,) for low-resolution masks (B, 1, h, w), images x and their blurred copies."""
        prob = model(perturb(x, blurred, upsample(mask, x))).softmax(1).gather(1, target[:, None])[:, 0]
        return self.lambda1 * (1 - mask).abs().flatten(1).mean(1) + self.lambda2 * tv(mask, self.beta) + prob

    def attribute(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask, _ = optimize_masks(model, x, target, self)
        return 1 - upsample(mask, x)


def optimize_masks(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                   method: MeaningfulPerturbation) -> tuple[torch.Tensor, torch.Tensor]:
    """The optimized low-resolution masks (B, 1, h, w) and the objective before each step, (n_steps, B)."""
    x = x.detach()
    target = target.to(x.device).long().reshape(-1)
    (h, w), sigma, jitter = method.sizes(*x.shape[-2:])
    both = torch.cat([x, blurred(x, sigma)], 1)  # shifted together: Phi(x(. - tau), m)
    shifts = torch.stack([image_shifts(method.seed, image, method.n_steps, jitter) for image in x], 1)
    mask = torch.full((len(x), 1, h, w), 0.5, dtype=x.dtype, device=x.device, requires_grad=True)
    adam = torch.optim.Adam([mask], lr=method.learning_rate)  # elementwise: the images' masks do not interact
    history = []
    with torch.enable_grad():
        for step in range(method.n_steps):
            moved = shift(both, shifts[step], jitter)
            objective = method.objective(model, moved[:, : x.shape[1]], moved[:, x.shape[1]:], mask, target)
            (mask.grad,) = torch.autograd.grad(objective.sum(), mask)
            history.append(objective.detach())
            adam.step()
            with torch.no_grad():
                mask.clamp_(0, 1)
    return mask.detach(), torch.stack(history).double().cpu()


def image_shifts(seed: int, image: torch.Tensor, n_steps: int, jitter: int) -> torch.Tensor:
    """One image's offsets (n_steps, 2) in [0, 2 jitter], from a generator keyed by the image's values."""
    if jitter == 0:
        return torch.zeros(n_steps, 2, dtype=torch.long)
    digest = hashlib.sha256(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()
    return torch.randint(0, 2 * jitter + 1, (n_steps, 2), generator=rng.generator(seed, "meaningful_perturbation", digest))


def shift(x: torch.Tensor, offsets: torch.Tensor, jitter: int) -> torch.Tensor:
    """Image i moved by offsets[i] - jitter pixels (rows, columns), borders replicated."""
    if jitter == 0:
        return x
    height, width = x.shape[-2:]
    padded = F.pad(x, (jitter,) * 4, mode="replicate")
    return torch.stack([padded[i, :, a : a + height, b : b + width] for i, (a, b) in enumerate(offsets.tolist())])


def perturb(x: torch.Tensor, blurred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Phi(x, m) = m x + (1 - m) blur(x) for a full-resolution mask (B, 1, H, W)."""
    return mask * x + (1 - mask) * blurred


def upsample(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Low-resolution masks (B, 1, h, w) bilinearly resized to the images' size."""
    return F.interpolate(mask, size=tuple(like.shape[-2:]), mode="bilinear", align_corners=False)


def tv(mask: torch.Tensor, beta: float) -> torch.Tensor:
    """TV_beta per mask (B,): sum_u (d1^2 + d2^2)^(beta / 2) over forward differences (0 past the last row and
    column) divided by sqrt(h w); the gradient at a zero difference is taken as 0."""
    d1 = F.pad(mask[..., :, 1:] - mask[..., :, :-1], (0, 1))
    d2 = F.pad(mask[..., 1:, :] - mask[..., :-1, :], (0, 0, 0, 1))
    s = d1**2 + d2**2
    nonzero = s > 0
    v = torch.where(nonzero, torch.where(nonzero, s, 1.0).pow(beta / 2), 0.0)
    return v.flatten(1).sum(1) / math.sqrt(mask.shape[-2] * mask.shape[-1])
