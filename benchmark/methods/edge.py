"""Edge-detector control: Sobel gradient magnitude of the input; it ignores the model."""

from dataclasses import dataclass

import numpy as np
import torch
from skimage.filters import sobel

from benchmark.methods.base import Method


@dataclass(frozen=True)
class Edge(Method):
    name = "edge"
    uses_model = False
    signed = False

    def combine(self, results):
        gray = results.inputs.detach().float().mean(dim=1).cpu().numpy()
        edges = np.stack([sobel(img) for img in gray])
        return torch.from_numpy(edges).unsqueeze(1).to(results.inputs.dtype)
