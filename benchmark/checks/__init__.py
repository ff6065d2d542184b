"""The registered tests, by name: cascading, independent, bottom_up, data_randomization (Adebayo et al. 2018),
random_logit (Sixt et al. 2020), efficient_mprt and smooth_mprt (Hedström et al. 2023).

A test is one ``Check`` (``benchmark.checks.base``); the registry key is the scores' ``test`` column.
``test=<registered name>`` on the command line selects it (``check_test_value`` records the choice before a
runner sets ``test`` to its results folder; ``test_for`` reads it back).
"""

from benchmark.checks import data_randomization, model_randomization  # noqa: F401  (they register themselves)
from benchmark.checks import efficient_mprt, random_logit  # noqa: F401  (they register themselves)
from benchmark.checks import smooth_mprt  # noqa: F401  (it registers itself)
from benchmark.checks import input_invariance  # noqa: F401  (it registers itself)
from benchmark.checks.base import TESTS, Check, Models, StageRun, get_test, register, report_text_of, unknown_test

__all__ = ["FOLDERS", "TESTS", "Check", "Models", "StageRun", "check_test_value", "get_test", "register", "report_text_of",
           "test_for"]


FOLDERS = ("model_randomization", "data_randomization")
# Where check_test_value records a registered test named by ``test`` (not a field: no run id changes).
_SELECTED = "_selected_test"


def check_test_value(cfg) -> None:
    """``test`` names a results folder or a registered test, nothing else (it becomes part of the run's path).

    A registered test that is not a folder's name (``test=random_logit``, ``test=independent``) is configured
    into ``cfg`` here (its folder, its order or metrics) and recorded, so ``test_for`` still finds it after the
    runner sets ``test`` to the folder.
    """
    if cfg.test not in FOLDERS and cfg.test not in TESTS:
        raise unknown_test(cfg.test)
    if cfg.test in TESTS and cfg.test not in FOLDERS:
        check = TESTS[cfg.test]
        check.configure(cfg)
        setattr(cfg, _SELECTED, check.name)


def test_for(cfg) -> Check:
    """The test a command-line config selects: a registered test named by ``test`` (recorded by
    ``check_test_value``), else ``test`` (the folder) and, for model randomization, the order."""
    selected = getattr(cfg, _SELECTED, None)
    if selected in TESTS:
        folder = TESTS[selected].folder
        if folder != cfg.test:
            raise ValueError(f"test={selected!r} is a {folder} test; run it with experiments/{folder}.py "
                             f"test={selected} (this runner writes {cfg.test})")
        return TESTS[selected]
    if cfg.test in TESTS:
        return TESTS[cfg.test]
    if cfg.test == "data_randomization":
        return TESTS["data_randomization"]
    if cfg.test == "model_randomization":
        return TESTS[cfg.randomization.order.value if hasattr(cfg.randomization.order, "value")
                     else str(cfg.randomization.order)]
    raise unknown_test(cfg.test)
