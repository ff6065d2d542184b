"""The efficient model parameter randomization test (Hedström et al. 2023, "Sanity checks revisited", eMPRT).

Two stages of one model: the trained model and the fully randomized one (every unit re-initialized: the last
stage of the cascading test, with the same drawn weights). Its score is the metric ``entropy_change``, the
relative rise of the map's complexity, ``(H(randomized map) - H(trained map)) / H(trained map)``, H the
Shannon entropy (natural log, ``scipy.stats.entropy``) of a histogram of the map's values. Higher means the
map changed more under randomization (Quantus' ``EfficientMPRT``: higher is better); stage 0's own score is 0.

Which values, following Quantus' ``EfficientMPRT`` (``abs=False``, no normalization, ``discrete_entropy``:
``np.histogram(a, bins=n_bins)`` then ``scipy.stats.entropy``): the signed map, channels summed, min-max scaled
(the suite's ``minmax`` maps). Equal-width bins over a map's own range do not change under an affine rescaling,
so this is Quantus' histogram of the raw signed map up to float32 rounding at bin edges; no absolute value.
Differences: Quantus histograms every channel's values (the suite sums channels first, as for every metric);
with a bin rule, Quantus computes one bin count for the whole batch (its rules use the array's number of
dimensions where the number of values is meant), the suite one per image from the trained map with numpy's
rules, clamped to [10, 200] as Quantus clamps; the suite's randomized model re-initializes the units by the
run's policy (``randomization.reinit``), Quantus with each layer's ``reset_parameters``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from scipy.stats import entropy as scipy_entropy

from benchmark.checks.base import Check, Models, StageRun, register
from benchmark.checks.model_randomization import model_meta, randomized_stages
from benchmark.checks.report_text import ReportText
from benchmark.config import ENTROPY_BIN_RULES, ExperimentConfig, Order, SimilarityConfig, check_entropy_bins
from benchmark.randomization import Stage, stages
from benchmark.similarity import METRICS, Metric, Scores, register_metric

NAME = "efficient_mprt"
METRIC = "entropy_change"
DEFAULT_BINS = 100
RULE_CLAMP = (10, 200)  # Quantus' min_n_bins, max_n_bins


def n_bins(values: np.ndarray, bins: Any = DEFAULT_BINS) -> int:
    """The bin count for one map: ``bins`` itself, or numpy's rule on ``values`` clamped to [10, 200]."""
    if not isinstance(bins, str):
        return int(bins)
    count = len(np.histogram_bin_edges(values, bins=bins)) - 1
    return int(min(max(count, RULE_CLAMP[0]), RULE_CLAMP[1]))


def histogram_entropy(values: np.ndarray, bins: int) -> float:
    """Shannon entropy (nats) of the histogram of ``values`` in ``bins`` equal-width bins over their range."""
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64).ravel(), bins=bins)
    return float(scipy_entropy(counts))


def entropy_change(a: np.ndarray, b: np.ndarray, bins: Any = DEFAULT_BINS) -> Scores:
    """Per image, (H(b) - H(a)) / H(a) of (B, ...) maps, ``a`` the trained model's, ``b`` the randomized one's.

    Both histograms of an image have the bin count of ``a`` (``n_bins``), each over its own map's range.
    NaN with a reason: a non-finite map (``non_finite_map``); a constant trained map, whose entropy is 0
    (``constant_map_original``, or ``constant_map_both``). A constant randomized map has entropy 0: -1, a map
    whose structure vanished, is its score.
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    value = np.full(len(a), np.nan)
    reasons: list[Optional[str]] = []
    for i, (x, y) in enumerate(zip(a, b)):
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            reasons.append("non_finite_map")
            continue
        if x.max() == x.min():
            reasons.append("constant_map_both" if y.max() == y.min() else "constant_map_original")
            continue
        k = n_bins(x, bins)
        h_a = histogram_entropy(x, k)
        value[i] = (histogram_entropy(y, k) - h_a) / h_a
        reasons.append(None)
    return Scores(value, reasons, np.full(len(a), np.nan))


def _score(a: np.ndarray, b: np.ndarray, c: SimilarityConfig) -> Scores:
    return entropy_change(a, b, getattr(c, "entropy_bins", DEFAULT_BINS))


# Not a similarity: higher means more change (higher_is_more_similar=False); the reports give it no verdict.
ENTROPY_CHANGE = Metric(METRIC, "minmax", (-1.0, float("inf")), False, False, _score)
if METRIC not in METRICS:
    register_metric(ENTROPY_CHANGE)


class EfficientMPRT(Check):
    name = NAME
    folder = "model_randomization"

    def configure(self, cfg: ExperimentConfig) -> None:
        """The folder, and entropy_change as the metric unless the metrics were chosen (a list other than the
        default one)."""
        cfg.test = self.folder
        if list(cfg.similarity.metrics) == SimilarityConfig().metrics:
            cfg.similarity.metrics = [METRIC]

    def check(self, cfg: ExperimentConfig) -> None:
        check_entropy_bins(cfg.similarity.entropy_bins)

    def stages(self, arch: Any, cfg: ExperimentConfig) -> list[Stage]:
        """The trained model, and the last stage of the cascading order: every chosen unit re-initialized."""
        if getattr(arch, "modality", "image") != "image":
            raise ValueError(f"test=efficient_mprt scores the entropy of image maps (Quantus' EfficientMPRT) and model "
                             f"{arch.name!r} is a {arch.modality} classifier; use test=cascading (its last stage is "
                             "every unit randomized) for token maps")
        cascade = stages(arch, Order.cascading, cfg.randomization.units)
        return [cascade[0], Stage(1, "fully_randomized", cascade[-1].units)]

    def stage_models(self, plan: Any, models: Models) -> StageRun:
        return randomized_stages(plan.cfg, plan.arch, models.trained.model, plan.stages)

    def meta(self, plan: Any, models: Models) -> dict[str, Any]:
        bins = plan.cfg.similarity.entropy_bins
        return {"model": model_meta(plan.arch, models.trained),
                "efficient_mprt": {"entropy_bins": bins, "bin_rules": list(ENTROPY_BIN_RULES),
                                   "rule_clamp": list(RULE_CLAMP) if isinstance(bins, str) else None}}

    def report_text(self, meta: dict[str, Any]) -> ReportText:
        bins = meta.get("efficient_mprt", {}).get("entropy_bins", DEFAULT_BINS)
        hist = (f"{bins} equal-width bins" if not isinstance(bins, str)
                else f"numpy's {bins!r} rule on the trained map, clamped to [10, 200] bins")
        return ReportText(
            description="efficient MPRT (Hedström et al. 2023): the trained against the fully randomized model",
            axis="model (left: trained; right: every unit randomized)",
            columns="columns: the trained model, then the model with every unit randomized",
            compares=("This test compares, per image, the complexity of the trained model's map with that of the "
                      "fully randomized model's map (every unit re-initialized, the cascading test's last stage): "
                      "entropy_change = (H(randomized) - H(trained)) / H(trained), H the Shannon entropy of a "
                      f"histogram of the signed map's values ({hist}). Higher means the map's complexity rose more "
                      "when the model was randomized, as a method that explains the model should (Hedström et al.: "
                      "higher is better); 0 is no change. entropy_change is no similarity, so the similarity-based "
                      "verdict rule does not apply to it: its verdict cells read not_applicable, and the number is "
                      "the result. "
                      "Similarity metrics chosen beside it (similarity.metrics=[entropy_change,ssim]) are judged as "
                      "in the cascading test's last stage."),
            caption=("of each stage's map relative to the trained model's map: higher means the map became more "
                     "complex under randomization; the gray band is the same score for unrelated maps (noise against "
                     "noise, each map against noise). No verdict: entropy_change is no similarity."),
        )


register(EfficientMPRT())
