"""The model randomization run end to end on the embedded digits (smoke settings)."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

import common  # noqa: F401  (registers the schema)
from benchmark import store
from benchmark.model_randomization import RUN_FILES, run
from benchmark.similarity import METRICS
from conftest import smoke_cfg

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_run_writes_every_file_and_is_done(smoke):
    run_dir, _ = smoke
    for name in RUN_FILES + ["status.json"]:
        assert (run_dir / name).exists(), name
    assert store.read_status(run_dir)["state"] == "done" and store.is_finished(run_dir)
    assert list((run_dir / "figures").glob("similarity_*.png"))
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5


@pytest.mark.e2e
def test_scores_are_complete_and_in_range(smoke):
    run_dir, cfg = smoke
    df = pd.read_parquet(run_dir / "scores.parquet")
    methods, metrics = list(cfg.method), list(cfg.similarity.metrics)
    expected = {(m, s, k, i) for m in methods for s in range(5) for k in metrics for i in range(cfg.n_images)}
    got = list(zip(df.method, df.stage, df.metric, df.image))
    assert len(got) == len(set(got)) == len(expected) and set(got) == expected
    for col in ["test", "stage", "layer", "method", "metric", "image", "value", "nan_reason", "tie_fraction",
                "model", "data", "profile", "seed", "run_id"]:
        assert col in df.columns
    ok = df.value.notna()
    for metric, values in df[ok].groupby("metric").value:
        lo, hi = METRICS[metric].bounds
        assert values.between(lo - 1e-9, hi + 1e-9).all(), metric
    assert df.nan_reason[~ok].notna().all() and df.nan_reason[ok].isna().all()
    rank = df.metric.isin(["spearman_abs", "spearman"]) & ok
    assert df.tie_fraction[rank].between(0, 1).all()
    assert set(df.layer[df.stage == 0]) == {"original"}


@pytest.mark.e2e
def test_controls_behave(smoke):
    run_dir, _ = smoke
    df = pd.read_parquet(run_dir / "scores.parquet")
    edge = df[df.method == "edge"]
    assert (edge.value == 1.0).all()  # exactly: the edge map ignores the model
    noise = df[(df.method == "noise") & (df.stage > 0)].groupby("metric").value.mean()
    assert noise.drop("hog").abs().max() < 0.1
    assert abs(noise["hog"]) < 0.3  # HOG of noise maps is not 0 (PROTOCOL.md: about 0.08)


@pytest.mark.e2e
def test_maps_rescored_independently_reproduce_the_table(smoke):
    run_dir, cfg = smoke
    df = pd.read_parquet(run_dir / "scores.parquet").set_index(["method", "stage", "metric", "image"])
    maps = np.load(run_dir / "maps.npz")
    meta = json.loads((run_dir / "meta.json").read_text())
    ppc = meta["resolved"]["hog_pixels_per_cell"]
    assert meta["resolved"]["ssim_window"] == "window5" and meta["resolved"]["hog_correlation"] == "pearson"
    checked, diffs = 0, []
    for method in cfg.method:
        for stage in range(1, 5):
            for k, image in enumerate(maps["image_ids"]):
                a, b = maps[f"{method}/abs"][0, k], maps[f"{method}/abs"][stage, k]
                sa, sb = maps[f"{method}/signed"][0, k], maps[f"{method}/signed"][stage, k]
                ma, mb = maps[f"{method}/minmax"][0, k], maps[f"{method}/minmax"][stage, k]
                if np.ptp(a) == 0 or np.ptp(b) == 0 or np.ptp(ma) == 0 or np.ptp(mb) == 0:
                    continue
                ref = {
                    "spearman_abs": spearmanr(a.ravel(), b.ravel()).statistic,
                    "spearman": spearmanr(sa.ravel(), sb.ravel()).statistic,
                    "ssim": structural_similarity(ma.astype(float), mb.astype(float), win_size=5, data_range=1.0),
                    "hog": pearsonr(hog(ma.astype(float), pixels_per_cell=(ppc, ppc), cells_per_block=(2, 2)),
                                    hog(mb.astype(float), pixels_per_cell=(ppc, ppc), cells_per_block=(2, 2))
                                    ).statistic,
                }
                for metric, value in ref.items():
                    diffs.append(abs(df.loc[(method, stage, metric, int(image)), "value"] - value))
                    checked += 1
    assert checked > 0.9 * len(cfg.method) * 4 * len(maps["image_ids"]) * 4 * 0.5
    # maps.npz holds float16 roundings of the float32 maps the metrics compared: re-scored values
    # agree within that rounding (a map of the wrong stage, image or method would be off by far more).
    assert maps["gradient/abs"].dtype == np.float16
    diffs = np.array(diffs)
    assert diffs.max() < 0.05 and np.median(diffs) < 2e-4, (diffs.max(), np.median(diffs))


@pytest.mark.e2e
def test_model_output_change_is_recorded(smoke):
    run_dir, _ = smoke
    meta = json.loads((run_dir / "meta.json").read_text())
    st = meta["stages"]
    assert [s["layer"] for s in st] == ["original", "logits", "fc1", "conv2", "conv1"]
    assert st[0]["accuracy"] == pytest.approx(meta["model"]["eval_accuracy"])
    assert st[0]["logit_spearman_mean"] == pytest.approx(1.0)
    assert st[-1]["accuracy"] < st[0]["accuracy"]
    assert meta["versions"]["torch"] and meta["timings"]["total_s"] > 0


@pytest.mark.e2e
def test_rerun_skips_and_overwrite_redoes(smoke, caplog):
    run_dir, cfg = smoke
    finished = store.read_status(run_dir)["finished"]
    with caplog.at_level(logging.INFO):
        assert run(cfg) == run_dir
    assert "already finished" in caplog.text
    assert store.read_status(run_dir)["finished"] == finished
    cfg.overwrite = True
    cfg.method = {"gradient": {}, "edge": {}}  # a cheaper run under a new id
    other = run(cfg)
    first = store.read_status(other)["finished"]
    assert run(cfg) == other and store.read_status(other)["finished"] > first


@pytest.mark.e2e
def test_crash_leaves_a_failed_status_never_a_finished_run(tmp_path, monkeypatch):
    cfg = smoke_cfg(tmp_path / "r", "method=[gradient]")

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("benchmark.report.write_run_report", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run(cfg)
    run_dir = next((tmp_path / "r" / "model_randomization").iterdir())
    status = store.read_status(run_dir)
    assert status["state"] == "failed" and "disk full" in status["error"]
    assert not store.is_finished(run_dir)
    monkeypatch.undo()
    assert store.is_finished(run(cfg))


@pytest.mark.e2e
def test_a_tampered_file_makes_the_run_unfinished(smoke, tmp_path):
    run_dir, _ = smoke
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(run_dir, copy)
    (copy / "scores.parquet").write_bytes(b"truncated")
    assert not store.is_finished(copy)


@pytest.mark.parametrize("overrides,match", [
    (["randomization.units=[conv9]"], "randomization.units has 'conv9'"),
    (["n_images=100000"], "n_images=100000 but the held-out split"),
    (["method=[]"], "method is empty"),
    (["model=mlp", "method=[gradcam]"], "needs a convolutional layer"),
    (["n_images=0"], "n_images=0 must be a positive"),
    (["method.smoothgrad.noise_level=-3", "method=[smoothgrad]"], "method.smoothgrad.noise_level=-3"),
    (["similarity.percentile=150"], "similarity.percentile=150"),
    (["similarity.hog_pixels_per_cell=0"], "similarity.hog_pixels_per_cell=0"),
    (["similarity.hog_pixels_per_cell=100"], "does not fit 28-pixel maps"),
    (["similarity.hog_cells_per_block=0"], "similarity.hog_cells_per_block=0"),
    (["method=[integrated_gradients]", "method.integrated_gradients.baseline=abc"], "baseline='abc' must be a number"),
    (["model.weights=/nonexistent.pt"], "model.weights='/nonexistent.pt' is not a file"),
    (["data.holdout_fraction=0.001"], "data.holdout_fraction=0.001 cannot give a stratified split"),
    (["num_threads=0"], "num_threads=0 must be at least 1"),
    (["data=mnist", "data.root=/nonexistent/mnist"], "data.root='/nonexistent/mnist' does not exist"),
    (["+method_settings.gradinet.n_samples=3"], "method_settings has 'gradinet'"),
    (["verdict.confidence=1.5"], "verdict.confidence=1.5 must lie in"),
])
def test_bad_input_fails_before_any_training(tmp_path, monkeypatch, overrides, match):
    def no_training(*a, **k):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr("benchmark.checks.model_randomization.train_model", no_training)
    cfg = smoke_cfg(tmp_path, *overrides)
    with pytest.raises(ValueError, match=match):
        run(cfg)
    for status in tmp_path.glob("**/status.json"):
        assert json.loads(status.read_text())["state"] != "done"


@pytest.mark.e2e
def test_command_line_runs_skips_and_rejects_bad_input(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "model_randomization.py"), "experiment=smoke",
           "method=[gradient,edge]", f"results_root={tmp_path}", "progress=false"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert second.returncode == 0 and "already finished" in second.stdout + second.stderr
    bad = subprocess.run(cmd + ["randomization.units=[conv9]"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2
    assert "randomization.units has 'conv9'" in bad.stdout + bad.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("overrides,layers", [
    (["randomization=independent"], ["original", "logits", "fc1", "conv2", "conv1"]),
    (["randomization=bottom_up"], ["original", "conv1", "conv2", "fc1", "logits"]),
    (["profile=code"], ["original", "logits", "fc1", "conv2", "conv1"]),
    (["model=mlp"], ["original", "logits", "hidden3", "hidden2", "hidden1"]),
])
def test_other_orders_profiles_and_models_run_end_to_end(tmp_path, overrides, layers):
    cfg = smoke_cfg(tmp_path, "method=[gradient,edge,noise]", *overrides)
    run_dir = run(cfg)
    df = pd.read_parquet(run_dir / "scores.parquet")
    assert [str(v) for v in df.drop_duplicates("stage").sort_values("stage").layer] == layers
    assert len(df) == 3 * 5 * 4 * cfg.n_images
    assert (df[df.method == "edge"].value == 1.0).all()
    meta = json.loads((run_dir / "meta.json").read_text())
    if "profile=code" in overrides:
        assert meta["resolved"]["reinit"] == "layer_default" and meta["resolved"]["ssim_window"] == "gaussian"


@pytest.mark.e2e
@pytest.mark.parametrize("target", ["predicted", "original_prediction", "label"])
def test_target_class_choice(tmp_path, target):
    from benchmark.data import load_dataset

    cfg = smoke_cfg(tmp_path, "method=[gradient]", f"target={target}", "n_images=8")
    df = pd.read_parquet(run(cfg) / "scores.parquet")
    per = df[df.metric == "spearman_abs"].pivot(index="image", columns="stage", values="target")
    labels = load_dataset(cfg.data).eval_labels[:8].numpy()
    if target == "label":
        assert (per.to_numpy() == labels[:, None]).all()
    elif target == "original_prediction":
        assert (per.to_numpy() == per[[0]].to_numpy()).all()
    else:  # recomputed for every randomized model: some images change class after the logits are redrawn
        assert (per.drop(columns=0).to_numpy() != per[[0]].to_numpy()).any()


@pytest.mark.e2e
def test_mlp_with_default_methods_skips_gradcam_with_a_reason(tmp_path, caplog):
    cfg = smoke_cfg(tmp_path, "model=mlp", "method=[gradient,gradcam,guided_gradcam,edge]")
    with caplog.at_level(logging.INFO):
        df = pd.read_parquet(run(cfg) / "scores.parquet")
    assert set(df.method) == {"gradient", "edge"}
    assert "skipping gradcam, guided_gradcam" in caplog.text


@pytest.mark.e2e
def test_command_line_settings_win_over_the_experiment(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "model_randomization.py"), "experiment=smoke",
           "method=[smoothgrad]", "method.smoothgrad.n_samples=3", f"results_root={tmp_path}", "progress=false"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    config = next(tmp_path.glob("model_randomization/*/config.yaml")).read_text()
    assert "n_samples: 3" in config
    mlp = subprocess.run(cmd[:2] + ["experiment=smoke", "model=mlp", "method=[gradcam]", f"results_root={tmp_path}"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert mlp.returncode == 2 and "needs a convolutional layer" in mlp.stdout + mlp.stderr


@pytest.mark.e2e
def test_same_config_and_seed_give_bitwise_identical_scores(tmp_path):
    # separate checkpoint caches: training is repeated too
    first = run(smoke_cfg(tmp_path / "a" / "r", "method=[gradient,smoothgrad,guided_gradcam,noise]"))
    second = run(smoke_cfg(tmp_path / "b" / "r", "method=[gradient,smoothgrad,guided_gradcam,noise]"))
    assert first.name == second.name  # same run id
    a = pd.read_parquet(first / "scores.parquet")
    b = pd.read_parquet(second / "scores.parquet")
    assert a.value.to_numpy().tobytes() == b.value.to_numpy().tobytes()
    assert a.drop(columns="value").equals(b.drop(columns="value"))
