"""Token-level methods for text classifiers: one value per token, taken at the word-embedding output.

The registry of the text methods; each family has its module: ``tokens`` (the layout, the reductions, the
primitives), ``token_gradients``, ``token_perturbation``, ``attention``, ``token_controls``. Maps are (B, L), one
value per token row; special tokens and padding are never scored (``benchmark.token_metrics``).

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

from benchmark.methods.attention import Attention, AttentionRollout
from benchmark.methods.base import Method
from benchmark.methods.token_controls import TokenIDF, TokenNoise
from benchmark.methods.token_gradients import (TokenGradient, TokenGradientXInput, TokenIntegratedGradients,
                                               TokenSmoothGrad, TokenVarGrad)
from benchmark.methods.token_perturbation import TokenLeaveOneOut, TokenLime, perturbed
from benchmark.methods.tokens import (BASELINES, REDUCTIONS, REPLACEMENTS, TokenNoisyGradients, TokenPathGradients,
                                      embedding_spread, reduce_tokens, token_rows)

TEXT_METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (TokenGradient, TokenGradientXInput, TokenIntegratedGradients, TokenSmoothGrad, TokenVarGrad,
                TokenLeaveOneOut, TokenLime, Attention, AttentionRollout, TokenIDF, TokenNoise)
}

__all__ = ["BASELINES", "REDUCTIONS", "REPLACEMENTS", "TEXT_METHODS", "TokenNoisyGradients", "TokenPathGradients",
           "embedding_spread", "perturbed", "reduce_tokens", "token_rows", *(c.__name__ for c in TEXT_METHODS.values())]
