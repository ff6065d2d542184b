"""Integrated Gradients (Sundararajan et al. 2017): 50 steps from a zero baseline (PROTOCOL.md)."""

from dataclasses import dataclass

from benchmark.methods.base import Method, PathGradients


@dataclass(frozen=True)
class IntegratedGradients(Method):
    name = "integrated_gradients"
    n_steps: int = 50
    # linspace: alphas linspace(0, 1, n), equal weights (the paper's code); or one of Captum's
    # riemann_left, riemann_right, riemann_middle, riemann_trapezoid, gausslegendre.
    rule: str = "linspace"
    baseline: float = 0.0

    def primitives(self):
        return [PathGradients(self.n_steps, self.rule, self.baseline)]

    def combine(self, results):
        return results[self.primitives()[0]]
