"""SmoothGrad (Smilkov et al. 2017): mean gradient over noisy copies, not squared."""

from dataclasses import dataclass

from benchmark.methods.base import Method, NoisyGradients


@dataclass(frozen=True)
class SmoothGrad(Method):
    name = "smoothgrad"
    n_samples: int = 50
    noise_level: float = 0.15

    def primitives(self):
        return [NoisyGradients(self.noise_level, self.n_samples)]

    def combine(self, results):
        return results[self.primitives()[0]].mean
