"""What a saliency method is: settings, the primitives it needs, and how it combines them.

An engine method overrides ``primitives`` and ``combine``; the expensive parts are shared primitives
(``benchmark.methods.primitives``) that the engine (``benchmark.engine``) computes once for every method
that asks for them. An external method (``ExternalMethod``) overrides ``attribute`` and computes its map
itself.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch

from benchmark.methods.primitives import (GradientPass, NoisyGradients, NoisyStats, PathGradients, Perturbation,  # noqa: F401
                                          Primitive, Results, Segment)


class Method:
    """Base of every saliency method and control: engine methods override ``primitives`` and ``combine``,
    external methods (``ExternalMethod``) override ``attribute``."""

    name: ClassVar[str]
    needs_target_layer: ClassVar[bool] = False
    uses_model: ClassVar[bool] = True
    # True when the map carries a sign worth keeping (the no-ABS comparison reads it).
    signed: ClassVar[bool] = True
    # What it explains: "image" (maps (B, C, H, W)), "text" (token maps (B, L)) or "any" (a user's function).
    modality: ClassVar[str] = "image"

    def primitives(self) -> list[Primitive]:
        return []

    def skip(self, arch: Any) -> Optional[str]:
        """Why this method cannot run on ``arch`` (a ``benchmark.models.Architecture``), or None."""
        model_modality = getattr(arch, "modality", "image")
        if self.modality not in ("any", model_modality):
            return (f"is a{'n' if self.modality == 'image' else ''} {self.modality} method and model {arch.name!r} is "
                    f"a{'n' if model_modality == 'image' else ''} {model_modality} classifier")
        if self.needs_target_layer and getattr(arch, "gradcam_layer", None) is None:
            return f"needs a convolutional layer and model {arch.name!r} has none"
        return None

    def check(self) -> None:
        """Raise ValueError (key, value, fix) for settings that cannot work; called when built."""

    def check_input(self, shape: tuple[int, int]) -> None:
        """Raise ValueError (key, value, fix) for settings that cannot work on (H, W) images; called before any
        data is loaded."""

    def combine(self, results: "Results") -> torch.Tensor:
        """The map, (B, C, H, W) or (B, 1, H, W), from the primitives' results."""
        raise NotImplementedError



class ExternalMethod(Method):
    """A method outside the engine's primitives: it computes its map itself from the stage's model."""

    def attribute(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The map for inputs x (B, C, H, W) and target classes (B,)."""
        raise NotImplementedError
