"""A fair null for the model randomization test: how similar are the maps of two *independently* randomized models?

    python experiments/random_null.py                          # the default run's model, data and methods
    python experiments/random_null.py method=[gradient,smoothgrad] n_images=64

Any override of the runners applies (Hydra syntax). The model is the default run's trained CNN (from the cache);
every unit is re-initialized twice, once with the run's seed (the cascading test's last stage) and once from a
generator derived from the seed and "null", and the maps of the trained model, of randomization A and of
randomization B are compared with every metric: trained vs A is what the cascading test reports at its last
stage, A vs B is what input and architecture alone give (the fair null), and the calibration band's upper edge
(noise maps) is printed beside them. Mean over images with its 95% bootstrap interval.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from benchmark import rng  # noqa: E402
from benchmark.calibration import band  # noqa: E402
from benchmark.checks import get_test  # noqa: E402
from benchmark.core import plan  # noqa: E402
from benchmark.engine import prepared  # noqa: E402
from benchmark.inputs import setup  # noqa: E402
from benchmark.config import Order, Target  # noqa: E402
from benchmark.randomization import randomized, stages  # noqa: E402
from benchmark.report.stats import mean_ci  # noqa: E402
from benchmark.schedule import engine_for  # noqa: E402
from benchmark.scoring import StageScorer, process  # noqa: E402
from benchmark.similarity import METRICS  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "benchmark" / "conf"


def maps_of(cfg, arch, methods, model, x, ids, key):
    """Processed maps of ``model``; ``key`` seeds the noise control (a fresh draw per model, as per stage in a run)."""
    with torch.no_grad(), prepared(model):
        target = model(x).argmax(1)
    maps = engine_for(cfg, arch, methods, model).explain(x, target, ids, stage_key=key)
    return process(maps, cfg.similarity.percentile)


def main(overrides: list[str]) -> pd.DataFrame:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = common.to_experiment(compose(config_name="model_randomization", overrides=["progress=false", *overrides]))
    p = plan(cfg)
    if Target(p.cfg.target) != Target.predicted or p.test not in ("cascading", "bottom_up", "independent"):
        raise ValueError(f"random_null compares every unit re-initialized, explaining each model's predicted class: "
                         f"use a model randomization test and target=predicted (got test={p.test}, "
                         f"target={Target(p.cfg.target).value})")
    s = setup(p.cfg, p.arch)
    model = get_test(p.test).obtain(p, s).trained.model
    x, _, ids = s.images
    x = x.to(s.device)
    last = stages(p.arch, Order.cascading, p.cfg.randomization.units)[-1]  # every unit re-initialized
    trained = maps_of(p.cfg, p.arch, p.methods, model, x, ids, "trained")
    drawn = {}
    for name, seed in (("a", p.cfg.seed), ("b", rng.derive_seed(p.cfg.seed, "null"))):
        with randomized(model, p.arch, last, p.cfg.randomization, seed) as m:
            drawn[name] = maps_of(p.cfg, p.arch, p.methods, m, x, ids, f"random_{name}")
    scorer = StageScorer(p.cfg, p.methods, s.data, s.images, s.device)
    calibration = scorer._calibrate(trained)
    rows = []
    for method in p.methods:
        for name in p.cfg.similarity.metrics:
            metric = METRICS[name]
            for pair, (u, v) in {"trained_vs_random": (trained, drawn["a"]),
                                 "random_vs_random": (drawn["a"], drawn["b"])}.items():
                values = metric.score(metric.prepare(u[method.name][metric.input]), v[method.name][metric.input],
                                      p.cfg.similarity).value
                finite = values[np.isfinite(values)]
                lo, hi = mean_ci(finite, 0.95, 2000, rng.derive_seed(p.cfg.seed, "null_ci", method.name, name, pair))
                rows.append({"method": method.name, "metric": name, "pair": pair, "mean": float(finite.mean()),
                             "ci_low": lo, "ci_high": hi, "band_high": band(calibration, name)[1]})
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index=["method", "metric", "band_high"], columns="pair",
                             values=["mean", "ci_low", "ci_high"], sort=False)
    print(f"{p.arch.name} on {s.data.name}, {len(x)} images, every unit re-initialized (seeds {p.cfg.seed} and "
          f"derive_seed({p.cfg.seed}, 'null')):")
    print(wide.round(3).to_string())
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
