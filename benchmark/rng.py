"""Seeds derived from (seed, purpose): every random draw has its own generator.

No code in the suite reseeds global state; a stage, an image or a control asks for
``generator(seed, "stage", unit_name)`` and gets a stream that does not depend on what
ran before it (STYLE 7).
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *purpose: object) -> int:
    """A 63-bit seed from ``seed`` and a purpose path, stable across runs and platforms."""
    text = "/".join([str(int(seed)), *(str(p) for p in purpose)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *purpose: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded from ``derive_seed(seed, *purpose)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *purpose))
    return g
