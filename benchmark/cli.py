"""The command line: the Hydra edge of the suite (compose, convert to typed objects, call one function).

    sanity-check [overrides]                                  the model randomization test (cascading)
    sanity-check --config-name data_randomization [overrides] the data randomization test
    sanity-check-report root=results/                          one comparative report over a results root
    python -m benchmark [overrides]                            the same as sanity-check

The configs ship inside the package (``benchmark/conf``, Hydra's ``pkg://benchmark.conf``); the clone's
``conf`` and ``experiments/*.py`` are the same configs and runners.

A single run turns bad input into exit status 2 and a failed memorization into 1. In a sweep
(``-m``) one job's failure does not stop the others: each job writes its outcome to its Hydra job
folder, and ``SweepSummary`` (a Hydra callback) lists the failures when the sweep ends and makes
the command exit non-zero.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import hydra

from benchmark.cli_configs import CONFIG_PATH, hydra_dir, register_command_line_configs
from benchmark.config import ExperimentConfig, ReportConfig
from benchmark.methods.settings import as_settings, check_nodes
from benchmark.registry import load_plugins
from benchmark.runtime import available_cores, threads_per_job
from benchmark.store import write_json
from benchmark.training import MemorizationError

log = logging.getLogger("benchmark")
register_command_line_configs(sys.argv[1:])
if not OmegaConf.has_resolver("hydra_dir"):
    OmegaConf.register_new_resolver("hydra_dir", hydra_dir)

OUTCOME = "outcome.json"  # one per sweep job, in its Hydra job folder


def to_experiment(cfg: DictConfig) -> ExperimentConfig:
    """The composed Hydra config as the library's typed dataclass (the ``plugins`` it names imported first)."""
    load_plugins(OmegaConf.select(cfg, "plugins", default=None) or [])
    check_nodes(cfg.method)
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, ExperimentConfig), type(obj)
    obj.method = {name: as_settings(node) for name, node in obj.method.items()}  # typed nodes as plain settings
    return obj


def _hydra() -> Optional[DictConfig]:
    try:
        return HydraConfig.get()
    except ValueError:  # not inside a Hydra run
        return None


def _override_keys(hc: Optional[DictConfig]) -> list[str]:
    if hc is None:
        return []
    return [o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.task]


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


def launcher_threads(launcher: Any) -> tuple[Optional[int], str]:
    """Torch threads per job for the launcher running it, so that jobs x threads <= cores.

    joblib runs ``n_jobs`` jobs at once on this machine (-1: all cores, -2: all but one, ...);
    submitit gives each job ``cpus_per_task`` cores (1 when unset: the local executor starts
    every job of the sweep at once). Hydra's basic launcher runs one job at a time: torch's default.
    """
    target = str(launcher.get("_target_", "")) if launcher is not None else ""
    if "JoblibLauncher" in target:
        cores = available_cores()
        n_jobs = int(launcher.get("n_jobs") or -1)
        concurrent = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
        return threads_per_job(concurrent, cores), f"joblib n_jobs={n_jobs} on {cores} cores"
    if "submitit" in target:
        cpus = launcher.get("cpus_per_task")
        return int(cpus) if cpus else 1, f"submitit cpus_per_task={cpus}"
    return None, "one job at a time"


def _set_threads(exp: ExperimentConfig, hc: Optional[DictConfig], sweep: bool) -> None:
    if exp.num_threads is not None or not sweep:
        return
    exp.num_threads, why = launcher_threads(hc.launcher)
    if exp.num_threads is not None:
        log.info("num_threads=%d for this job (%s); set num_threads= to choose", exp.num_threads, why)


def main_for(run: Callable[[ExperimentConfig], Path], cfg: DictConfig) -> Optional[dict[str, Any]]:
    """Convert and run. A single run exits 2 on bad input; a sweep job records its outcome instead."""
    hc = _hydra()
    sweep = hc is not None and hc.mode == RunMode.MULTIRUN
    outcome: dict[str, Any] = {"overrides": list(hc.overrides.task) if hc is not None else [], "state": "done"}
    try:
        exp = apply_command_line(to_experiment(cfg), _override_keys(hc))
        _set_threads(exp, hc, sweep)
        run_dir = run(exp)
        outcome["run_dir"] = str(run_dir)
    except (ValueError, MemorizationError) as err:
        # bad input: the message names the key, the value and the fix; a memorization failure marks the run
        # failed and says what to change
        log.error("%s", err)
        bad = isinstance(err, ValueError)
        outcome.update(state="bad_input" if bad else "failed", error=str(err), exit_code=2 if bad else 1,
                       run_dir=_run_dir_of(err))
    except OSError as err:  # a folder that became unwritable mid-run, a full disk: the file named, no traceback
        log.error("could not write %s: %s", getattr(err, "filename", None) or "a result file", err.strerror or err)
        outcome.update(state="failed", error=f"{type(err).__name__}: {err}", exit_code=1, run_dir=_run_dir_of(err))
    except Exception as err:  # a sweep goes on (out of memory in one job, say); a single run shows the traceback
        if not sweep:
            raise
        log.exception("job failed: %s", err)
        outcome.update(state="failed", error=f"{type(err).__name__}: {err}", exit_code=1, run_dir=_run_dir_of(err))
    if sweep:
        write_json(Path(hc.runtime.output_dir) / OUTCOME, outcome)
        return outcome
    if outcome["state"] != "done":
        raise SystemExit(outcome["exit_code"])
    print(f"results: {outcome['run_dir']}")
    return outcome


def _run_dir_of(err: BaseException) -> Optional[str]:
    run_dir = getattr(err, "run_dir", None)
    return str(run_dir) if run_dir else None


def read_outcomes(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's outcome under a sweep folder; a job folder without one ended without reporting."""
    out = []
    jobs = [d for d in Path(sweep_dir).iterdir() if (d / ".hydra").is_dir()] if Path(sweep_dir).is_dir() else []
    for d in sorted(jobs, key=lambda p: (len(p.name), p.name)):
        try:
            o = json.loads((d / OUTCOME).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            o = {"state": "unreported", "error": "the job ended without recording an outcome (killed?)",
                 "exit_code": 1, "overrides": _job_overrides(d)}
        o["job"] = d.name
        out.append(o)
    return out


def _job_overrides(job_dir: Path) -> list[str]:
    try:
        return list(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
    except (OSError, ValueError):
        return []


class SweepSummary(Callback):
    """At the end of a sweep: how many jobs finished, which failed and why; exit non-zero if any did.

    Exit status 2 when every failure was bad input, else 1.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        outcomes = read_outcomes(sweep_dir)
        failed = [o for o in outcomes if o["state"] != "done"]
        log.info("sweep of %d jobs in %s: %d done, %d failed", len(outcomes), sweep_dir, len(outcomes) - len(failed),
                 len(failed))
        for o in failed:
            where = f" (status: {Path(o['run_dir']) / 'status.json'})" if o.get("run_dir") else ""
            log.error("failed job #%s %s: %s%s", o["job"], " ".join(o.get("overrides", [])), o.get("error"), where)
        write_json(sweep_dir / "summary.json", {"jobs": len(outcomes), "failed": len(failed), "outcomes": outcomes})
        if failed:
            raise SystemExit(2 if all(o["state"] == "bad_input" for o in failed) else 1)


def _run_model_randomization(cfg: ExperimentConfig) -> Path:
    from benchmark.model_randomization import run

    return run(cfg)


def _run_data_randomization(cfg: ExperimentConfig) -> Path:
    from benchmark.data_randomization import run

    return run(cfg)


def run_selected(cfg: ExperimentConfig) -> Path:
    """The test the composed config names (``test: model_randomization`` or ``data_randomization``)."""
    if cfg.test == "data_randomization":
        return _run_data_randomization(cfg)
    return _run_model_randomization(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="model_randomization")
def main(cfg: DictConfig) -> None:
    """``sanity-check``: the test of the chosen config (model randomization unless --config-name says otherwise)."""
    main_for(run_selected, cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="report")
def report_main(cfg: DictConfig) -> None:
    """``sanity-check-report``: one comparative report over every finished run under ``root``."""
    write_report(cfg)


def write_report(cfg: DictConfig) -> None:
    from benchmark.report import write_comparative_report
    from benchmark.report.stats import check_verdict
    from benchmark.similarity import METRICS

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
