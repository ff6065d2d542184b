"""kill -9 at each phase of a run (training, right after training, stages, report), then the same command again:
the run finishes once, and no temporary file or spill folder is left anywhere under the root."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def command(root: Path) -> list[str]:
    return [sys.executable, str(ROOT / "experiments" / "model_randomization.py"), "experiment=smoke",
            f"results_root={root}", "progress=false", "share_unchanged_layers=false", "training.epochs=4"]


def run_until(cmd: list[str], marker: str, timeout: float = 300) -> bool:
    """Start ``cmd``, SIGKILL its process group as soon as a log line contains ``marker``; whether it was killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            if marker in line:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return True
            if time.monotonic() > deadline:
                break
        proc.wait(timeout=30)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("phase,marker", [("training", "epoch 1/4"), ("after training", "epoch 4/4"),
                                          ("stages", "stage 1 (logits)"), ("report", "stage 4 (conv1)")])
def test_kill_at_a_phase_then_rerun(tmp_path, phase, marker):
    root = tmp_path / "results"
    assert run_until(command(root), marker), f"the run ended before the {phase} marker {marker!r}"
    statuses = [json.loads(p.read_text())["state"] for p in root.glob("model_randomization/*/status.json")]
    assert "done" not in statuses
    again = subprocess.run(command(root), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    (status,) = root.glob("model_randomization/*/status.json")
    assert json.loads(status.read_text())["state"] == "done"
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".maps_spill_")]
    assert leftovers == []
