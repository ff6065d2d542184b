"""Guided GradCAM (Selvaraju et al. 2017): Guided Backprop times the upsampled GradCAM map."""

from dataclasses import dataclass

from benchmark.methods.base import GradientPass, Method
from benchmark.methods.gradcam import gradcam_map


@dataclass(frozen=True)
class GuidedGradCAM(Method):
    name = "guided_gradcam"
    needs_target_layer = True

    def primitives(self):
        return [GradientPass(), GradientPass(guided=True)]

    def combine(self, results):
        cam = gradcam_map(results.layer_activation, results.layer_gradient, results.inputs.shape[-2:])
        return results[GradientPass(guided=True)] * cam
