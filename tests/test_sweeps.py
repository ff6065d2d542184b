"""Sweeps as a user runs them: joblib and submitit launchers, a failing job, kill -9 and rerun, two
processes on one root. Each launches the real runner in a subprocess with the smoke settings."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchmark import store
from benchmark.collect import ROW_KEY, collect
from benchmark.runtime import available_cores

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "experiments" / "model_randomization.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # launcher workers import this tree
N_IMAGES, STAGES, METRICS = 4, 5, 4  # experiment=smoke on the paper's models


def command(root, *overrides, multirun=True):
    return [sys.executable, str(RUNNER), *(["-m"] if multirun else []), "experiment=smoke", f"results_root={root}",
            "progress=false", *overrides]


def sh(cmd, cwd):
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600)


def runs_under(root):
    return sorted((Path(root) / "model_randomization").glob("*"))


@pytest.mark.e2e
def test_joblib_sweep_goes_on_past_a_failing_job_lists_it_and_matches_a_plain_run(tmp_path):
    from test_run import smoke_cfg

    from benchmark.model_randomization import run

    out = sh(command(tmp_path / "sweep", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=mlp",
                     "method=gradient,gradcam"), tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-3000:]  # the only failure is bad input
    assert "sweep of 2 jobs" in text and "1 done, 1 failed" in text
    failed = [line for line in text.splitlines() if "failed job #" in line]
    assert len(failed) == 1 and "method=gradcam" in failed[0] and "needs a convolutional layer" in failed[0]
    summary = json.loads(next((tmp_path / "sweep" / ".hydra").glob("multirun/*/*/summary.json")).read_text())
    assert summary["jobs"] == 2 and summary["failed"] == 1
    got = collect(tmp_path / "sweep")
    assert [list(r.config["method"]) for r in got.runs] == [["gradient"]] and not got.skipped
    swept = got.runs[0]
    threads = max(1, available_cores() // 2)  # n_jobs x threads <= cores
    assert swept.meta["threads"] == swept.config["num_threads"] == threads
    assert swept.meta["determinism"]["training_threads"] == 1 and swept.meta["versions"]["hydra-joblib-launcher"]

    # the same config without a launcher, in another root (so the model is trained again), on the job's thread
    # count: bitwise equality is claimed for a fixed count (docs/faults.md); 1 on 2 cores
    previous = torch.get_num_threads()
    try:
        plain = run(smoke_cfg(tmp_path / "plain", "model=mlp", "method=[gradient]", f"num_threads={threads}"))
    finally:
        torch.set_num_threads(previous)
    assert plain.name == swept.run_dir.name
    assert json.loads((plain / "meta.json").read_text())["threads"] == threads
    a = pd.read_parquet(swept.run_dir / "scores.parquet")
    b = pd.read_parquet(plain / "scores.parquet")
    assert a.value.to_numpy().tobytes() == b.value.to_numpy().tobytes()
    assert a.drop(columns="value").equals(b.drop(columns="value"))


@pytest.mark.e2e
def test_submitit_local_executor_runs_the_sweep(tmp_path):
    out = sh(command(tmp_path, "hydra/launcher=submitit_local", "model=mlp", "method=gradient,edge"), tmp_path)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    got = collect(tmp_path)
    assert sorted(list(r.config["method"]) for r in got.runs) == [["edge"], ["gradient"]] and not got.skipped
    assert all(r.meta["threads"] == 1 for r in got.runs)  # cpus_per_task unset: one thread per job
    assert list(tmp_path.glob(".hydra/multirun/*/*/.submitit/*/*_result.pkl"))


def read_states(root):
    return {d.name: (store.read_status(d) or {}).get("state", "") for d in runs_under(root)}


@pytest.mark.e2e
def test_kill_9_halfway_then_the_same_command_finishes_the_sweep(tmp_path):
    """kill -9 of the sweep's process group while a job runs; every status read back after the group is gone;
    half-written temporary files planted in the runs to redo; the same command then finishes the sweep."""
    root = tmp_path / "r"
    methods = ["gradient", "edge", "noise", "gradient_x_input", "integrated_gradients"]
    cmd = command(root, "model=mlp", "method=" + ",".join(methods))
    with open(tmp_path / "first.log", "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            states = read_states(root)
            if sum(v == "done" for v in states.values()) >= 2 and "running" in states.values():
                # frozen, the sweep cannot finish the running job between this look and the kill
                os.killpg(proc.pid, signal.SIGSTOP)
                os.waitpid(proc.pid, os.WUNTRACED)
                states = read_states(root)
                if sum(v == "done" for v in states.values()) >= 2 and "running" in states.values():
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.02)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    while time.time() < deadline:  # until no process of the group is left
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("processes of the killed sweep are still alive")
    states = read_states(root)
    done = sorted(k for k, v in states.items() if v == "done")
    interrupted = [k for k, v in states.items() if v == "running"]
    assert len(done) >= 2 and len(interrupted) == 1 and len(states) < len(methods), states
    assert not store.is_finished(root / "model_randomization" / interrupted[0])
    # a finished run's table truncated on disk is detected by its hash and redone
    victim = root / "model_randomization" / done[0] / "scores.parquet"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    # half-written temporary files (store.atomic_write's names) in both runs to redo: the rerun must remove them
    planted = [root / "model_randomization" / name / ".scores.parquet.k1ll3d.tmp" for name in (interrupted[0], done[0])]
    for path in planted:
        path.write_bytes(b"PAR1 half-written")
    assert all(p.exists() for p in planted)

    again = sh(cmd, tmp_path)
    text = again.stdout + again.stderr
    assert again.returncode == 0, text[-3000:]
    assert text.count("already finished") == len(done) - 1
    assert "was left running by pid" in text and "does not match its hash" in text
    got = collect(root)
    assert len(got.runs) == len(methods) and not got.skipped
    assert not got.scores.duplicated(ROW_KEY).any()
    assert len(got.scores) == len(methods) * STAGES * METRICS * N_IMAGES
    assert sorted(got.scores.method.unique()) == sorted(methods)
    left = sorted(root.rglob(".*.tmp"))
    assert not left, f"half-written temporary files left after the rerun: {left}"


@pytest.mark.e2e
def test_two_processes_on_one_root_compute_a_run_and_a_checkpoint_once(tmp_path):
    same = command(tmp_path, "model=mlp", "method=[gradient]", multirun=False)
    other = command(tmp_path, "model=mlp", "method=[edge]", multirun=False)  # another run, the same checkpoint
    procs = [subprocess.Popen(c, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in (same, same, other)]
    texts = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(t[-2000:] for t in texts)
    assert sum("already finished" in t for t in texts[:2]) == 1  # the second waited, then skipped
    assert sum("epoch 1/2" in t for t in texts) == 1  # trained once; the others loaded it
    assert sum("loaded checkpoint" in t for t in texts) == 1  # (the skipping process never needed it)
    dirs = runs_under(tmp_path)
    assert len(dirs) == 2 and all(store.is_finished(d) for d in dirs)
    got = collect(tmp_path)
    assert len(got.scores) == 2 * STAGES * METRICS * N_IMAGES and not got.scores.duplicated(ROW_KEY).any()


def test_a_lock_makes_the_second_holder_wait_and_dies_with_its_process(tmp_path):
    lock = tmp_path / "run" / ".lock"
    order = []
    with store.locked(lock, "run x"):
        assert store.lock_is_held(lock)

        def second():
            with store.locked(lock, "run x"):
                order.append("second")

        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first releases")
    t.join(10)
    assert order == ["first releases", "second"] and not store.lock_is_held(lock)
    holder = subprocess.Popen([sys.executable, "-c", f"import time; from filelock import FileLock; "
                               f"lock = FileLock({str(lock)!r}); lock.acquire(); print('held', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held" and store.lock_is_held(lock)
    holder.kill()
    holder.wait()
    assert not store.lock_is_held(lock)  # no stale lock after kill -9


def test_sweep_summary_reports_jobs_that_never_reported(tmp_path):
    import common

    for num, outcome in (("0", {"state": "done", "overrides": ["seed=0"]}), ("1", None)):
        job = tmp_path / num
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={num}"]))
        if outcome:
            (job / common.OUTCOME).write_text(json.dumps(outcome))
    got = common.read_outcomes(tmp_path)
    assert [o["state"] for o in got] == ["done", "unreported"] and got[1]["overrides"] == ["seed=1"]
    from omegaconf import OmegaConf

    with pytest.raises(SystemExit) as exc:
        common.SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert exc.value.code == 1
    assert json.loads((tmp_path / "summary.json").read_text())["failed"] == 1


@pytest.mark.parametrize("launcher,threads", [
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, 4),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 16}, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -2}, 1),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", "cpus_per_task": 4}, 4),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "cpus_per_task": None}, 1),
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, None),
])
def test_threads_per_job_never_oversubscribe(monkeypatch, launcher, threads):
    import common

    monkeypatch.setattr("benchmark.cli.available_cores", lambda: 8)
    got, why = common.launcher_threads(launcher)
    assert got == threads
    if "Joblib" in launcher["_target_"]:
        n = launcher["n_jobs"] if launcher["n_jobs"] > 0 else 8 + 1 + launcher["n_jobs"]
        assert n * got <= 8 or got == 1


def compose_with_hydra(*overrides, name="model_randomization", hydra=True):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides), return_hydra_config=hydra)


def test_a_bare_method_selects_that_method_alone_with_the_same_run_id():
    import common

    from benchmark.model_randomization import plan

    bare, listed = (common.to_experiment(compose_with_hydra(o, hydra=False))
                    for o in ("method=gradient", "method=[gradient]"))
    assert list(bare.method) == list(listed.method) == ["gradient"]
    assert plan(bare).run_id == plan(listed).run_id


@pytest.mark.parametrize("experiment,runner,order", [
    ("adebayo2018_cascading_mnist", "model_randomization", "cascading"),
    ("adebayo2018_independent_mnist", "model_randomization", "independent"),
    ("adebayo2018_data_randomization_mnist", "data_randomization", "cascading"),
])
def test_paper_experiments_set_their_own_sweep(experiment, runner, order):
    cfg = compose_with_hydra(f"experiment={experiment}", "data.root=/work/shared/data", name=runner)
    assert cfg.hydra.sweeper.params.model == "cnn,mlp"
    assert cfg.data.name == "mnist" and cfg.n_images == 100 and cfg.randomization.order == order
    assert cfg.hydra.callbacks.sweep_summary._target_ == "benchmark.cli.SweepSummary"


def test_slurm_launcher_config_has_its_settings():
    import common

    cfg = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.gpus_per_node == 1 and launcher.timeout_min > 0 and launcher.mem_gb > 0
    assert common.launcher_threads(launcher)[0] == launcher.cpus_per_task


def test_an_out_of_memory_job_is_recorded_failed_and_the_sweep_goes_on(tmp_path, monkeypatch):
    """In a sweep, main_for records any exception as the job's outcome; the run's status says failed."""
    import copy

    import common
    import torch
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from benchmark import model_randomization

    cfg = compose_with_hydra("experiment=smoke", "model=mlp", "method=[gradient]", f"results_root={tmp_path}",
                             "progress=false", "hydra.mode=MULTIRUN")
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "sweep" / "0")
    task = copy.deepcopy(cfg)
    with open_dict(task):
        del task["hydra"]

    def out_of_memory(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("benchmark.engine.Engine._pass", out_of_memory)  # under every path
    HydraConfig.instance().set_config(cfg)
    try:
        outcome = common.main_for(model_randomization.run, task)  # returns: the next job of the sweep can start
    finally:
        HydraConfig.instance().cfg = None
    assert outcome["state"] == "failed" and "OutOfMemoryError: CUDA out of memory" in outcome["error"]
    status = store.read_status(Path(outcome["run_dir"]))
    assert status["state"] == "failed" and "CUDA out of memory" in status["error"] and status["traceback"]
    assert json.loads((tmp_path / "sweep" / "0" / common.OUTCOME).read_text())["state"] == "failed"
