"""What every runner shares: the config schema and the step from Hydra's config to the library's."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.config import ExperimentConfig  # noqa: E402

ConfigStore.instance().store(name="base_experiment", node=ExperimentConfig)
log = logging.getLogger("benchmark")


def to_experiment(cfg: DictConfig) -> ExperimentConfig:
    """The composed Hydra config as the library's typed dataclass."""
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, ExperimentConfig), type(obj)
    return obj
