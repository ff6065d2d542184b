"""Device choice, thread settings and the versions a run records."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any, Optional

import torch

from benchmark.config import Device

_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-image", "scikit-learn", "pandas", "pyarrow",
             "matplotlib", "seaborn", "hydra-core", "omegaconf", "captum")


def select_device(device: Device | str) -> torch.device:
    """``auto``: CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    device = Device(device)
    if device == Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == Device.cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available; use device=auto or device=cpu")
    return torch.device(device.value)


def set_threads(num_threads: Optional[int]) -> int:
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"num_threads={num_threads} must be at least 1 (or null for torch's default)")
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    return out
