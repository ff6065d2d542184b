"""One comparative report over every finished run under a root (a sweep, or several experiments).

    python experiments/report.py root=results/
    python experiments/report.py root=results/ verdict=threshold verdict.stage=fc1 metric=spearman

Writes <root>/report/ (or out=...): report.html (self-contained), report.md, summary.csv,
verdicts.csv, figures/. Runs that failed or did not finish are listed with the reason.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from common import log  # noqa: F401  (puts the repository on the path)

from benchmark.cli import write_report


@hydra.main(version_base="1.3", config_path="../benchmark/conf", config_name="report")
def main(cfg: DictConfig) -> None:
    write_report(cfg)


if __name__ == "__main__":
    main()
