"""Device choice, thread settings, determinism settings and the versions a run records."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch

from benchmark.config import Device

_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-image", "scikit-learn", "pandas", "pyarrow",
             "matplotlib", "seaborn", "hydra-core", "omegaconf", "hydra-joblib-launcher", "hydra-submitit-launcher",
             "submitit", "joblib", "filelock", "captum")


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """Channels-last for a 4-D tensor laid out so and not also plain-contiguous (one channel, 1x1), else plain."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


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


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: what taskset or Slurm gave it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(concurrent_jobs: int, cores: Optional[int] = None) -> int:
    """Torch threads for each of ``concurrent_jobs`` jobs on one machine: jobs x threads <= cores."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, concurrent_jobs))


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(trim_mb: int = 512, mmap_mb: int = 32) -> dict[str, Any]:
    """glibc: keep memory freed by one chunk's passes for the next instead of handing it back to the OS.

    With glibc's defaults, a chunk that frees more than about twice its largest buffer at the top of
    the heap gets the heap trimmed, and the next chunk faults the same pages in again (docs/performance.md).
    Only where allocations go, never a value. Elsewhere than Linux with glibc, a no-op. Returns what was set, for meta.json.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return {"malloc": "default"}
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, mmap_mb * 2**20) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, trim_mb * 2**20) == 1)
    except (OSError, AttributeError):
        ok = False
    return {"malloc": {"mmap_threshold_mb": mmap_mb, "trim_threshold_mb": trim_mb} if ok else "default"}


def configure_determinism(device: torch.device) -> dict[str, Any]:
    """Ask torch for deterministic kernels and return every setting the scores depend on.

    On CPU the suite's kernels are deterministic for a fixed thread count; ``warn_only`` keeps an
    operation without a deterministic CUDA kernel from failing the run (torch warns instead).
    cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts for deterministic matmuls;
    its value is recorded.
    """
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "mkldnn_enabled": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "cpu_cores_available": available_cores(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    return out
