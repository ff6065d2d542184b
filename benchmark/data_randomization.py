"""The data randomization test (Adebayo et al. 2018, section 5), from a config.

The test itself is ``benchmark.checks.data_randomization``; the loop is ``benchmark.core``.
Output: ``<results_root>/data_randomization/<run_id>/``.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.checks.data_randomization import STAGES
from benchmark.checks import check_test_value
from benchmark.config import ExperimentConfig
from benchmark.core import plan as _plan
from benchmark.core import run as _run
from benchmark.lifecycle import RUN_FILES
from benchmark.plan import Plan

__all__ = ["RUN_FILES", "STAGES", "plan", "run"]


def plan(cfg: ExperimentConfig) -> Plan:
    check_test_value(cfg)
    cfg.test = "data_randomization"
    return _plan(cfg)


def run(cfg: ExperimentConfig) -> Path:
    """Run the test (or find it finished) and return its folder."""
    check_test_value(cfg)
    cfg.test = "data_randomization"
    return _run(cfg)
