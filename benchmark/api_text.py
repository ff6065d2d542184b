"""``benchmark.sanity_check`` for text classifiers: a Hugging Face sequence classifier and a list of sentences.

    result = benchmark.sanity_check(hf_model, ["a fine film", "dull"], test="cascading", tokenizer=tokenizer,
                                    methods=["gradient", "integrated_gradients", "token_leave_one_out"])

The model is wrapped as ``benchmark.models.text.TokenClassifier`` (explained at its word embeddings), its units are
the embeddings, each transformer layer and the head; the sentences are tokenized by ``tokenizer`` (default: the
model's own, ``AutoTokenizer.from_pretrained(model.config._name_or_path)``) and become the held-out split. The IDF
control reads the given sentences' IDF (there is no training split).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from benchmark.config import ExperimentConfig, Reinit
from benchmark.data import Dataset

TEXT_DEFAULT_METHODS = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "vargrad",
                        "token_leave_one_out", "token_lime", "attention", "attention_rollout", "idf", "noise")


def is_text_input(model: nn.Module, data: Any) -> bool:
    """A list of sentences (or a (sentences, labels) pair) for a Hugging Face classifier or a TokenClassifier."""
    from benchmark.models.text import TokenClassifier

    texts = data[0] if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (list, tuple)) else data
    is_texts = isinstance(texts, (list, tuple)) and len(texts) > 0 and all(isinstance(t, str) for t in texts)
    return is_texts or isinstance(model, TokenClassifier)


def _sentences(data: Any) -> tuple[list[str], torch.Tensor]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (list, tuple)):
        texts, labels = list(data[0]), torch.as_tensor(data[1]).long().flatten()
    else:
        texts, labels = list(data), None
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("data: give a text model a non-empty list of sentences (str), or a (sentences, labels) pair")
    if labels is None:
        labels = torch.full((len(texts),), -1, dtype=torch.int64)
    if len(labels) != len(texts):
        raise ValueError(f"data: {len(texts)} sentences but {len(labels)} labels; give one label per sentence")
    return texts, labels


def text_setup(cfg: ExperimentConfig, model: nn.Module, data: Any, tokenizer: Any, model_name: Optional[str],
               settings: dict[str, Any]):
    """(wrapped model, architecture, data set) for a text model given in Python; the text defaults set where the
    caller gave none (token metrics, the model's own initializer)."""
    from benchmark.data.text import model_max_length, smooth_idf, tokenize
    from benchmark.models.text import TextModelSpec, TokenClassifier, architecture_of, load_tokenizer, special_ids
    from benchmark.token_metrics import TEXT_DEFAULT_METRICS

    texts, labels = _sentences(data)
    hf = model.hf if isinstance(model, TokenClassifier) else model
    config = getattr(hf, "config", None)
    if config is None or not hasattr(hf, "base_model_prefix"):
        raise ValueError(f"model is a {type(model).__name__}; a text model is a Hugging Face sequence classifier "
                         "(transformers.AutoModelForSequenceClassification) or a benchmark.models.text.TokenClassifier")
    if tokenizer is None:
        name = getattr(config, "_name_or_path", None)
        if not name:
            raise ValueError("tokenizer: the model does not say where it was loaded from; pass tokenizer=<its tokenizer>")
        tokenizer = load_tokenizer(name)
    output = cfg.model.output or "loss"
    wrapped = model if isinstance(model, TokenClassifier) else TokenClassifier(hf, special_ids(tokenizer), output)
    wrapped.output = output
    limit = model_max_length(tokenizer, config)
    max_length = cfg.model.max_length or limit
    tokens, truncated = tokenize(texts, tokenizer, max_length)
    arch = architecture_of(wrapped, model_name or type(hf).__name__.lower(),
                           TextModelSpec(str(config._name_or_path), max_length), lambda c, k: wrapped, source="given",
                           fresh_modules=None, derived={"num_classes": int(config.num_labels)})
    words = [tokenizer.convert_ids_to_tokens(r[: int(r[:, 1].sum()), 0].tolist()) for r in tokens]
    dataset = Dataset(name=cfg.data.name, train_images=tokens[:0], train_labels=labels[:0], eval_images=tokens,
                      eval_labels=labels, num_classes=int(config.num_labels), modality="text", eval_tokens=words,
                      idf=smooth_idf(tokens, max(len(tokenizer), int(tokens[..., 0].max()) + 1)),
                      provenance={"source": "given to benchmark.sanity_check", "sentences": len(texts),
                                  "truncated": int(truncated), "max_length": max_length})
    if "similarity" not in settings and "similarity.metrics" not in settings:
        cfg.similarity.metrics = list(TEXT_DEFAULT_METRICS)
    if "verdict" not in settings and "verdict.band" not in settings:
        cfg.verdict.band = "mean"
    if cfg.randomization.reinit is None:
        cfg.randomization.reinit = Reinit.layer_default
    return wrapped, arch, dataset
