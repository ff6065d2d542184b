"""The command line with models and methods the suite does not define: a user's files, torchvision by name,
several Captum methods in one run."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import common
from benchmark.model_randomization import run

ROOT = Path(__file__).resolve().parents[1]

USER_MODEL = '''
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8 * 14 * 14, 10)  # registered first, called last
        self.conv = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x):
        return self.head(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


def make_net():
    return Net()
'''

USER_METHOD = '''
def saliency(model, x, target):
    x = x.detach().clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return x.grad
'''


def cli_cfg(root, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "benchmark" / "conf"), version_base="1.3"):
        cfg = compose(config_name="model_randomization",
                      overrides=["experiment=smoke", f"results_root={root}", "progress=false", *overrides])
    keys = [o.split("=", 1)[0].lstrip("+") for o in overrides]
    return common.apply_command_line(common.to_experiment(cfg), keys)


@pytest.mark.e2e
def test_a_users_model_and_method_from_their_own_folder(tmp_path):
    (tmp_path / "my_models.py").write_text(USER_MODEL)
    (tmp_path / "my_methods.py").write_text(USER_METHOD)
    cmd = [sys.executable, "-m", "benchmark", "experiment=smoke", f"results_root={tmp_path / 'results'}",
           "progress=false", "model=custom", "model.target=my_models:make_net", "model.train=true",
           "method=[gradient,custom]", "method.custom.target=my_methods:saliency"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr
    assert "derived from the forward pass" in said and "conv  conv" in said  # the units table, logged
    (run_dir,) = (tmp_path / "results" / "model_randomization").iterdir()
    df = pd.read_parquet(run_dir / "scores.parquet")
    assert set(df.method) == {"gradient", "saliency"}
    assert list(dict.fromkeys(df.layer)) == ["original", "head", "conv"]
    # the user's gradient is the suite's gradient: every score equal (to the first layer kernel's float32 rounding)
    g, s = (df[df.method == m].reset_index(drop=True)["value"] for m in ("gradient", "saliency"))
    pd.testing.assert_series_equal(g, s, atol=1e-5, check_names=False)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["model"]["units"] == {"conv": ["conv"], "head": ["head"]} and meta["model"]["units_derived"]
    assert meta["model"]["train_accuracy"] > 0.5  # trained on the digits with model.train=true


@pytest.mark.e2e
def test_a_torchvision_model_by_name_with_derived_units(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from torch.fx import symbolic_trace

    cfg = cli_cfg(tmp_path, "model=torchvision", "model.arch=resnet18", "data=skimage_photos", "data.crop=96",
                  "n_images=2", "n_saved_images=2", "method=[gradient,gradcam]", "similarity.metrics=[spearman_abs]")
    run_dir = run(cfg)
    meta = json.loads((run_dir / "meta.json").read_text())
    units = meta["model"]["units"]
    model = torchvision.models.get_model("resnet18", weights=None)
    called = [n.target for n in symbolic_trace(model).graph.nodes if n.op == "call_module"]
    assert list(units) == list(dict.fromkeys(t if t in ("conv1", "fc") else ".".join(t.split(".")[:2])
                                             for t in called if t not in ("relu", "maxpool", "avgpool", "bn1")))
    assert units["conv1"] == ["conv1", "bn1"] and meta["model"]["gradcam_layer"] == "layer4.1"
    df = pd.read_parquet(run_dir / "scores.parquet")
    assert df.stage.nunique() == len(units) + 1 and set(df.method) == {"gradient", "gradcam"}
    assert set(df.model) == {"resnet18"}


def test_a_misspelt_torchvision_name_lists_close_matches(tmp_path):
    with pytest.raises(ValueError, match="close matches: resnet18"):
        run(cli_cfg(tmp_path, "model=torchvision", "model.arch=resnet81", "data=skimage_photos"))


@pytest.mark.e2e
def test_several_captum_methods_in_one_run(tmp_path):
    cfg = cli_cfg(tmp_path, "method=[gradient,captum_saliency,captum_inputxgradient]",
                  "+method.captum_saliency.attribute_kwargs.abs=false")
    assert list(cfg.method) == ["gradient", "captum_saliency", "captum_inputxgradient"]
    df = pd.read_parquet(run(cfg) / "scores.parquet")
    assert set(df.method) == {"gradient", "captum_saliency", "captum_inputxgradient"}
    # Captum's signed Saliency is the gradient: the same scores on every metric
    g, c = (df[df.method == m].reset_index(drop=True)["value"] for m in ("gradient", "captum_saliency"))
    pd.testing.assert_series_equal(g, c, atol=1e-5, check_names=False)


@pytest.mark.e2e
def test_data_randomization_trains_two_fresh_instances_of_a_custom_model(tmp_path, monkeypatch):
    (tmp_path / "my_mlp.py").write_text(
        "from torch import nn\n\n\ndef make():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 10))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from benchmark.data_randomization import run as run_data

    with initialize_config_dir(config_dir=str(ROOT / "benchmark" / "conf"), version_base="1.3"):
        cfg = compose(config_name="data_randomization", overrides=[
            f"results_root={tmp_path / 'r'}", "model=custom", "model.target=my_mlp:make", "data.n_train=200",
            "training.batch_size=10", "training.epochs=8", "training.random_lr=1e-3", "training.random_batch_size=10",
            "n_images=4", "n_saved_images=2", "n_figure_images=1", "progress=false", "method=[gradient]"])
    run_dir = run_data(common.apply_command_line(common.to_experiment(cfg), ["method"]))
    meta = json.loads((run_dir / "meta.json").read_text())
    true, random = meta["model"], meta["random_label_model"]
    assert true["labels"] == "true" and random["labels"] == "random"
    assert random["train_accuracy"] >= 0.95 and true["eval_accuracy"] > 0.5 > random["eval_accuracy"] + 0.2
    assert true["checkpoint"] != random["checkpoint"]
    df = pd.read_parquet(run_dir / "scores.parquet")
    assert dict(zip(df.stage, df.layer)) == {0: "true_labels", 1: "random_labels"}
    assert (df[df.stage == 1].value < 0.99).all()  # two different models, not one instance twice


def test_two_custom_methods_under_names_of_their_own(tmp_path, monkeypatch):
    """``+method.<name>.target=module:fn`` adds a custom method named <name>: several in one run."""
    from conftest import smoke_cfg

    (tmp_path / "two_methods.py").write_text(
        "import torch\n\n"
        "def plain(model, x, target):\n"
        "    x = x.clone().requires_grad_(True)\n"
        "    out = model(x).gather(1, target[:, None]).sum()\n"
        "    return torch.autograd.grad(out, x)[0]\n\n"
        "def squared(model, x, target):\n"
        "    return plain(model, x, target) ** 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = smoke_cfg(tmp_path / "results", "method=[gradient]", "+method.plain.target=two_methods:plain",
                    "+method.squared.target=two_methods:squared", "+method.squared.signed=false", "n_images=2",
                    "n_saved_images=2")
    scores = pd.read_parquet(run(cfg) / "scores.parquet")
    assert set(scores.method) == {"gradient", "plain", "squared"}
    a = scores[(scores.method == "plain")].sort_values(["stage", "metric", "image"]).value.to_numpy()
    b = scores[(scores.method == "gradient")].sort_values(["stage", "metric", "image"]).value.to_numpy()
    assert abs(a - b).max() < 1e-4  # the same gradient, computed by the user's function
    with pytest.raises(ValueError, match=r"method\.nope\.target='two_methods:missing'"):
        run(smoke_cfg(tmp_path / "results", "+method.nope.target=two_methods:missing"))
