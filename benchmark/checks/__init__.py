"""The registered tests, by name: cascading, independent, bottom_up, data_randomization.

A test is one ``Check`` (``benchmark.checks.base``); the registry key is the scores' ``test`` column.
"""

from benchmark.checks import data_randomization, model_randomization  # noqa: F401  (they register themselves)
from benchmark.checks.base import TESTS, Check, Models, StageRun, get_test, register

__all__ = ["TESTS", "Check", "Models", "StageRun", "get_test", "register", "test_for"]


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
