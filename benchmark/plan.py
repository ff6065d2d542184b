"""A run before it computes: the plan (what will be computed), validated once before any data is loaded.

``validate`` runs every check that needs neither data nor training (``benchmark.validation``) and resolves the
model and the methods (``benchmark.resolve``); loading the inputs is ``benchmark.inputs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from benchmark.config import ExperimentConfig, resolve_profile
from benchmark.data import UNLABELLED, check_data_name, check_holdout_fraction
from benchmark.methods import Method
from benchmark.models import Architecture
from benchmark.randomization import Stage
from benchmark.report.stats import check_verdict
from benchmark.resolve import example_shape, resolve_architecture, resolve_methods
from benchmark.similarity import check_metrics
from benchmark.validation import (check_counts, check_finite, check_initializers, check_model_data, check_names,
                                  check_ranges, check_similarity)


@dataclass
class Plan:
    """A validated run: what will be computed, known before any data is loaded or model trained."""

    cfg: ExperimentConfig
    arch: Architecture
    methods: list[Method]
    stages: list[Stage]
    test: str  # the scores' `test` column: cascading | independent | bottom_up | data_randomization
    run_id: str
    run_dir: Path
    # Digests of what the run reads besides its settings (input files; a given model and images).
    inputs: dict[str, Any] = field(default_factory=dict)


def check_labels(cfg: ExperimentConfig) -> None:
    """target=label on a data set that has no labels, known from its name."""
    from benchmark.config import Target

    if Target(cfg.target) == Target.label and cfg.data.name in UNLABELLED:
        raise ValueError(f"target=label but data {cfg.data.name!r} has no labels for these images; use "
                         "target=predicted or target=original_prediction")


def validate(cfg: ExperimentConfig, arch: Optional[Architecture] = None,
             extra_methods: Optional[list[Method]] = None) -> tuple[Architecture, list[Method]]:
    """Every check that needs neither data nor training; fails with the key, the value and the fix.

    ``arch``: the architecture of a model given as an instance (the Python API); otherwise resolved from
    ``cfg.model``.
    """
    resolve_profile(cfg)
    check_finite(cfg)
    check_names(cfg)
    check_counts(cfg)
    check_ranges(cfg)
    given = arch is not None and arch.source == "given"
    if not given:
        check_data_name(cfg.data.name)
        check_labels(cfg)
        if cfg.data.name == "planted":
            from benchmark.data.planted import check_planted

            check_planted(cfg.data)
    sized = not given and not (cfg.data.name == "planted" and cfg.data.planted_base != "digits")
    check_holdout_fraction(cfg.data.holdout_fraction, cfg.data.name if sized else None)
    if arch is None:
        arch = resolve_architecture(cfg)
    check_initializers(cfg, arch)
    methods = resolve_methods(cfg, arch, cfg.skip_unsupported_methods, extra_methods)
    shape = tuple(arch.input_size) if given else example_shape(cfg)[1:]
    for m in methods:
        m.check_input(shape)
    check_metrics(list(cfg.similarity.metrics), arch.modality)
    check_verdict(cfg.verdict)
    check_similarity(cfg, arch)
    if not given:
        check_model_data(cfg, arch)
    return arch, methods
