"""Every row of docs/bad_input.md's catalogue through the real command line, in a subprocess.

The in-process test (tests/test_bad_input.py) composes the config with Hydra's API; this one runs the runner as a
user does, so a row that the command line turns into a traceback (Hydra failing before the suite's code runs)
fails here. Each row: a non-zero exit, the catalogued fragments in the output, no Python traceback from the
suite's own checks, no run folder that says done, no checkpoint trained.
"""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from test_bad_input import ROWS, fill, paths  # noqa: F401  (paths: the catalogue's files, a module fixture)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "experiments" / "model_randomization.py"
HYDRA_WORDING = ("Could not", "Invalid value", "Ambiguous value", "Value ", "Key ")  # Hydra: exit 1; the suite: 2


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, paths):  # noqa: F811
    base = tmp_path_factory.mktemp("cli_rows")

    def one(i_row):
        i, (given, message) = i_row
        root = base / f"row{i}"
        overrides = fill(given, paths).split()
        if not any(o.startswith(("results_root=", "cache_dir=")) for o in overrides):
            overrides.append(f"results_root={root}")
        proc = subprocess.run([sys.executable, str(RUNNER), "experiment=smoke", "progress=false", *overrides],
                              cwd=base, capture_output=True, text=True, timeout=600)
        return proc, root

    rows = [r for r in ROWS if not (r[0] == "device=cuda" and torch.cuda.is_available())]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, enumerate(rows)))
    return {given: (message, proc, root) for (given, message), (proc, root) in zip(rows, results)}, paths


@pytest.mark.parametrize("given", [r[0] for r in ROWS])
def test_row_on_the_command_line(given, replayed):
    done, files = replayed
    if given not in done:
        pytest.skip("this machine has a GPU")
    message, proc, root = done[given]
    said = proc.stdout + proc.stderr
    hydra = message.startswith(HYDRA_WORDING)
    assert proc.returncode == (1 if hydra else 2), (proc.returncode, said[-2000:])
    position = 0
    for fragment in fill(message, files).split(" ... "):
        found = said.find(fragment, position)
        assert found >= 0, f"{fragment!r} not in the command line's output:\n{said[-3000:]}"
        position = found + len(fragment)
    if not hydra:
        assert "Traceback" not in said, said[-3000:]
    for status in root.glob("**/status.json"):
        assert json.loads(status.read_text()).get("state") != "done", status
    assert not list(root.glob(".cache/checkpoints/*.pt")), "a checkpoint was trained before the input was refused"
