"""GradCAM (Selvaraju et al. 2017): ReLU(sum_k mean(dy/dA_k) A_k), upsampled bilinearly."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmark.methods.base import GradientPass, Method


def gradcam_map(activation: torch.Tensor, gradient: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, K, h, w) activations and their gradients -> (B, 1, H, W) GradCAM map."""
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class GradCAM(Method):
    name = "gradcam"
    needs_target_layer = True
    signed = False

    def primitives(self):
        return [GradientPass()]

    def combine(self, results):
        return gradcam_map(results.layer_activation, results.layer_gradient, results.inputs.shape[-2:])
