"""What the perturbation methods delete and with what: fills, sliding windows and regions (grids, SLIC superpixels).

Fills: ``zero``, ``mean`` (the image's per-channel mean) or ``blur`` (the image Gaussian-blurred, scipy, sigma
``blur_sigma`` pixels; by default 10 px at 224, scaled to the image and at least 1). Masks are (n, H, W) booleans,
True where a pixel takes the fill's value in every channel.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

FILLS = ("zero", "mean", "blur")
OUTPUTS = ("logit", "probability")
REGIONS = ("slic", "grid")


def auto_blur_sigma(height: int) -> float:
    return max(1.0, 10.0 * height / 224)


def blurred(x: torch.Tensor, sigma: Optional[float] = None) -> torch.Tensor:
    """Each channel of ``x`` (..., H, W) Gaussian-blurred with sd ``sigma`` pixels (scipy, reflected at the border);
    ``sigma`` None or 0: ``auto_blur_sigma`` of the height."""
    from scipy.ndimage import gaussian_filter

    sigma = sigma or auto_blur_sigma(x.shape[-2])
    out = gaussian_filter(x.detach().cpu().double().numpy(), sigma=(0,) * (x.dim() - 2) + (sigma, sigma), mode="reflect")
    return torch.from_numpy(out).to(dtype=x.dtype, device=x.device)


def fill_image(x: torch.Tensor, fill: str, blur_sigma: float) -> torch.Tensor:
    """The values deleted pixels of ``x`` (C, H, W) take."""
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "mean":
        return x.mean(dim=(1, 2), keepdim=True).expand_as(x).contiguous()
    return blurred(x, blur_sigma)


def default_window(size: int) -> tuple[int, int]:
    """(window, stride) sized to one side: about size / 7 (at least 2) and half of it, the window grown until the
    last one ends at the edge, uncropped (4 / 2 at 28, 32 / 16 at 224)."""
    if size < 2:
        return 1, 1
    window = max(2, round(size / 7))
    stride = max(1, window // 2)
    while (size - window) % stride:
        window += 1
    return window, stride


def default_segments(height: int, width: int) -> int:
    """SLIC's requested superpixel count: one per 4 x 4 pixels (49 at 28 x 28), at most 200."""
    return int(min(200, max(4, (height // 4) * (width // 4))))


def window_masks(height: int, width: int, window: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """(n, H, W) masks of the windows at 0, stride, 2 x stride, ... up to the first that reaches the far edge, which
    is cropped there (Captum ``Occlusion``'s windows: 1 + ceil((side - window) / stride) per side)."""
    rows = range(0, stride[0] * -(-(height - window[0]) // stride[0]) + 1, stride[0])
    cols = range(0, stride[1] * -(-(width - window[1]) // stride[1]) + 1, stride[1])
    masks = torch.zeros((len(rows) * len(cols), height, width), dtype=torch.bool)
    for i, (r, c) in enumerate((r, c) for r in rows for c in cols):
        masks[i, r : r + window[0], c : c + window[1]] = True
    return masks


def grid_labels(height: int, width: int, cell: int) -> np.ndarray:
    """(H, W) region labels of square cells (the last row and column of cells may be partial)."""
    cols = -(-width // cell)
    r, c = np.meshgrid(np.arange(height) // cell, np.arange(width) // cell, indexing="ij")
    return (r * cols + c).astype(np.int64)


def slic_labels(x: torch.Tensor, n_segments: int, compactness: float) -> np.ndarray:
    """(H, W) SLIC superpixel labels 0..R-1 of ``x`` (C, H, W), segmented on the image scaled to [0, 1]."""
    from skimage.segmentation import slic

    img = x.detach().cpu().double().numpy()
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    if img.shape[0] == 1:
        labels = slic(img[0], n_segments=n_segments, compactness=compactness, channel_axis=None, start_label=0)
    else:
        labels = slic(np.moveaxis(img, 0, -1), n_segments=n_segments, compactness=compactness, channel_axis=-1,
                      start_label=0, convert2lab=img.shape[0] == 3)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)


def region_masks(labels: np.ndarray) -> torch.Tensor:
    """(R, H, W) one mask per region label."""
    t = torch.from_numpy(labels)
    return t[None] == torch.arange(int(t.max()) + 1)[:, None, None]


def _spread(values: torch.Tensor, masks: torch.Tensor, mean: bool) -> torch.Tensor:
    """(1, H, W): each pixel the sum (or mean) of the values of the masks covering it."""
    m = masks.to(values.dtype)
    total = torch.einsum("n,nhw->hw", values, m)
    if mean:
        count = m.sum(0)
        total = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
    return total[None]
