"""Token-level methods for text classifiers: one value per token, taken at the word-embedding output.

Inputs are in the text layout of ``benchmark.models.text`` (rows: tokens then the [PAD] / [MASK] / [UNK]
embeddings; channels: the embedding then mask, scored, id). Maps are (B, L), one value per token row;
special tokens and padding are never scored (``benchmark.modality``).

The gradient family goes through the engine's shared passes like the image methods: the plain gradient
(one pass), SmoothGrad and VarGrad (noisy copies sharing one stream), Integrated Gradients (path steps).
Their noise and paths touch the scored tokens' embeddings only, never the mask, scored and id channels.
The embedding dimension is reduced per token by ``reduction``: ``l2`` (the gradient's L2 norm, Captum's
and AllenNLP's "saliency" convention), ``l1``, ``sum`` (Captum's sum of attributions over the embedding,
IG's completeness per token), ``dot`` (the map times the embedding, summed: gradient x input).

Forward-only methods: leave-one-out (delete a token, or replace it by [MASK], [UNK] or [PAD]), LIME over
tokens (seeded draws, kernel on the share of tokens kept, ridge fit by scikit-learn) and the attention
baselines (the last layer's attention from [CLS], averaged over heads; attention rollout, Abnar & Zuidema
2020, with the residual added as 0.5 I + 0.5 A). Controls: the IDF of each token in the training split
(model-independent: it must stay identical at every stage) and N(0, 1) noise per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmark import rng
from benchmark.methods.base import ExternalMethod, GradientPass, Method
from benchmark.methods.primitives import NoisyGradients, NoisyStats, PathGradients, Segment
from benchmark.models.text import EXTRA, ID_CH, MASK_CH, SCORED_CH, SPECIAL, n_tokens
from benchmark.sampling import path_alphas, standard_noise

REDUCTIONS = ("l2", "l1", "sum", "dot")
BASELINES = ("zero", "pad", "mask")
REPLACEMENTS = ("delete", "mask", "unk", "pad")


def token_rows(x: torch.Tensor) -> int:
    return x.shape[-2] - len(SPECIAL)


def reduce_tokens(m: torch.Tensor, inputs: torch.Tensor, reduction: str) -> torch.Tensor:
    """(B, L + 3, D + 3) per-dimension values -> (B, L) per token."""
    L, D = token_rows(inputs), inputs.shape[-1] - EXTRA
    v = m[:, :L, :D].double()
    if reduction == "l2":
        out = v.pow(2).sum(-1).sqrt()
    elif reduction == "l1":
        out = v.abs().sum(-1)
    elif reduction == "sum":
        out = v.sum(-1)
    elif reduction == "dot":
        out = (v * inputs[:, :L, :D].double()).sum(-1)
    else:
        raise ValueError(f"reduction={reduction!r} must be one of {list(REDUCTIONS)}")
    return out.float()


def check_reduction(name: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"method.{name}.reduction={reduction!r} must be one of {list(REDUCTIONS)} (l2: the gradient's "
                         "norm per token; dot: gradient x embedding, summed)")


# -- primitives --------------------------------------------------------------------------------------------------------
def embedding_spread(x: torch.Tensor) -> float:
    """The standard deviation of the scored tokens' embedding values (SmoothGrad's noise scale for text)."""
    L, D = token_rows(x), x.shape[-1] - EXTRA
    e = x[:L, :D].detach()[x[:L, SCORED_CH] > 0.5]
    return float(e.std()) if e.numel() > 1 else 0.0


@dataclass(frozen=True)
class TokenNoisyGradients(NoisyGradients):
    """Gradients at noisy copies of a sentence: N(0, (noise_level x sd)^2) added to the scored tokens' embeddings,
    sd the spread of those values (``embedding_spread``); the same draw j at every stage."""

    def share(self):
        return ("token_noisy", self.noise_level)

    def segments(self, group, row, x, image_id, seed, capture):
        n = self.n_items(group)
        L, D = token_rows(x), x.shape[-1] - EXTRA
        sd = self.noise_level * embedding_spread(x)
        scored = (x[:L, SCORED_CH] > 0.5).to(x.dtype)[None, :, None]

        real = max(1, int((x[:L, MASK_CH] > 0.5).sum()))  # draws of the sentence's own length: batch-independent

        def make():
            z = torch.stack([standard_noise(seed, image_id, j, (real, D)) for j in range(n)]).to(x.device, x.dtype)
            noisy = x[None].repeat(n, 1, 1)
            noisy[:, :real, :D] += sd * z * scored[:, :real]
            return noisy, None

        return [Segment(row, n, make, [((p, row), p.n_samples, True) for p in group])]


@dataclass(frozen=True)
class TokenPathGradients(PathGradients):
    """Integrated Gradients along the straight path from a baseline sentence to the sentence: the scored tokens'
    embeddings start at zero, or at the [PAD] or [MASK] embedding; [CLS], [SEP] and padding stay as they are."""

    token_baseline: str = "zero"

    def segments(self, group, row, x, image_id, seed, capture):
        alphas, weights = path_alphas(self.n_steps, self.rule)
        alphas, weights = alphas.to(x.device, x.dtype), weights.to(x.device, x.dtype)
        L, D = token_rows(x), x.shape[-1] - EXTRA
        scored = x[:L, SCORED_CH] > 0.5
        base = x.clone()
        if self.token_baseline == "zero":
            base[:L, :D][scored] = 0.0
        else:
            vec = x[L + SPECIAL.index(self.token_baseline), :D]
            base[:L, :D][scored] = vec
        shape = (-1, 1, 1)

        def make():
            diff = x - base
            return base[None] + alphas.view(shape) * diff[None], weights.view(shape) * diff[None]

        return [Segment(row, self.n_steps, make, [((self, row), self.n_steps, False)])]


# -- the gradient family -------------------------------------------------------------------------------------------
class _TokenMethod(Method):
    modality = "text"
    reduction: str = "l2"

    @property
    def signed(self) -> bool:  # type: ignore[override]
        return self.reduction in ("sum", "dot")

    def check(self) -> None:
        check_reduction(self.name, self.reduction)


@dataclass(frozen=True)
class TokenGradient(_TokenMethod):
    """The gradient at each token's embedding, reduced per token (default: its L2 norm)."""

    name = "gradient"
    reduction: str = "l2"

    def primitives(self):
        return [GradientPass()]

    def combine(self, results):
        return reduce_tokens(results[GradientPass()], results.inputs, self.reduction)


@dataclass(frozen=True)
class TokenGradientXInput(_TokenMethod):
    """Gradient times embedding, summed over the embedding (reduction sum: the dot product g . e)."""

    name = "gradient_x_input"
    reduction: str = "sum"

    def primitives(self):
        return [GradientPass()]

    def combine(self, results):
        return reduce_tokens(results[GradientPass()] * results.inputs, results.inputs, self.reduction)


@dataclass(frozen=True)
class TokenIntegratedGradients(_TokenMethod):
    """IG at the embeddings from a zero, [PAD] or [MASK] baseline (``baseline``; 0.0 means zero), summed per token."""

    name = "integrated_gradients"
    n_steps: int = 50
    rule: str = "linspace"
    baseline: Any = "zero"
    reduction: str = "sum"

    @property
    def token_baseline(self) -> str:
        return "zero" if self.baseline in (0, 0.0, "zero") and not isinstance(self.baseline, bool) else str(self.baseline)

    def check(self) -> None:
        super().check()
        if self.token_baseline not in BASELINES:
            raise ValueError(f"method.{self.name}.baseline={self.baseline!r}: a text model's IG baseline is one of "
                             f"{list(BASELINES)} (the zero embedding, or the [PAD] / [MASK] token's)")

    def primitives(self):
        return [TokenPathGradients(self.n_steps, self.rule, token_baseline=self.token_baseline)]

    def combine(self, results):
        return reduce_tokens(results[self.primitives()[0]], results.inputs, self.reduction)


@dataclass(frozen=True)
class TokenSmoothGrad(_TokenMethod):
    name = "smoothgrad"
    n_samples: int = 50
    noise_level: float = 0.15
    reduction: str = "l2"

    def primitives(self):
        return [TokenNoisyGradients(self.noise_level, self.n_samples)]

    def combine(self, results):
        stats: NoisyStats = results[self.primitives()[0]]
        return reduce_tokens(stats.mean, results.inputs, self.reduction)


@dataclass(frozen=True)
class TokenVarGrad(_TokenMethod):
    name = "vargrad"
    n_samples: int = 25
    noise_level: float = 0.15
    reduction: str = "sum"

    @property
    def signed(self) -> bool:  # type: ignore[override]
        return False

    def primitives(self):
        return [TokenNoisyGradients(self.noise_level, self.n_samples)]

    def combine(self, results):
        return reduce_tokens(results[self.primitives()[0]].var, results.inputs, self.reduction)


# -- controls ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenNoise(Method):
    """N(0, 1) per token, a fresh draw per sentence and stage: its similarity should be near 0."""

    name = "noise"
    modality = "text"
    uses_model = False

    def combine(self, results):
        L = token_rows(results.inputs)
        return torch.stack([torch.randn((L,), generator=rng.generator(results.seed, "noise_control", results.stage_key,
                                                                       int(i))) for i in results.image_ids])


@dataclass(frozen=True, eq=False)
class TokenIDF(Method):
    """Each token's inverse document frequency in the training split: model-independent, so it must score 1 at every
    stage (the text analogue of the edge detector)."""

    name = "idf"
    modality = "text"
    uses_model = False
    signed = False

    def bind_data(self, data) -> None:
        """The IDF table of ``data`` (a text data set), kept beside the method's settings, not among them."""
        if data.idf is None:
            raise ValueError("method idf needs a text data set with a training split (data=sentiment or text_file)")
        object.__setattr__(self, "_table", data.idf)

    def combine(self, results):
        table = getattr(self, "_table", None)
        if table is None:
            raise RuntimeError("method idf was not bound to a data set (TokenIDF.bind_data)")
        L = token_rows(results.inputs)
        ids = results.inputs[:, :L, ID_CH].round().long().cpu()
        return table[ids.clamp(0, len(table) - 1)].float()


# -- forward-only methods --------------------------------------------------------------------------------------------
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
    n_samples: int = 200
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


def _attentions(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's attention (B, heads, n, n) for a batch in the text layout (eager attention for the call)."""
    hf = model.hf
    n = n_tokens(x)
    mask = (x[:, :n, MASK_CH] > 0.5).long()
    previous = getattr(hf.config, "_attn_implementation", None)
    setter = getattr(hf, "set_attn_implementation", None)
    try:
        if setter is not None:
            setter("eager")
        out = hf(inputs_embeds=x[:, :n, :-EXTRA], attention_mask=mask, output_attentions=True)
    finally:
        if setter is not None and previous is not None:
            setter(previous)
    if not out.attentions:
        raise ValueError(f"model {type(hf).__name__} returns no attentions; remove attention / attention_rollout")
    return list(out.attentions)


@dataclass(frozen=True)
class Attention(ExternalMethod):
    """The last layer's attention from the first token ([CLS]) to every token, averaged over heads (a baseline the
    literature argues about: Jain & Wallace 2019, Wiegreffe & Pinter 2019)."""

    name = "attention"
    modality = "text"
    signed = False

    def attribute(self, model, x, target):
        L = token_rows(x)
        out = torch.zeros((len(x), L))
        with torch.no_grad():
            att = _attentions(model, x)[-1].mean(1)  # (B, n, n)
        out[:, : att.shape[-1]] = att[:, 0].float().cpu()
        return out


@dataclass(frozen=True)
class AttentionRollout(ExternalMethod):
    """Attention rollout (Abnar & Zuidema 2020): the product over layers of 0.5 I + 0.5 A (heads averaged, rows
    renormalized), read from the first token ([CLS])."""

    name = "attention_rollout"
    modality = "text"
    signed = False

    def attribute(self, model, x, target):
        L = token_rows(x)
        out = torch.zeros((len(x), L))
        with torch.no_grad():
            atts = _attentions(model, x)
            n = atts[0].shape[-1]
            eye = torch.eye(n, dtype=torch.float64, device=x.device)
            roll = eye.expand(len(x), n, n).clone()
            for a in atts:
                a = 0.5 * a.double().mean(1) + 0.5 * eye
                a = a / a.sum(-1, keepdim=True)
                roll = a @ roll
        out[:, :n] = roll[:, 0].float().cpu()
        return out


TEXT_METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (TokenGradient, TokenGradientXInput, TokenIntegratedGradients, TokenSmoothGrad, TokenVarGrad,
                TokenLeaveOneOut, TokenLime, Attention, AttentionRollout, TokenIDF, TokenNoise)
}
