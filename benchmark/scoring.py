"""Scoring a stage: its model's own output, its maps post-processed and compared with stage 0's.

``StageScorer`` holds what every stage of a run is compared with (stage 0's prepared maps, its
logits) and appends one tidy row per image x method x metric; the maps are dropped after each
stage, so memory stays flat as stages grow. Only the first images' maps are kept (``SavedMaps``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from benchmark.calibration import calibration_scores, noise_maps
from benchmark.config import ExperimentConfig, Target
from benchmark.data import Dataset
from benchmark.localization import localization
from benchmark.methods import Method
from benchmark.postprocess import PROCESSORS
from benchmark.randomization import Stage
from benchmark.similarity import METRICS
from benchmark.token_metrics import TOKEN_METRICS, token_noise, token_process
from benchmark.training import evaluate

log = logging.getLogger(__name__)


def process(maps: dict[str, torch.Tensor], percentile: float) -> dict[str, dict[str, np.ndarray]]:
    """method -> post-processing (abs, signed, minmax) -> (B, H, W) float32, what the metrics compare."""
    return {
        name: {kind: (fn(m, percentile) if kind != "minmax" else fn(m)).astype(np.float32)
               for kind, fn in PROCESSORS.items()}
        for name, m in maps.items()
    }


def magnitude(maps: torch.Tensor) -> np.ndarray:
    """(B, H, W): the channel sum of |map| over each image's largest value (1 at the peak; float16 keeps its order
    and scale), unclipped, for scoring maps against known regions (``benchmark.localization``)."""
    m = maps.detach().float().abs().sum(1).numpy()
    peak = m.reshape(len(m), -1).max(1).reshape(-1, 1, 1)
    return np.divide(m, peak, out=np.zeros_like(m), where=peak > 0)


def logit_change(reference: torch.Tensor, current: torch.Tensor) -> dict[str, Any]:
    """How much the model's own output moved: per-image Spearman of logits, prediction flips."""
    t, c = reference.double().numpy(), current.double().numpy()
    finite = bool(np.isfinite(c).all())
    rhos = [spearmanr(a, b).statistic if finite and np.ptp(b) > 0 and np.ptp(a) > 0 else np.nan
            for a, b in zip(t, c)]
    return {
        "logit_spearman_mean": None if np.all(np.isnan(rhos)) else float(np.nanmean(rhos)),
        "prediction_changed": float((t.argmax(1) != c.argmax(1)).mean()),
        "output_finite": finite,
    }


SPILL_PREFIX = ".maps_spill_"


class SavedMaps:
    """The figure subset of every stage's maps at float16, spilled to disk as each stage ends.

    Each key's stages are appended to one file in a temporary folder, so memory does not grow with
    the number of stages; ``arrays()`` maps the files back as (stages, K, H, W) float16 arrays that
    np.savez streams into maps.npz.
    """

    def __init__(self, spill_dir: Optional[Path] = None) -> None:
        """``spill_dir``: where the spill folder goes (a run's own folder, so a killed run's is removed when the run
        is redone); None: the system's temporary folder."""
        if spill_dir is not None:
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
        self._dir = tempfile.TemporaryDirectory(prefix=SPILL_PREFIX, dir=spill_dir, ignore_cleanup_errors=True)
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._count: dict[str, int] = {}

    def _path(self, key: str) -> Path:
        return Path(self._dir.name) / (key.replace("/", "__") + ".f16")

    def add(self, key: str, arr: np.ndarray) -> None:
        a = np.ascontiguousarray(arr, dtype=np.float16)
        if self._shapes.setdefault(key, a.shape) != a.shape:
            raise ValueError(f"saved maps {key!r} changed shape from {self._shapes[key]} to {a.shape}")
        with open(self._path(key), "ab") as fh:
            fh.write(a.tobytes())
        self._count[key] = self._count.get(key, 0) + 1

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.memmap(self._path(k), dtype=np.float16, mode="r", shape=(self._count[k],) + shape)
                if self._count[k] and np.prod(shape) else np.zeros((self._count[k],) + shape, np.float16)
                for k, shape in self._shapes.items()}


@dataclass
class Scored:
    scores: pd.DataFrame
    arrays: dict[str, np.ndarray]
    stages: list[dict[str, Any]]
    passes_per_image: int = 0
    seconds: float = 0.0
    # Unrelated maps scored with every metric (benchmark.calibration): calibration.parquet.
    calibration: Optional[pd.DataFrame] = None
    # Keeps the spill folder behind memory-mapped arrays alive as long as the result.
    saved: Optional[SavedMaps] = None
    # The fair null (randomization.fair_null): per randomized stage, its maps against its null twin's (null.parquet),
    # and the twins' own output per stage.
    null: Optional[pd.DataFrame] = None
    null_stages: list[dict[str, Any]] = field(default_factory=list)
    # Data with known regions (data=planted): every scored map against where the evidence is (localization.parquet).
    localization: Optional[pd.DataFrame] = None


@dataclass
class Seen:
    """A stage's model observed: its logits on the explained images, its accuracy, the targets to explain."""

    stage: Stage
    logits: torch.Tensor
    accuracy: Optional[float]
    target: torch.Tensor


@dataclass
class StageScorer:
    """Observes each stage's model and scores its maps against stage 0's; collects rows and stage meta."""

    cfg: ExperimentConfig
    methods: list[Method]
    data: Dataset
    images: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    device: torch.device
    rows: list[dict[str, Any]] = field(default_factory=list)
    stage_meta: list[dict[str, Any]] = field(default_factory=list)
    spill_dir: Optional[Path] = None
    saved: SavedMaps = field(init=False)
    calibration: Optional[pd.DataFrame] = None
    _reference: dict[tuple[str, str], Any] = field(default_factory=dict)  # stage 0's maps, prepared per metric
    _ref_logits: Optional[torch.Tensor] = None
    # Each randomized stage is followed by its null twin (Stage.null), compared with that stage's maps.
    null: bool = False
    null_rows: list[dict[str, Any]] = field(default_factory=list)
    null_meta: list[dict[str, Any]] = field(default_factory=list)
    _previous: Optional[tuple[int, dict[tuple[str, str], Any]]] = None  # the last randomized stage's prepared maps
    # Data with known regions: one row per stage, method, localization score and image (benchmark.localization).
    localization_rows: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.text = self.data.modality == "text"
        registry = TOKEN_METRICS if self.text else METRICS
        self.metrics = [registry[n] for n in self.cfg.similarity.metrics]
        self.saved = SavedMaps(self.spill_dir)

    def _process(self, maps: dict[str, torch.Tensor]) -> dict[str, dict[str, np.ndarray]]:
        if self.text:  # token maps: the scored tokens' values (benchmark.token_metrics)
            return token_process(maps, self.images[0])
        return process(maps, self.cfg.similarity.percentile)

    def observe(self, stage: Stage, model: nn.Module) -> Seen:
        """The stage model's own output, accuracy and the targets to explain (the configured rule's, or what the
        stage's own ``target`` makes of them)."""
        x, labels, _ = self.images
        with torch.no_grad():
            logits = model(x.to(self.device)).float().cpu()
        if self._ref_logits is None:
            self._ref_logits = logits
        known = self.data.eval_labels >= 0
        accuracy = (evaluate(model, self.data.eval_images[known], self.data.eval_labels[known])
                    if self.cfg.stage_accuracy and bool(known.any()) else None)
        rule = Target(self.cfg.target)
        if rule == Target.predicted:
            target = logits.argmax(1)
        elif rule == Target.original_prediction:
            target = self._ref_logits.argmax(1)
        else:
            target = labels
        if stage.target is not None:  # a stage that chooses its own classes (benchmark.randomization.Stage.target)
            target = torch.as_tensor(stage.target(target, logits, self.images[2])).long()
        return Seen(stage, logits, accuracy, target)

    def score(self, seen: Seen, maps: dict[str, torch.Tensor], seconds: float) -> None:
        """Rows of one stage's maps against stage 0's (stage 0 itself included), then the maps are dropped."""
        t_finish = time.time()
        stage, x = seen.stage, self.images[0]
        # Overflowing randomized weights give NaN / Inf maps: scored NaN (non_finite_map), counted here.
        non_finite = {n: int((~torch.isfinite(m.flatten(1))).any(1).sum()) for n, m in maps.items()}
        non_finite = {n: k for n, k in non_finite.items() if k}
        processed = self._process(maps)
        if stage.null:
            self._score_null(seen, processed, non_finite, seconds + time.time() - t_finish)
            return
        if stage.index == 0:
            self.calibration = self._calibrate(processed)
            self._reference = {(m.name, metric.name): metric.prepare(processed[m.name][metric.input])
                               for m in self.methods for metric in self.metrics}
        elif self.null:  # held until the stage's null twin, scored next, is compared with it
            self._previous = (stage.index, {(m.name, metric.name): metric.prepare(processed[m.name][metric.input])
                                            for m in self.methods for metric in self.metrics})
        k_saved = min(self.cfg.n_saved_images, len(x))
        for method in self.methods:
            self._rows(self.rows, seen, self._reference, processed, method)
            for kind, arr in processed[method.name].items():
                self.saved.add(f"{method.name}/{kind}", arr[:k_saved])
            if self.data.eval_regions is not None:  # where the evidence is known: the unclipped magnitude too
                self._localize(seen, method.name, magnitude(maps[method.name]), k_saved)
        del maps, processed
        self._stage_meta(seen, non_finite, seconds + time.time() - t_finish)

    def _localize(self, seen: Seen, method: str, mags: np.ndarray, k_saved: int) -> None:
        """Every image's map against its known region (mass, pointing game, AUC); the first ``k_saved`` magnitudes
        are saved (``<method>/magnitude``)."""
        self.saved.add(f"{method}/magnitude", mags[:k_saved])
        ids = self.images[2]
        regions = self.data.eval_regions[ids].numpy()
        for score, values in localization(mags, regions).items():
            self.localization_rows += [{"stage": seen.stage.index, "layer": seen.stage.layer, "method": method,
                                        "score": score, "image": int(ids[i]), "value": float(v)}
                                       for i, v in enumerate(values)]

    def _rows(self, rows: list[dict[str, Any]], seen: Seen, against: dict[tuple[str, str], Any],
              processed: dict[str, dict[str, np.ndarray]], method: Method) -> None:
        """One tidy row per image and metric: ``method``'s processed maps scored against the prepared ``against``."""
        stage, ids = seen.stage, self.images[2]
        for metric in self.metrics:
            sc = metric.score(against[method.name, metric.name], processed[method.name][metric.input],
                              self.cfg.similarity)
            for i in range(len(ids)):
                rows.append({
                    "stage": stage.index, "layer": stage.layer, "method": method.name,
                    "metric": metric.name, "image": int(ids[i]), "value": float(sc.value[i]),
                    "nan_reason": sc.nan_reason[i], "tie_fraction": float(sc.tie_fraction[i]),
                    "target": int(seen.target[i]),
                })

    def _score_null(self, seen: Seen, processed: dict[str, dict[str, np.ndarray]], non_finite: dict[str, int],
                    seconds: float) -> None:
        """Rows of a null twin's maps against the maps of the stage it twins (scored just before it)."""
        stage = seen.stage
        if self._previous is None or self._previous[0] != stage.index:
            raise RuntimeError(f"the null twin of stage {stage.index} ({stage.layer}) came before its stage; every "
                               "null twin must follow the stage it twins")
        for method in self.methods:
            self._rows(self.null_rows, seen, self._previous[1], processed, method)
        self._previous = None
        change = logit_change(self._ref_logits, seen.logits)
        self.null_meta.append({"stage": stage.index, "layer": stage.layer, "accuracy": seen.accuracy, **change,
                               "non_finite_maps": non_finite, "seconds": seconds})

    def _stage_meta(self, seen: Seen, non_finite: dict[str, int], seconds: float) -> None:
        stage = seen.stage
        change = logit_change(self._ref_logits, seen.logits)
        self.stage_meta.append({"stage": stage.index, "layer": stage.layer, "units_randomized": list(stage.units),
                                "accuracy": seen.accuracy, **change, "non_finite_maps": non_finite,
                                "seconds": seconds})
        if non_finite or not change["output_finite"]:
            log.warning("stage %d (%s): model output finite: %s; images with non-finite maps: %s", stage.index,
                        stage.layer, change["output_finite"], non_finite or "none")
        rho = change["logit_spearman_mean"]
        log.info("stage %d (%s): accuracy %s, logit Spearman %s", stage.index, stage.layer,
                 "n/a" if seen.accuracy is None else f"{seen.accuracy:.3f}", "n/a" if rho is None else f"{rho:.3f}")

    def _calibrate(self, reference: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
        """Similarity of unrelated maps (noise vs noise, each reference map vs noise) per metric and image."""
        ids = self.images[2]
        if self.text:
            noise = token_process({w: token_noise(self.cfg.seed, w, ids.tolist(), self.images[0].shape[1])
                                   for w in ("a", "b")}, self.images[0])
        else:
            noise = process({w: noise_maps(self.cfg.seed, w, ids.tolist(), tuple(self.images[0].shape[-2:]))
                             for w in ("a", "b")}, self.cfg.similarity.percentile)
        return calibration_scores(reference, noise["a"], noise["b"], ids.tolist(), self.metrics, self.cfg.similarity)

    def result(self, passes: int, seconds: float) -> Scored:
        x, _, ids = self.images
        k_saved = min(self.cfg.n_saved_images, len(x))
        arrays = self.saved.arrays()  # (stages, K, H, W) float16
        arrays["images"] = x[:k_saved].numpy().astype(np.float32)
        arrays["image_ids"] = ids[:k_saved].numpy()
        arrays["stage_layers"] = np.array([s["layer"] for s in self.stage_meta])
        if self.text and self.data.eval_tokens is not None:  # the saved sentences' tokens as the tokenizer spells them
            words = self.data.eval_tokens[:k_saved]
            table = np.full((k_saved, x.shape[1]), "", dtype=object)
            for i, w in enumerate(words):
                table[i, : len(w)] = w
            arrays["tokens"] = table.astype(str)
        return Scored(pd.DataFrame(self.rows), arrays, self.stage_meta, passes, seconds,
                      calibration=self.calibration, saved=self.saved,
                      null=pd.DataFrame(self.null_rows) if self.null else None, null_stages=self.null_meta,
                      localization=pd.DataFrame(self.localization_rows) if self.localization_rows else None)
