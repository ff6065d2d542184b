"""Integrated Gradients (Sundararajan et al. 2017): 50 steps from a zero baseline (PROTOCOL.md).

``integrated_gradients_shifted`` is the same method whose baseline moves with the input in the input invariance
test (Kindermans et al. 2019): there its shifted stage integrates from ``baseline + shift``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from benchmark.methods.base import Method, PathGradients


@dataclass(frozen=True)
class IntegratedGradients(Method):
    name = "integrated_gradients"
    n_steps: int = 50
    # linspace: alphas linspace(0, 1, n), equal weights (the paper's code); or one of Captum's
    # riemann_left, riemann_right, riemann_middle, riemann_trapezoid, gausslegendre.
    rule: str = "linspace"
    # The constant baseline image (one value per channel: the shifted stage of the input invariance test).
    baseline: float | tuple[float, ...] = 0.0

    def primitives(self):
        return [PathGradients(self.n_steps, self.rule, self.baseline)]

    def combine(self, results):
        return results[self.primitives()[0]]


@dataclass(frozen=True)
class ShiftedIntegratedGradients(IntegratedGradients):
    """Integrated Gradients whose baseline follows a shift of the input (Kindermans et al. 2019, section 3.2).

    In the input invariance test the shifted stage explains ``x + shift`` and integrates from
    ``baseline + shift`` (``with_shift``), so both stages integrate along the same path of the model's function;
    in every other test it is ``integrated_gradients``.
    """

    name = "integrated_gradients_shifted"

    def with_shift(self, shift: tuple[float, ...]) -> "ShiftedIntegratedGradients":
        """This method with its baseline moved by ``shift`` (one value per channel; a float when they are equal).

        >>> ShiftedIntegratedGradients(baseline=0.5).with_shift((0.25,)).baseline
        0.75
        """
        base = self.baseline if isinstance(self.baseline, tuple) else (float(self.baseline),) * len(shift)
        moved = tuple(float(b) + float(s) for b, s in zip(base, shift))
        return dataclasses.replace(self, baseline=moved[0] if len(set(moved)) == 1 else moved)
