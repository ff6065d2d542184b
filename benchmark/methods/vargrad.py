"""VarGrad (Adebayo et al. 2018): variance of the gradients over noisy copies."""

from dataclasses import dataclass

from benchmark.methods.base import Method, NoisyGradients


@dataclass(frozen=True)
class VarGrad(Method):
    name = "vargrad"
    signed = False
    n_samples: int = 25
    noise_level: float = 0.15

    def primitives(self):
        return [NoisyGradients(self.noise_level, self.n_samples)]

    def combine(self, results):
        return results[self.primitives()[0]].var
