"""The default run's values, bit for bit: a stored digest of scores.parquet on the bundled digits.

The digest was taken from the default run (``python experiments/model_randomization.py``) before the code
was reorganized around ``benchmark.core``; a change that moves any value, NaN reason, tie fraction or target of
the default run fails here. The run id is not part of it (the config's schema may add keys).
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["test", "stage", "layer", "method", "metric", "image", "value", "nan_reason", "tie_fraction", "target"]


def digest(df: pd.DataFrame) -> str:
    """SHA-256 of the table's result columns, rows in (stage, method, metric, image) order; floats as float64 bytes."""
    d = df[COLUMNS].sort_values(["stage", "method", "metric", "image"]).reset_index(drop=True)
    h = hashlib.sha256()
    for c in COLUMNS:
        a = d[c]
        if a.dtype.kind in "fi":
            h.update(np.ascontiguousarray(a.to_numpy(dtype=np.float64 if a.dtype.kind == "f" else np.int64)).tobytes())
        else:
            h.update("\x1f".join("<NA>" if pd.isna(v) else str(v) for v in a).encode())
    return h.hexdigest()


def test_digest_reads_every_value():
    df = pd.DataFrame({c: [0] for c in COLUMNS}).assign(value=[0.5], nan_reason=[None], layer=["x"], method=["m"],
                                                        metric=["k"], test=["cascading"])
    changed = df.assign(value=[np.nextafter(0.5, 1.0)])
    assert digest(df) != digest(changed)


@pytest.mark.e2e
def test_default_run_values_are_unchanged(tmp_path):
    import subprocess
    import sys

    stored = json.loads((ROOT / "tests" / "data" / "default_run_digest.json").read_text())
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "model_randomization.py"),
                           f"results_root={tmp_path}", "progress=false"], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (scores,) = tmp_path.glob("model_randomization/*/scores.parquet")
    df = pd.read_parquet(scores)
    assert len(df) == stored["rows"]
    assert digest(df) == stored["sha256"]
