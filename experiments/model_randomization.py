"""Model parameter randomization test: cascading (default), independent or bottom-up.

    python experiments/model_randomization.py randomization=independent method=[gradient,smoothgrad]
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from common import main_for

from benchmark.model_randomization import run


@hydra.main(version_base="1.3", config_path="../benchmark/conf", config_name="model_randomization")
def main(cfg: DictConfig) -> None:
    main_for(run, cfg)


if __name__ == "__main__":
    main()
