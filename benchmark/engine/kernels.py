"""Hand-written kernels the engine uses where they are measurably faster than PyTorch's (docs/performance.md)."""

from __future__ import annotations

from typing import Sequence

import torch


def conv2d_input_grad(grad: torch.Tensor, weight: torch.Tensor, input_shape: Sequence[int],
                      stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                      memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Gradient of a 2-D convolution (groups 1, zero padding) with respect to its input.

    One matrix product gives every kernel tap's contribution at every output position (the weight's
    transpose times the output gradient); each tap's plane is then added into the input positions it
    read. Returns (B, C, H, W), dense, in ``memory_format``.
    """
    n, c_out, h_out, w_out = grad.shape
    _, c_in, kh, kw = weight.shape
    h, w = input_shape[-2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    cols = weight.reshape(c_out, -1).t() @ grad.permute(1, 0, 2, 3).reshape(c_out, -1)
    cols = cols.view(c_in, kh, kw, n, h_out, w_out)
    out = grad.new_zeros(c_in, n, h + 2 * ph, w + 2 * pw)
    for i in range(kh):
        rows = slice(i * dh, i * dh + sh * (h_out - 1) + 1, sh)
        for j in range(kw):
            out[:, :, rows, j * dw : j * dw + sw * (w_out - 1) + 1 : sw] += cols[:, i, j]
    return out[:, :, ph : ph + h, pw : pw + w].permute(1, 0, 2, 3).contiguous(memory_format=memory_format)
