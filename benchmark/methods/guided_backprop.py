"""Guided Backpropagation (Springenberg et al. 2015), on every ReLU, module or functional."""

from dataclasses import dataclass

from benchmark.methods.base import GradientPass, Method


@dataclass(frozen=True)
class GuidedBackprop(Method):
    name = "guided_backprop"

    def primitives(self):
        return [GradientPass(guided=True)]

    def combine(self, results):
        return results[GradientPass(guided=True)]
