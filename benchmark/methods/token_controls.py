"""Model-independent token maps: each token's IDF in the training split (must score 1 at every stage) and N(0, 1)
noise per token (must fall to the band).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmark import rng
from benchmark.methods.base import Method
from benchmark.methods.tokens import token_rows
from benchmark.models.text import ID_CH


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
