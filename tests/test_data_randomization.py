"""The data randomization test end to end: two models, the memorization gate, the tidy table."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

import torch.nn.functional as F
from torch import nn

import common
from benchmark.models import ARCHITECTURES, Architecture
from benchmark.models.cnn import init_default
from benchmark import store
from benchmark.data_randomization import run
from benchmark.training import MemorizationError, label_permutation

ROOT = Path(__file__).resolve().parents[1]
# A small problem that memorizes its permuted labels in seconds: a narrow MLP on 200 digits.
FAST = ["model.name=tiny_mlp", "data.n_train=200", "training.batch_size=10", "training.epochs=8",
        "training.lr=1e-3", "training.random_lr=1e-3",
        "training.random_batch_size=10", "training.max_epochs=100", "n_images=8", "n_saved_images=4", "n_figure_images=1",
        "progress=false"]


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(784, 1024)
        self.logits = nn.Linear(1024, 10)

    def forward(self, x):
        return self.logits(F.relu(self.hidden(x.flatten(1))))


@pytest.fixture(scope="module", autouse=True)
def tiny_architecture():
    ARCHITECTURES["tiny_mlp"] = Architecture("tiny_mlp", lambda c, k: TinyMLP(),
                                             {"hidden": ("hidden",), "logits": ("logits",)}, None, init_default)
    yield
    del ARCHITECTURES["tiny_mlp"]


def cfg_for(tmp, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="data_randomization",
                      overrides=[f"results_root={tmp}", f"cache_dir={tmp.parent / 'cache'}", *FAST, *overrides])
    return common.to_experiment(cfg)


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dr")
    cfg = cfg_for(root, "method=[gradient,smoothgrad,integrated_gradients,guided_backprop,edge,noise]",
                  "method.smoothgrad.n_samples=5", "method.integrated_gradients.n_steps=8")
    return run(cfg), cfg


@pytest.mark.e2e
def test_two_models_one_table(fast_run):
    run_dir, cfg = fast_run
    df = pd.read_parquet(run_dir / "scores.parquet")
    assert set(df.test) == {"data_randomization"}
    assert dict(zip(df.stage, df.layer)) == {0: "true_labels", 1: "random_labels"}
    assert len(df) == len(cfg.method) * 2 * 4 * cfg.n_images
    assert (df[df.method == "edge"].value == 1.0).all()
    meta = json.loads((run_dir / "meta.json").read_text())
    rnd = meta["random_label_model"]
    assert rnd["train_accuracy"] >= 0.95 and rnd["memorization_gate"] == 0.95
    assert rnd["eval_accuracy"] < 0.3  # near chance on the true held-out labels
    assert meta["model"]["eval_accuracy"] > 0.6
    assert (run_dir / "figures" / "data_randomization.png").exists()
    assert store.is_finished(run_dir)


@pytest.mark.e2e
def test_gradient_maps_differ_between_true_and_random_labels(fast_run):
    run_dir, _ = fast_run
    df = pd.read_parquet(run_dir / "scores.parquet")
    rand = df[(df.stage == 1) & (df.metric == "spearman_abs")].groupby("method").value.mean()
    assert rand["gradient"] < 0.9 and rand["edge"] == 1.0


@pytest.mark.e2e
def test_same_seed_same_permutation_and_models_from_the_cache(fast_run, tmp_path):
    assert torch.equal(label_permutation(100, 0), label_permutation(100, 0))
    assert not torch.equal(label_permutation(100, 0), label_permutation(100, 1))
    run_dir, cfg = fast_run
    meta = json.loads((run_dir / "meta.json").read_text())
    again = cfg_for(tmp_path, "method=[gradient,edge]")  # another run id, same models: no retraining
    meta2 = json.loads((run(again) / "meta.json").read_text())
    assert meta2["model"]["from_cache"] and meta2["random_label_model"]["from_cache"]
    assert meta2["random_label_model"]["checkpoint"] == meta["random_label_model"]["checkpoint"]


def test_gate_not_reached_fails_and_nothing_looks_finished(tmp_path):
    cfg = cfg_for(tmp_path, "method=[gradient]", "training.max_epochs=1")
    with pytest.raises(MemorizationError, match=r"reached training accuracy 0\.\d+ after 1 epochs.*"
                                                 r"training.memorization_gate=0.95"):
        run(cfg)
    status = store.read_status(next((tmp_path / "data_randomization").iterdir()))
    assert status["state"] == "failed" and "memorization_gate" in status["error"]


@pytest.mark.e2e
def test_command_line_gate_failure_message(tmp_path):
    fast = [o for o in FAST if not o.startswith("model.name")] + ["model=mlp", "training.epochs=1"]
    cmd = [sys.executable, str(ROOT / "experiments" / "data_randomization.py"), *fast, "method=[gradient]",
           "training.max_epochs=1", f"results_root={tmp_path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 1
    assert "below training.memorization_gate=0.95; raise training.max_epochs=1" in out.stdout + out.stderr
