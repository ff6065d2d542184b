"""Attention as a token map, the baseline the literature argues about: the last layer's attention from [CLS] averaged
over heads, and attention rollout (Abnar & Zuidema 2020: the product over layers of 0.5 I + 0.5 A).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark.methods.base import ExternalMethod
from benchmark.methods.tokens import token_rows
from benchmark.models.text import EXTRA, MASK_CH, n_tokens


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
