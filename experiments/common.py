"""What every runner shares: the config schema and the step from Hydra's config to the library's."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.config import ExperimentConfig, ReportConfig  # noqa: E402
from benchmark.training import MemorizationError  # noqa: E402

ConfigStore.instance().store(name="base_experiment", node=ExperimentConfig)
ConfigStore.instance().store(name="base_report", node=ReportConfig)
log = logging.getLogger("benchmark")


def to_experiment(cfg: DictConfig) -> ExperimentConfig:
    """The composed Hydra config as the library's typed dataclass."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, ExperimentConfig), type(obj)
    return obj


def _override_keys() -> list[str]:
    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:  # not inside a Hydra run
        return []
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides]


def apply_command_line(exp: ExperimentConfig, keys: list[str]) -> ExperimentConfig:
    """What the command line said wins over what an experiment config said.

    ``method=...`` given: methods the model cannot support are errors, not skipped.
    ``method.<name>.<key>=...`` given: that setting is dropped from ``method_settings``.
    """
    if "method" in keys:
        exp.skip_unsupported_methods = False
    for key in keys:
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "method":
            settings = exp.method_settings.get(parts[1])
            if settings:
                settings.pop(parts[2], None)
    return exp


def main_for(run: Callable[[ExperimentConfig], Path], cfg: DictConfig) -> None:
    """Convert, run, and turn bad input into a message and exit status 2."""
    try:
        exp = apply_command_line(to_experiment(cfg), _override_keys())
        run_dir = run(exp)
    except ValueError as err:  # bad input: the message names the key, the value and the fix
        log.error("%s", err)
        raise SystemExit(2) from None
    except MemorizationError as err:  # the run is marked failed; the message says what to change
        log.error("%s", err)
        raise SystemExit(1) from None
    print(f"results: {run_dir}")
