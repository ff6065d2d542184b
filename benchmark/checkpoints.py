"""Checkpoint files: a state dict saved with its SHA-256 and loaded only if it matches and holds finite weights; a
user's weights file (``model.weights``) checked against the model."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from benchmark.store import atomic_write

log = logging.getLogger(__name__)


def _load_checked(path: Path) -> Optional[dict[str, torch.Tensor]]:
    digest_file = path.with_suffix(".sha256")
    if not path.exists() or not digest_file.exists():
        return None
    data = path.read_bytes()  # read once: hashed, then loaded
    if hashlib.sha256(data).hexdigest() != digest_file.read_text().strip():
        log.warning("checkpoint %s does not match its hash (corrupted or truncated); retraining", path)
        return None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # a file that passes the hash but does not load is still not valid
        log.warning("checkpoint %s could not be read (%s); retraining", path, err)
        return None
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        log.warning("checkpoint %s holds non-finite weights (%s); retraining", path, ", ".join(bad[:3]))
        return None
    return state


def check_weights_file(weights: str) -> Path:
    """``model.weights`` as a path to an existing file; ValueError with the fix otherwise."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(f"model.weights={weights!r} is not a file; give the path of a saved state dict "
                         "or leave it null to train")
    return path


def load_weights(weights: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in ``weights``, checked against ``model``; ValueError naming model.weights otherwise."""
    path = check_weights_file(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, corrupted, or not a torch file at all
        raise ValueError(f"model.weights={weights!r} cannot be read as a state dict ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}); give an intact file saved with "
                         "torch.save(model.state_dict(), path), or leave it null to train") from None
    if not isinstance(state, dict):
        raise ValueError(f"model.weights={weights!r} holds a {type(state).__name__}, not a state dict; save it "
                         "with torch.save(model.state_dict(), path)")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if got != expected:
        missing = sorted(set(expected) - set(got))[:3]
        unexpected = sorted(set(got) - set(expected))[:3]
        shapes = [k for k in expected if k in got and got[k] != expected[k]][:3]
        raise ValueError(f"model.weights={weights!r} does not fit this model (missing {missing}, unexpected "
                         f"{unexpected}, other shapes {shapes}); give weights saved from the same model= and data=")
    return state


def _save_checked(path: Path, state: dict[str, torch.Tensor]) -> None:
    """The checkpoint, then its SHA-256, each written atomically (a crash between them means retraining).

    Serialized in memory first: ``torch.save`` to a path names the archive after the (temporary)
    file, so equal weights would give different bytes.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write(path, lambda p: p.write_bytes(data))
    atomic_write(path.with_suffix(".sha256"), lambda p: p.write_text(hashlib.sha256(data).hexdigest() + "\n"))
