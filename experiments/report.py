"""One comparative report over every finished run under a root (a sweep, or several experiments).

    python experiments/report.py root=results/
    python experiments/report.py root=results/ verdict=threshold verdict.stage=fc1 metric=spearman

Writes <root>/report/ (or out=...): report.html (self-contained), report.md, summary.csv,
verdicts.csv, figures/. Runs that failed or did not finish are listed with the reason.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from common import log

from benchmark.config import ReportConfig
from benchmark.report import write_comparative_report
from benchmark.report.stats import check_verdict
from benchmark.similarity import METRICS


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    rc = OmegaConf.to_object(cfg)
    assert isinstance(rc, ReportConfig), type(rc)
    try:
        if rc.metric not in METRICS:
            raise ValueError(f"metric={rc.metric!r} is not a known metric; use one of {list(METRICS)}")
        check_verdict(rc.verdict)
        out = write_comparative_report(rc.root, rc.out, rc.verdict, rc.metric)
    except ValueError as err:  # bad input: the message names the key, the value and the fix
        log.error("%s", err)
        raise SystemExit(2) from None
    print(f"report: {out / 'report.html'}")


if __name__ == "__main__":
    main()
