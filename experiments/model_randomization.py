"""Model parameter randomization test: cascading (default), independent or bottom-up.

    python experiments/model_randomization.py randomization=independent method=[gradient,smoothgrad]
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from common import log, to_experiment

from benchmark.model_randomization import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="model_randomization")
def main(cfg: DictConfig) -> None:
    try:
        run_dir = run(to_experiment(cfg))
    except ValueError as err:  # bad input: the message names the key, the value and the fix
        log.error("%s", err)
        raise SystemExit(2) from None
    print(f"results: {run_dir}")


if __name__ == "__main__":
    main()
