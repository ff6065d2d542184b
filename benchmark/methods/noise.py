"""Random-noise control: a fresh N(0, 1) map per image and stage; similarity should be near 0."""

from dataclasses import dataclass

import torch

from benchmark import rng
from benchmark.methods.base import Method


@dataclass(frozen=True)
class Noise(Method):
    name = "noise"
    uses_model = False

    def combine(self, results):
        shape = (1, *results.inputs.shape[-2:])
        maps = [
            torch.randn(shape, generator=rng.generator(results.seed, "noise_control", results.stage_key, int(i)))
            for i in results.image_ids
        ]
        return torch.stack(maps)
