"""The one run loop behind the command line and the Python API.

``plan`` validates a config (and the model) before anything is computed; ``compute`` takes the plan,
the loaded inputs and the test's models, explains and scores every stage, and returns a ``Result``;
``run`` is the command line's guarded path (skip when finished, write the run folder, mark it done).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from benchmark import store
from benchmark.checks import Check, Models, get_test, test_for
from benchmark.config import ExperimentConfig
from benchmark.lifecycle import RUN_FILES, base_meta, finish_table, run_guarded, write_outputs
from benchmark.methods import ExternalMethod, Method
from benchmark.methods.external import probe_method
from benchmark.models import Architecture
from benchmark.inputs import Setup, setup
from benchmark.plan import Plan, validate
from benchmark.resolve import input_digests
from benchmark.schedule import score_stages
from benchmark.scoring import Scored

log = logging.getLogger(__name__)


def plan(cfg: ExperimentConfig, arch: Optional[Architecture] = None, extra_methods: Optional[list[Method]] = None,
         identity: Optional[dict[str, Any]] = None, check: Optional[Check] = None) -> Plan:
    """Check every setting that can be checked without data or training; fail with the key, the value and the fix.

    ``identity``: what else the run's id must cover (a given model's weights and inputs, by digest).
    ``check``: the test (default: the one ``cfg`` selects).
    """
    check = check or test_for(cfg)
    check.check(cfg)
    arch, methods = validate(cfg, arch, extra_methods)
    stage_list = check.stages(arch, cfg)
    layers = [s.layer for s in stage_list[1:]]
    if cfg.verdict.stage not in ("last", "first") and cfg.verdict.stage not in layers:
        raise ValueError(f"verdict.stage={cfg.verdict.stage!r} is no stage of this run; use last, first or one of "
                         f"{layers}")
    inputs = {**input_digests(cfg), **(identity or {})}
    rid = store.run_id(cfg, check.name, inputs)
    return Plan(cfg, arch, methods, stage_list, check.name, rid, Path(cfg.results_root) / cfg.test / rid, inputs)


@dataclass
class Result:
    """A finished test in memory: the tidy scores, the calibration scores, the saved maps and the run's meta."""

    plan: Plan
    scores: pd.DataFrame
    calibration: pd.DataFrame
    maps: dict[str, np.ndarray]
    meta: dict[str, Any]
    scored: Scored
    # The fair null (randomization.fair_null): per randomized stage, its maps against its null twin's; None without it.
    null: Optional[pd.DataFrame] = None
    # Data with known regions (data=planted): every scored map's localization scores; None on other data.
    localization: Optional[pd.DataFrame] = None

    def write(self, out: str | Path, started: Optional[float] = None) -> Path:
        """The run folder a command-line run writes (scores, calibration, maps, config, meta, report, status)."""
        run_dir = Path(out)
        if started is not None:  # inside run_guarded, which marks the status itself
            self._write(run_dir, started)
            return run_dir
        store.check_writable(run_dir.parent if not run_dir.exists() else run_dir, "out", str(out))
        with store.run_lock(run_dir):
            store.remove_temporaries(run_dir)
            started = store.mark_running(run_dir)
            try:
                self._write(run_dir, started)
            except BaseException as err:
                store.mark_failed(run_dir, started, err)
                raise
            store.mark_done(run_dir, started, RUN_FILES)
        log.info("results: %s", run_dir)
        return run_dir

    def _write(self, run_dir: Path, started: float) -> None:
        from benchmark.report import write_run_report

        cfg = self.plan.cfg
        write_outputs(self.plan, run_dir, self.scores, self.maps, self.meta,
                      lambda d, f, m, a: write_run_report(d, f, m, a, n_figure_images=cfg.n_figure_images,
                                                          verdict=cfg.verdict),
                      started, calibration=self.calibration, null=self.null, localization=self.localization)

    def summary(self) -> pd.DataFrame:
        """Mean similarity per method, metric and stage (images averaged)."""
        return (self.scores.groupby(["method", "metric", "stage", "layer"], sort=False)["value"].mean()
                .unstack(["stage", "layer"]))


def probe_external(methods: list[Method], models: Models, s: Setup) -> None:
    """Every external method called once on the trained model's first input, before any stage is computed."""
    external = [m for m in methods if isinstance(m, ExternalMethod)]
    if not external:
        return
    import torch

    from benchmark.engine import prepared
    from benchmark.models.text import model_input

    model = models.trained.model
    x = s.images[0][:1].to(s.device)
    x = model_input(model, x)  # token rows: the layout text methods read
    with torch.no_grad():
        target = model(x).argmax(1)
    with prepared(model):
        for m in external:
            probe_method(m, model, x, target)


def probe_inputs(methods: list[Method], s: Setup) -> None:
    """Checks that need a real image, on the first one, before any model is trained or stage computed: a
    segmentation of one region (leave-one-out, LIME)."""
    first = s.images[0][0]
    for m in methods:
        check = getattr(m, "check_regions", None)
        if check is not None:
            check(first)


def compute(p: Plan, s: Setup, models: Models) -> Result:
    """Explain and score every stage of the plan's test on the given models."""
    check = get_test(p.test)
    probe_external(p.methods, models, s)
    run = check.stage_models(p, models if models.data is not None else dataclasses.replace(models, data=s.data))
    scored = score_stages(p.cfg, p.arch, p.methods, run.contexts, s, n_stages=run.n_stages,
                          shared_model=run.shared_model, drawn=run.drawn, explain=run.explain, null=run.null,
                          drawn_null=run.drawn_null)
    df = finish_table(scored.scores, p, s.data)
    meta = base_meta(p, s, scored)
    meta.update(check.meta(p, models))
    if run.meta is not None:
        meta.update(run.meta())
    trained = [m for m in (models.trained, models.random_labels) if m is not None]
    meta["timings"] = {"data_s": s.data_s, "training_s": sum(m.seconds for m in trained),
                       "maps_and_scores_s": scored.seconds}
    null = None
    if scored.null is not None:
        null = finish_table(scored.null, p, s.data)
        meta.setdefault("null", {})["stages"] = scored.null_stages
    localized = None if scored.localization is None else finish_table(scored.localization, p, s.data)
    return Result(p, df, finish_table(scored.calibration, p, s.data), scored.arrays, meta, scored, null, localized)


def _execute(p: Plan, started: float) -> None:
    s = setup(p.cfg, p.arch)
    s.spill_dir = p.run_dir
    probe_inputs(p.methods, s)
    models = get_test(p.test).obtain(p, s)
    compute(p, s, models).write(p.run_dir, started)


def run(cfg: ExperimentConfig) -> Path:
    """The command line's path: run the test the config selects (or find it finished) and return its folder."""
    return run_guarded(plan(cfg), _execute)
