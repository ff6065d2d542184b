"""The registered tests, by name: cascading, independent, bottom_up, data_randomization.

A test is one ``Check`` (``benchmark.checks.base``); the registry key is the scores' ``test`` column.
"""

from benchmark.checks import data_randomization, model_randomization  # noqa: F401  (they register themselves)
from benchmark.checks.base import TESTS, Check, Models, StageRun, get_test, register

__all__ = ["FOLDERS", "TESTS", "Check", "Models", "StageRun", "check_test_value", "get_test", "register", "test_for"]


FOLDERS = ("model_randomization", "data_randomization")


def check_test_value(cfg) -> None:
    """``test`` names a results folder or a registered test, nothing else (it becomes part of the run's path)."""
    if cfg.test not in FOLDERS and cfg.test not in TESTS:
        raise ValueError(f"test={cfg.test!r} is not a test folder; use model_randomization or data_randomization "
                         f"(registered tests: {sorted(TESTS)})")


def test_for(cfg) -> Check:
    """The test a command-line config selects: ``test`` (the folder) and, for model randomization, the order."""
    if cfg.test in TESTS:
        return TESTS[cfg.test]
    if cfg.test == "data_randomization":
        return TESTS["data_randomization"]
    if cfg.test == "model_randomization":
        return TESTS[cfg.randomization.order.value if hasattr(cfg.randomization.order, "value")
                     else str(cfg.randomization.order)]
    raise ValueError(f"test={cfg.test!r} is not a test folder; use model_randomization or data_randomization "
                     f"(registered tests: {sorted(TESTS)})")
