"""Text data sets: labelled sentences tokenized by the model's own tokenizer into token rows (N, L, 3).

Each row of a sentence holds (token id, attention mask, scored); scored marks the real tokens that are not
the tokenizer's special tokens ([CLS], [SEP]): only those are ever scored. Sentences are padded to the
longest one (the engine cuts every chunk to its own longest) and truncated at ``model.max_length`` (the
model's maximum when unset), with the count of truncated sentences logged and recorded.

- ``data=sentiment``: the UCI "Sentiment Labelled Sentences" (Kotzias et al., KDD 2015): 1,000 sentences
  from each of amazon.com, imdb.com and yelp.com, 500 positive and 500 negative, ``sentence \\t label`` per
  line; ``data.sources`` picks some of the three files.
- ``data=text_file``: a user's file, one sentence and label per line (CSV, TSV or text); ``data.text_column``
  and ``data.label_column`` name the columns (names with a header, 0-based positions without).

A stratified held-out split (``data.holdout_fraction``, ``data.split_seed``), as for the digits. The IDF of
every token in the training split (scikit-learn's smooth IDF) is the model-independent control's score.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from benchmark.config import DataConfig
from benchmark.data import Dataset, stratified_split

log = logging.getLogger(__name__)

SENTIMENT_SOURCES = ("amazon", "imdb", "yelp")
SENTIMENT_FILES = {"amazon": "amazon_cells_labelled.txt", "imdb": "imdb_labelled.txt", "yelp": "yelp_labelled.txt"}
SENTIMENT_ENV = "SENTIMENT_DATA"


def sentiment_root(root: Optional[str]) -> Path:
    """``data.root``, else $SENTIMENT_DATA, else ../shared/data/sentiment_labelled_sentences beside the working
    folder or the repository."""
    if root:
        candidates = [Path(root).expanduser()]
    else:
        candidates = [Path(os.environ[SENTIMENT_ENV])] if os.environ.get(SENTIMENT_ENV) else []
        here = Path(__file__).resolve().parents[2]
        candidates += [Path.cwd().parent / "shared/data/sentiment_labelled_sentences",
                       here.parent / "shared/data/sentiment_labelled_sentences"]
    for c in candidates:
        if all((c / f).is_file() for f in SENTIMENT_FILES.values()):
            return c
    raise ValueError(f"data.root={root!r}: the sentiment files {sorted(SENTIMENT_FILES.values())} were not found in "
                     f"{[str(c) for c in candidates]}; set data.root to the sentiment_labelled_sentences folder "
                     f"(or the {SENTIMENT_ENV} environment variable)")


def check_sources(sources: Optional[list]) -> list[str]:
    chosen = list(sources) if sources else list(SENTIMENT_SOURCES)
    bad = [s for s in chosen if s not in SENTIMENT_SOURCES]
    if bad or not chosen:
        raise ValueError(f"data.sources={sources!r}: use some of {list(SENTIMENT_SOURCES)} (null: all three)")
    return chosen


def read_sentiment(root: Path, sources: list[str]) -> tuple[list[str], list[int], list[str]]:
    texts, labels, origin = [], [], []
    for src in sources:
        path = root / SENTIMENT_FILES[src]
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            sentence, sep, label = line.rpartition("\t")
            if not sep or label.strip() not in ("0", "1"):
                raise ValueError(f"data=sentiment: {path}:{i} is not 'sentence<TAB>0|1'; the file is not the UCI "
                                 "sentiment data")
            texts.append(sentence.strip())
            labels.append(int(label))
            origin.append(src)
    return texts, labels, origin


def read_text_file(cfg: DataConfig) -> tuple[list[str], list[int], dict[str, Any]]:
    """Sentences and integer labels of a user's CSV / TSV / text file (labels mapped to 0..K-1 in sorted order)."""
    import pandas as pd

    if not cfg.root:
        raise ValueError("data=text_file needs data.root=<file>: one sentence and one label per line (CSV, TSV or "
                         "text)")
    path = Path(cfg.root).expanduser()
    if not path.is_file():
        raise ValueError(f"data.root={cfg.root!r} is not a file; give a CSV / TSV / text file of sentences and labels")
    sep = cfg.delimiter or ("," if path.suffix.lower() == ".csv" else "\t")
    named = isinstance(cfg.text_column, str) or isinstance(cfg.label_column, str)
    frame = pd.read_csv(path, sep=sep, header=0 if named else None, dtype=str, keep_default_na=False,
                        quoting=0, engine="python")
    text_col = cfg.text_column if cfg.text_column is not None else 0
    label_col = cfg.label_column if cfg.label_column is not None else 1
    for key, col in (("data.text_column", text_col), ("data.label_column", label_col)):
        ok = col in frame.columns if isinstance(col, str) else isinstance(col, int) and 0 <= col < frame.shape[1]
        if not ok:
            have = list(frame.columns) if named else list(range(frame.shape[1]))
            raise ValueError(f"{key}={col!r} is not a column of {path} (delimiter {sep!r}); its columns are {have}")
    get = lambda col: frame[col] if isinstance(col, str) else frame.iloc[:, col]
    texts = [str(t).strip() for t in get(text_col)]
    raw = [str(v).strip() for v in get(label_col)]
    names = sorted(set(raw), key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
    if len(names) < 2:
        raise ValueError(f"data.label_column={label_col!r} of {path} holds {len(names)} distinct label(s); a classifier "
                         "needs at least 2")
    index = {n: i for i, n in enumerate(names)}
    return texts, [index[v] for v in raw], {"file": str(path), "label_names": names, "delimiter": sep}


def tokenize(texts: list[str], tokenizer, max_length: int) -> tuple[torch.Tensor, int]:
    """Token rows (N, L, 3) int64 and how many sentences were truncated at ``max_length``."""
    full = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    truncated = sum(len(ids) > max_length for ids in full)
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding="longest",
                    return_special_tokens_mask=True, return_tensors="pt")
    ids, attn = enc["input_ids"].long(), enc["attention_mask"].long()
    scored = attn * (1 - enc["special_tokens_mask"].long())
    return torch.stack([ids, attn, scored], dim=-1), truncated


def smooth_idf(train_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """scikit-learn's smooth IDF per token id, ln((1 + n) / (1 + df)) + 1, over the training split's sentences."""
    n = len(train_ids)
    df = torch.zeros(vocab_size, dtype=torch.float64)
    for row in train_ids:
        ids, scored = row[:, 0], row[:, 2]
        df[torch.unique(ids[scored > 0])] += 1
    return (torch.log((1.0 + n) / (1.0 + df)) + 1.0).float()


def text_dataset(name: str, texts: list[str], labels: list[int], cfg: DataConfig, tokenizer, max_length: int,
                 provenance: dict[str, Any]) -> Dataset:
    empty = [i + 1 for i, t in enumerate(texts) if not t]
    if empty:
        raise ValueError(f"data={name}: {len(empty)} empty sentence(s), at row(s) {empty[:10]}; remove them (an empty "
                         "sentence has no token to explain)")
    y = np.asarray(labels)
    tokens, truncated = tokenize(texts, tokenizer, max_length)
    if truncated:
        log.warning("data=%s: %d of %d sentences are longer than model.max_length=%d tokens and were truncated",
                    name, truncated, len(texts), max_length)
    train_idx, eval_idx = stratified_split(y, cfg.holdout_fraction, cfg.split_seed)
    labels_t = torch.from_numpy(y).long()
    scored = tokens[..., 2].sum(1)
    lengths = tokens[..., 1].sum(1).float()
    words = [tokenizer.convert_ids_to_tokens(tokens[i, : int(tokens[i, :, 1].sum()), 0].tolist()) for i in eval_idx]
    data = Dataset(
        name=name, train_images=tokens[train_idx], train_labels=labels_t[train_idx],
        eval_images=tokens[eval_idx], eval_labels=labels_t[eval_idx], num_classes=int(y.max()) + 1,
        provenance={**provenance, "sentences": len(texts), "max_length": max_length, "truncated": int(truncated),
                    "mean_tokens": round(float(lengths.mean()), 2), "padded_length": int(tokens.shape[1]),
                    "fewer_than_3_scored": int((scored < 3).sum()),
                    "split": f"stratified, holdout_fraction={cfg.holdout_fraction}, split_seed={cfg.split_seed}"},
        modality="text", eval_tokens=words,
        idf=smooth_idf(tokens[train_idx], max(len(tokenizer), int(tokens[..., 0].max()) + 1)),
    )
    return data


def load_text(cfg: DataConfig, spec: Any) -> Dataset:
    """``data=sentiment`` or ``data=text_file``, tokenized with the tokenizer of ``spec`` (a TextModelSpec)."""
    from benchmark.models.text import load_tokenizer

    tokenizer = load_tokenizer(spec.name_or_path)
    if cfg.name == "sentiment":
        sources = check_sources(cfg.sources)
        root = sentiment_root(cfg.root)
        texts, labels, origin = read_sentiment(root, sources)
        prov = {"source": "UCI Sentiment Labelled Sentences (Kotzias et al., KDD 2015)", "root": str(root),
                "files": sources, "per_file": {s: origin.count(s) for s in sources}}
    else:
        texts, labels, prov = read_text_file(cfg)
    return text_dataset(cfg.name, texts, labels, cfg, tokenizer, spec.max_length, prov)


def model_max_length(tokenizer, config) -> int:
    """The longest input the model reads: its position embeddings' count, capped by the tokenizer's own limit."""
    limit = getattr(config, "max_position_embeddings", None) or 512
    tok = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok, int) and 0 < tok < 10**6:
        limit = min(limit, tok)
    return int(limit)

