"""Gradient (Simonyan et al. 2014): d logit_c / d x."""

from dataclasses import dataclass

from benchmark.methods.base import GradientPass, Method


@dataclass(frozen=True)
class Gradient(Method):
    name = "gradient"

    def primitives(self):
        return [GradientPass()]

    def combine(self, results):
        return results[GradientPass()]
