"""Data randomization test: true-label model versus a model that memorized permuted labels.

    python experiments/data_randomization.py model=mlp data=mnist data.root=../shared/data
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from common import main_for

from benchmark.data_randomization import run


@hydra.main(version_base="1.3", config_path="../benchmark/conf", config_name="data_randomization")
def main(cfg: DictConfig) -> None:
    main_for(run, cfg)


if __name__ == "__main__":
    main()
