"""SmoothGrad wrapped around Integrated Gradients (PROTOCOL.md: 50 steps, 25 or 50 samples)."""

from dataclasses import dataclass

from benchmark.methods.base import Method, PathGradients


@dataclass(frozen=True)
class IGSmoothGrad(Method):
    name = "ig_smoothgrad"
    n_steps: int = 50
    n_samples: int = 25
    noise_level: float = 0.15
    rule: str = "linspace"
    baseline: float = 0.0

    def primitives(self):
        return [PathGradients(self.n_steps, self.rule, self.baseline, self.n_samples, self.noise_level)]

    def combine(self, results):
        return results[self.primitives()[0]]
