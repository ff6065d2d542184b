"""What the passes accumulate: each stage's running gradient sums (``_StageSums``), and the bytes one item costs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn


def estimate_item_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes one item costs in a forward+backward pass, from a probe of activation sizes."""
    total = [example[:1].numel() * 4]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    # saved activations, their gradients, and temporaries of the backward pass
    return 3 * total[0]


@dataclass
class _StageSums:
    """Running sums of one stage's gradients, (images, ...) float64 per primitive, and the GradCAM layer's tensors.

    Allocated once per stage: small tensors created chunk after chunk would scatter through the
    heap between the passes' large transient ones and make it grow.
    """

    n_images: int
    acc: dict[Any, torch.Tensor] = field(default_factory=dict)
    acc_sq: dict[Any, torch.Tensor] = field(default_factory=dict)
    layer_activation: Optional[torch.Tensor] = None
    layer_gradient: Optional[torch.Tensor] = None
    seconds: float = 0.0
    forward: dict[Any, torch.Tensor] = field(default_factory=dict)  # forward-only requests' maps

    def _slot(self, table: dict[Any, torch.Tensor], p: Any, like: torch.Tensor) -> torch.Tensor:
        if p not in table:
            table[p] = torch.zeros((self.n_images,) + tuple(like.shape), dtype=like.dtype, device=like.device)
        return table[p]

    def add(self, pieces, grads, layer_out) -> None:
        grad = grads[0].detach()
        offset = 0
        for seg, start, stop, _inp, mult in pieces:
            n = stop - start
            g = grad[offset : offset + n]
            if mult is not None:
                g = g * mult
            for (p, row), limit, square in seg.targets:
                hi = min(stop, limit) - start
                if hi <= 0:
                    continue
                part = g[:hi].double()
                total = part.sum(0)
                self._slot(self.acc, p, total)[row] += total
                if square:
                    sq = (part * part).sum(0)
                    self._slot(self.acc_sq, p, sq)[row] += sq
            if seg.capture:  # one item: the image's gradient pass
                if self.layer_activation is None:
                    shape = (self.n_images,) + tuple(layer_out.shape[1:])
                    self.layer_activation = torch.zeros(shape, dtype=layer_out.dtype, device=layer_out.device)
                    self.layer_gradient = torch.zeros(shape, dtype=grads[1].dtype, device=grads[1].device)
                self.layer_activation[seg.row] = layer_out[offset].detach()
                self.layer_gradient[seg.row] = grads[1][offset].detach()
            offset += n
