"""Collecting finished runs: only done runs with intact files are read; the rest are listed as skipped."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark import store
from benchmark.collect import collect

FILES = ["scores.parquet", "meta.json", "config.yaml"]


def fake_run(root, run_id, state="done", n=3):
    run_dir = root / "model_randomization" / run_id
    started = store.mark_running(run_dir)
    df = pd.DataFrame({"run_id": run_id, "test": "cascading", "stage": 0, "method": "gradient",
                       "metric": "spearman", "image": range(n), "value": 1.0})
    store.atomic_write(run_dir / "scores.parquet", lambda f: df.to_parquet(f, index=False))
    store.write_json(run_dir / "meta.json", {"run_id": run_id})
    store.write_text(run_dir / "config.yaml", yaml.safe_dump({"seed": 0}))
    if state == "done":
        store.mark_done(run_dir, started, FILES)
    elif state == "failed":
        store.mark_failed(run_dir, started, RuntimeError("out of memory"))
    return run_dir


def test_collect_reads_finished_runs_and_lists_the_rest(tmp_path):
    fake_run(tmp_path, "a", n=3)
    fake_run(tmp_path, "b", n=2)
    fake_run(tmp_path, "c", state="failed")
    running = fake_run(tmp_path, "d", state="running")
    tampered = fake_run(tmp_path, "e")
    (tampered / "scores.parquet").write_bytes(b"truncated")
    fake_run(tmp_path / ".hydra", "f")  # Hydra's own folder is not searched
    fake_run(tmp_path, "g", state="running")  # its process is gone: nobody holds its lock
    with store.run_lock(running):
        got = collect(tmp_path)
    assert sorted(r.run_id for r in got.runs) == ["a", "b"]
    assert len(got.scores) == 5 and set(got.scores.run_id) == {"a", "b"}
    states = {s.run_dir.name: s for s in got.skipped}
    assert set(states) == {"c", "d", "e", "g"}
    assert states["c"].state == "failed" and "out of memory" in states["c"].reason
    assert states["d"].state == "running" and states["e"].state == "unfinished"
    assert states["g"].state == "interrupted" and "rerun" in states["g"].reason


def test_collect_refuses_a_run_present_twice_and_a_missing_root(tmp_path):
    fake_run(tmp_path / "x", "a")
    fake_run(tmp_path / "y", "a")
    with pytest.raises(ValueError, match="more than one folder"):
        collect(tmp_path)
    with pytest.raises(ValueError, match="root="):
        collect(tmp_path / "nope")


def _scores_root(root: Path, values: list[float], run_id: str) -> Path:
    rows = [{"test": "cascading", "stage": s, "layer": f"l{s}", "method": "gradient", "metric": "spearman_abs",
             "image": i, "value": values[2 * s + i], "nan_reason": None if np.isfinite(values[2 * s + i]) else "constant",
             "tie_fraction": 0.0, "target": 3, "model": "cnn", "data": "digits", "profile": "paper", "seed": 0,
             "run_id": run_id} for s in range(2) for i in range(2)]
    run = root / "model_randomization" / run_id
    run.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(run / "scores.parquet")
    (run / "meta.json").write_text("{}")
    return root


def test_same_scores_pairs_runs_by_what_they_ran_and_sees_one_ulp(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import same_scores

    values = [1.0, 1.0, 0.25, float("nan")]
    a = _scores_root(tmp_path / "a", values, "cnn_digits_cascading_s0_aaaaaaaaaa")
    b = _scores_root(tmp_path / "b", values, "cnn_digits_cascading_s0_bbbbbbbbbb")  # another run-id scheme
    assert same_scores.main([str(a), str(b)]) == 0
    assert "4 values bitwise equal" in capsys.readouterr().out
    c = _scores_root(tmp_path / "c", [1.0, 1.0, float(np.nextafter(0.25, 1.0)), float("nan")], "x")
    assert same_scores.main([str(a), str(c)]) == 1
    out = capsys.readouterr().out
    assert "1 of 4 values differ, first at stage=1, layer=l1, method=gradient, metric=spearman_abs, image=0" in out
    (tmp_path / "empty").mkdir()
    assert same_scores.main([str(a), str(tmp_path / "empty")]) == 1
    assert "only under" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        same_scores.main([str(a), str(tmp_path / "missing")])
    assert "missing is not a folder" in capsys.readouterr().err
