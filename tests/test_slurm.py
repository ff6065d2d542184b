"""Sweeps through a real Slurm cluster: the one-node cluster of scripts/slurm_cluster.sh (root only).

Skipped, naming the set-up command, where the cluster cannot be started; SLURM_TEST_REQUIRED=1 (CI) makes
that a failure. The cluster is stopped by its pid files when the module ends, also when a test fails."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from benchmark import store
from benchmark.collect import ROW_KEY, collect
from test_sweeps import ENV, METRICS, N_IMAGES, ROOT, STAGES, command, runs_under

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
SETUP = "bash scripts/slurm_cluster.sh start"
DAEMONS = {"munged": "munged", "mariadb": "mariadbd", "slurmdbd": "slurmdbd", "slurmctld": "slurmctld",
           "slurmd": "slurmd"}
SACCT_WARNING = "Bypassing sacct error"


def read_state(path):
    return dict(line.split("=", 1) for line in Path(path).read_text().splitlines() if "=" in line)


def alive(pid, name):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return Path(f"/proc/{pid}/comm").read_text().strip() == name and stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def script(env, action, timeout):
    return subprocess.run(["bash", str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=timeout)


def start_cluster(request, state, accounting="slurmdbd"):
    """Start a cluster recorded in ``state`` and stop it (checking its daemons gone) when ``request`` ends.

    Skips, naming the set-up command, where it cannot start; SLURM_TEST_REQUIRED=1 makes that a failure."""
    env = {**os.environ, "SLURM_CLUSTER_STATE": str(state), "SLURM_CLUSTER_ACCOUNTING": accounting}
    pids = {}

    def stop():
        if not state.exists():
            return
        out = script(env, "stop", 120)
        assert out.returncode == 0, out.stdout + out.stderr
        left = [f"{name} (pid {pid})" for name, pid in pids.items() if alive(pid, DAEMONS[name])]
        assert not left, f"still running after stop: {left}\n{out.stdout}"
        assert not state.exists()

    request.addfinalizer(stop)  # before start: a start that fails halfway is stopped too
    required = os.environ.get("SLURM_TEST_REQUIRED") == "1"
    if "slurm" not in (request.config.getoption("markexpr") or "") and not required:
        pytest.skip("starts a Slurm cluster: select it with -m slurm (as root), or set SLURM_TEST_REQUIRED=1 (CI)")
    why = None
    if os.geteuid() != 0:
        why = "not root"
    elif not shutil.which("apt-get") and not shutil.which("slurmctld"):
        why = "neither Slurm nor apt-get to install it"
    else:
        try:
            out = script(env, "start", 900)
            if out.returncode != 0:
                why = f"start failed:\n{(out.stdout + out.stderr)[-3000:]}"
        except subprocess.TimeoutExpired:
            why = "start took over 900 s"
    if why:
        msg = f"no Slurm test cluster ({why}); as root: {SETUP}"
        if required:
            pytest.fail(msg)
        pytest.skip(msg)
    info = read_state(state)
    run_dir = Path(info["DIR"]) / "run"
    names = [n for n in DAEMONS if accounting == "slurmdbd" or n not in ("mariadb", "slurmdbd")]
    pids.update({name: int((run_dir / f"{name}.pid").read_text()) for name in names})
    assert all(alive(pid, DAEMONS[name]) for name, pid in pids.items()), pids
    return {**info, "pids": pids}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):
    """The running cluster (with accounting): DIR, SLURM_CONF, PARTITION, NODE, pids."""
    return start_cluster(request, tmp_path_factory.mktemp("slurm") / "cluster.state")


def slurm_env(cluster):
    return {**ENV, "SLURM_CONF": cluster["SLURM_CONF"]}


def slurm(cluster, *args):
    out = subprocess.run(list(args), env=slurm_env(cluster), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{' '.join(args)}: {out.stderr}"
    return out.stdout


def queue(cluster):
    """{job id (array job_task): (state, numeric job id)} of every job still listed."""
    lines = slurm(cluster, "squeue", "-h", "-o", "%i|%T|%A").splitlines()
    return {i: (s, a) for i, s, a in (line.split("|") for line in lines)}


def wait_until(what, fn, timeout, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.05)
    tail = Path(log).read_text()[-3000:] if log and Path(log).exists() else ""
    pytest.fail(f"{what}: not within {timeout} s\n{tail}")


def running_run(root, exclude):
    """The one run folder, not in ``exclude``, whose status says running."""
    running = [d for d in runs_under(root)
               if d.name not in exclude and (store.read_status(d) or {}).get("state") == "running"]
    return running[0] if len(running) == 1 else None


def read_all(files):
    return "\n".join(f.read_text(errors="replace") for f in sorted(files))


def test_slurm_sweep_cancelled_and_killed_jobs_then_the_same_command_finishes_each_run_once(cluster, tmp_path):
    root = tmp_path / "results"
    methods = ["gradient", "edge", "noise"]
    # training.epochs=12: the cancelled job is still training when Slurm kills it (about 5 s after scancel here)
    cmd = command(root, "hydra/launcher=slurm", f"hydra.launcher.partition={cluster['PARTITION']}",
                  "hydra.launcher.cpus_per_task=2", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
                  "model=mlp", "training.epochs=12", "method=" + ",".join(methods))
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=slurm_env(cluster), stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # one job at a time (2 CPUs, cpus_per_task=2): cancel the first while its run is in progress ...
        cancelled = wait_until("a run in progress", lambda: running_run(root, ()), 300, first_log)
        jobs = queue(cluster)
        running = [i for i, (s, _) in jobs.items() if s == "RUNNING"]
        assert len(running) == 1, jobs
        array_id = running[0].split("_")[0]
        slurm(cluster, "scancel", running[0])
        # ... then kill -9 the next one's task process on the node (the job step's first pid)
        killed = wait_until("a second run in progress", lambda: running_run(root, (cancelled.name,)), 300, first_log)
        job = next(a for i, (s, a) in queue(cluster).items() if s == "RUNNING")
        pids = [line.split() for line in slurm(cluster, "scontrol", "listpids", job).splitlines()[1:]]
        step = [int(p[0]) for p in pids if p[2] == "0" and p[3] == "0"]
        assert len(step) == 1, pids
        assert "submitit" in Path(f"/proc/{step[0]}/cmdline").read_text()
        os.kill(step[0], signal.SIGKILL)
        wait_until("the queue empty", lambda: not queue(cluster), 300, first_log)
        proc.wait(timeout=400)  # accounting tells submitit the cancelled job ended: the command returns
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first = first_log.read_text()
    assert proc.returncode != 0 and f"Job {running[0]} " in first and "has not produced any output" in first, first[-3000:]

    def ended_states():  # accounting records a job's end after squeue drops it: wait for all three
        got = {line.split("|")[0]: line.split("|")[1].split()[0]
               for line in slurm(cluster, "sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", array_id).splitlines()}
        return got if len(got) == 3 and not {"PENDING", "RUNNING", "COMPLETING"} & set(got.values()) else None

    states = wait_until("accounting to record the three jobs' ends", ended_states, 120, first_log)
    assert sorted(states.values()) == ["CANCELLED", "COMPLETED", "FAILED"], states
    assert not store.is_finished(cancelled) and not store.is_finished(killed)
    finished = [d for d in runs_under(root) if store.is_finished(d)]
    assert len(finished) == 1 and finished[0].name not in (cancelled.name, killed.name)
    sweep1 = Path(first.split("sweep output dir : ")[1].split()[0])
    assert "CANCELLED AT" in read_all(sweep1.glob(".submitit/*/*_log.err"))  # slurmstepd's line, the job's log

    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=slurm_env(cluster), timeout=600)
    text = again.stdout + again.stderr
    assert again.returncode == 0, text[-3000:]
    assert "sweep of 3 jobs" in text and "3 done, 0 failed" in text
    sweep2 = Path(text.split("sweep output dir : ")[1].split()[0])
    logs = read_all(sweep2.glob("*/model_randomization.log"))  # Hydra's log of each job
    assert logs.count("already finished") == 1 and logs.count("was left running by pid") == 2, logs[-3000:]

    got = collect(root)
    assert len(got.runs) == len(methods) and not got.skipped
    assert not got.scores.duplicated(ROW_KEY).any()
    assert len(got.scores) == len(methods) * STAGES * METRICS * N_IMAGES
    assert sorted(got.scores.method.unique()) == sorted(methods)
    assert all(r.meta["threads"] == r.config["num_threads"] == 2 for r in got.runs)  # from cpus_per_task
    # the logs where docs/usage.md and docs/slurm.md say: <sweep folder>/.submitit/<job>_<task>/
    for task in range(3):
        job_dirs = list(sweep2.glob(f".submitit/*_{task}"))
        assert len(job_dirs) == 1 and list(job_dirs[0].glob("*_0_log.out")) and list(job_dirs[0].glob("*_result.pkl"))
        assert (sweep2 / str(task) / "model_randomization.log").exists()
    assert SACCT_WARNING not in first + text  # accounting answers every status poll


def test_stop_ends_a_cluster_whose_controller_died_and_its_folder(tmp_path, request):
    state = tmp_path / "cluster.state"
    info = start_cluster(request, state, accounting="none")
    os.kill(info["pids"]["slurmctld"], signal.SIGKILL)
    out = script({**os.environ, "SLURM_CLUSTER_STATE": str(state)}, "stop", 120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not any(alive(pid, DAEMONS[name]) for name, pid in info["pids"].items()), out.stdout
    assert not Path(info["DIR"]).exists() and not state.exists()
    assert "stopped munged" in out.stdout and "stopped slurmd" in out.stdout
