"""Token maps from forward passes only: leave-one-out (Li et al. 2016's erasure: delete a token, or replace it by
[MASK], [UNK] or [PAD]) and LIME over tokens (seeded draws, lime_text's kernel, a scikit-learn ridge fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark import rng
from benchmark.methods.base import ExternalMethod
from benchmark.methods.tokens import REPLACEMENTS, token_rows
from benchmark.models.text import EXTRA, ID_CH, MASK_CH, SCORED_CH, SPECIAL, n_tokens


def _scores(model, batch: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The explained output (``model.explained``) of the target class for a batch in the text layout."""
    out = model(batch)
    explained = getattr(model, "explained", None)
    out = explained(out) if explained is not None else out
    return out.gather(1, target[:, None]).squeeze(1).double()


def _batched_scores(model, copies: torch.Tensor, target: int, chunk: int) -> torch.Tensor:
    t = torch.full((chunk,), int(target), dtype=torch.long, device=copies.device)
    with torch.no_grad():
        return torch.cat([_scores(model, copies[i : i + chunk], t[: len(copies[i : i + chunk])])
                          for i in range(0, len(copies), chunk)])


def perturbed(x: torch.Tensor, keep: torch.Tensor, replace: str) -> torch.Tensor:
    """Copies of one sentence (L + 3, D + 3) with the scored tokens where ``keep`` (n, L) is False removed:
    deleted (the later tokens move up, the mask shrinks) or replaced by the [MASK] / [UNK] / [PAD] embedding."""
    L, D = token_rows(x), x.shape[-1] - EXTRA
    n = len(keep)
    scored = x[:L, SCORED_CH] > 0.5
    drop = (~keep) & scored[None]
    out = x[None].repeat(n, 1, 1)
    if replace != "delete":
        vec = x[L + SPECIAL.index(replace), :D]
        out[:, :L, :D] = torch.where(drop[..., None], vec, out[:, :L, :D])
        return out
    for k in range(n):  # a stable compaction of the kept rows; the freed rows become padding
        kept = torch.nonzero(~drop[k]).flatten()
        rows = torch.zeros_like(out[k, :L])
        rows[: len(kept)] = x[kept]
        real = x[kept, MASK_CH] > 0.5
        rows[: len(kept)][~real] = 0.0
        out[k, :L] = rows
    return out


def _budget_chunk(x: torch.Tensor) -> int:
    return max(8, min(256, 16384 // max(1, n_tokens(x))))


@dataclass(frozen=True)
class TokenLeaveOneOut(ExternalMethod):
    """f(sentence) - f(sentence without token i) for every scored token (Li et al. 2016's erasure)."""

    name = "token_leave_one_out"
    modality = "text"
    replace: str = "mask"  # delete | mask | unk | pad

    def check(self) -> None:
        if self.replace not in REPLACEMENTS:
            raise ValueError(f"method.{self.name}.replace={self.replace!r} must be one of {list(REPLACEMENTS)}")

    def attribute(self, model, x, target):
        L = token_rows(x)
        out = torch.zeros((len(x), L))
        for b in range(len(x)):
            idx = torch.nonzero(x[b, :L, SCORED_CH] > 0.5).flatten()
            if len(idx) == 0:
                continue
            keep = torch.ones((len(idx), L), dtype=torch.bool, device=x.device)
            keep[torch.arange(len(idx)), idx] = False
            copies = torch.cat([x[b : b + 1], perturbed(x[b], keep, self.replace)])
            s = _batched_scores(model, copies, int(target[b]), _budget_chunk(x[b : b + 1]))
            out[b, idx.cpu()] = (s[0] - s[1:]).float().cpu()
        return out


@dataclass(frozen=True)
class TokenLime(ExternalMethod):
    """LIME over tokens (Ribeiro et al. 2016): ``n_samples`` seeded on / off draws of the scored tokens (the same at
    every stage), absent tokens removed as in ``replace``, an exponential kernel on the share of tokens removed
    (LIME's text kernel: cosine distance of the on / off vectors, width ``kernel_width``), a ridge fit."""

    name = "token_lime"
    modality = "text"
    n_samples: int = 100
    replace: str = "mask"
    kernel_width: float = 0.25
    alpha: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if self.replace not in REPLACEMENTS:
            raise ValueError(f"method.{self.name}.replace={self.replace!r} must be one of {list(REPLACEMENTS)}")
        if not isinstance(self.n_samples, int) or self.n_samples < 2:
            raise ValueError(f"method.{self.name}.n_samples={self.n_samples!r} must be a whole number of at least 2, "
                             "e.g. 200")
        if not self.kernel_width > 0:
            raise ValueError(f"method.{self.name}.kernel_width={self.kernel_width!r} must be positive, e.g. 0.25")

    def draws(self, row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One sentence's scored token rows (r,) and its (n_samples, r) on / off draws, keyed by its own tokens: the
        same at every stage and in any batch; the first draw keeps every token."""
        L = token_rows(row[None])
        idx = torch.nonzero(row[:L, SCORED_CH] > 0.5).flatten()
        ids = row[:L, ID_CH].round().long()
        key = int(torch.sum(ids * torch.arange(1, L + 1, device=row.device)) % (2**31))
        g = rng.generator(self.seed, "token_lime", key, len(idx))
        z = torch.rand((self.n_samples, len(idx)), generator=g) < 0.5
        z[0] = True  # the sentence itself
        return idx, z

    def kernel(self, z: np.ndarray) -> np.ndarray:
        """lime_text's weights of (n, r) on / off draws: sqrt(exp(-d^2 / width^2)), d the cosine distance to all on."""
        r = z.shape[1]
        cos = z.sum(1) / (np.sqrt(np.maximum(z.sum(1), 1e-12)) * np.sqrt(r))
        d = 1.0 - cos
        return np.sqrt(np.exp(-(d * d) / (self.kernel_width**2)))

    def attribute(self, model, x, target):
        from sklearn.linear_model import Ridge

        L = token_rows(x)
        out = torch.zeros((len(x), L))
        for b in range(len(x)):
            idx, z = self.draws(x[b])
            if len(idx) == 0:
                continue
            keep = torch.ones((self.n_samples, L), dtype=torch.bool)
            keep[:, idx.cpu()] = z
            s = _batched_scores(model, perturbed(x[b], keep.to(x.device), self.replace), int(target[b]),
                                _budget_chunk(x[b : b + 1]))
            zf = z.double().numpy()
            fit = Ridge(alpha=self.alpha).fit(zf, s.cpu().numpy(), sample_weight=self.kernel(zf))
            out[b, idx.cpu()] = torch.from_numpy(fit.coef_).float()
        return out
