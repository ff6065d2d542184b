"""Gradient x Input (Shrikumar et al. 2016), from the same pass as the gradient."""

from dataclasses import dataclass

from benchmark.methods.base import GradientPass, Method


@dataclass(frozen=True)
class GradientXInput(Method):
    name = "gradient_x_input"

    def primitives(self):
        return [GradientPass()]

    def combine(self, results):
        return results[GradientPass()] * results.inputs
