"""The model parameter randomization test (Adebayo et al. 2018, section 4), from a config.

``run(cfg)`` validates the config, trains (or loads) the model, computes every method's maps for
the trained model once, then for each stage re-initializes the stage's units, recomputes the maps,
scores them against the trained model's maps and drops them. The test itself is
``benchmark.checks.model_randomization``; the loop is ``benchmark.core``.
Output: ``<results_root>/model_randomization/<run_id>/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import nn

from benchmark.checks.model_randomization import randomized_stages
from benchmark.checks import check_test_value
from benchmark.config import ExperimentConfig
from benchmark.core import plan as _plan
from benchmark.core import run as _run
from benchmark.lifecycle import RUN_FILES
from benchmark.methods import Method
from benchmark.models import Architecture
from benchmark.inputs import Setup
from benchmark.plan import Plan
from benchmark.randomization import Stage
from benchmark.schedule import score_stages
from benchmark.scoring import Scored

__all__ = ["RUN_FILES", "plan", "run", "score_model_stages"]


def plan(cfg: ExperimentConfig) -> Plan:
    """Check every setting that can be checked without data or training; fail with the fix."""
    check_test_value(cfg)
    cfg.test = "model_randomization"
    return _plan(cfg)


def run(cfg: ExperimentConfig) -> Path:
    """Run the test (or find it finished) and return its folder."""
    check_test_value(cfg)
    cfg.test = "model_randomization"
    return _run(cfg)


def score_model_stages(cfg: ExperimentConfig, arch: Architecture, methods: list[Method], model: nn.Module,
                       stage_list: Sequence[Stage], s: Setup, null: bool = False) -> Scored:
    """``score_stages`` over ``model`` re-initialized stage by stage in place, as a run does it (``null``: with the
    fair null's twins, ``Scored.null``)."""
    r = randomized_stages(cfg, arch, model, list(stage_list), null=null)
    return score_stages(cfg, arch, methods, r.contexts, s, n_stages=r.n_stages, shared_model=r.shared_model,
                        drawn=r.drawn, null=r.null, drawn_null=r.drawn_null)
