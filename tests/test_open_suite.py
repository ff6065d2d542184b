"""Any model, any method, from Python: ``benchmark.sanity_check``, derived units, external methods, bad input."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import benchmark
from benchmark.models.derive import probe

ROOT = Path(__file__).resolve().parents[1]


class UserNet(nn.Module):
    """A user's model: registration order differs from call order (head registered first), F.relu."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.head = nn.Linear(8 * 7 * 7, classes)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 8, 3, padding=1), nn.MaxPool2d(2))

    def forward(self, x):
        return self.head(F.relu(self.features(x)).flatten(1))


def images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g)


def test_units_follow_the_forward_pass_not_registration():
    d = probe(UserNet(), images(2))
    # containers opened, the BatchNorm joins the convolution it follows, the head (registered first) last
    assert d.units == {"features.0": ("features.0", "features.1"), "features.3": ("features.3",), "head": ("head",)}
    assert d.gradcam_layer == "features.3"


@pytest.mark.e2e
def test_derived_units_of_torchvision_models_match_the_traced_call_order():
    torchvision = pytest.importorskip("torchvision")
    from torch.fx import symbolic_trace

    for arch, size in (("resnet18", 64), ("inception_v3", 299)):
        kwargs = {"aux_logits": True, "init_weights": False} if arch == "inception_v3" else {}
        model = torchvision.models.get_model(arch, weights=None, num_classes=10, **kwargs).eval()
        units = probe(model, torch.rand(1, 3, size, size)).units
        # independent: the order torch.fx records the modules the forward calls
        traced = [n.target for n in symbolic_trace(model).graph.nodes if n.op == "call_module"]
        first = []
        for target in traced:
            owner = next((u for u, paths in units.items() for p in paths if target == p or target.startswith(p + ".")),
                         None)
            if owner is not None and owner not in first:
                first.append(owner)
        assert first == list(units), arch
        if arch == "inception_v3":  # registered between Mixed_6e and Mixed_7a, never called in eval
            assert "AuxLogits" not in units and list(units)[-1] == "fc"
            assert list(units).index("Mixed_7a") == list(units).index("Mixed_6e") + 1
        else:
            assert list(units)[:3] == ["conv1", "layer1.0", "layer1.1"] and units["conv1"] == ("conv1", "bn1")


def test_sanity_check_with_a_user_model_and_method_restores_the_model():
    model = UserNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()

    def my_saliency(model, x, target):
        x = x.detach().clone().requires_grad_(True)
        model(x).gather(1, target[:, None]).sum().backward()
        return x.grad

    result = benchmark.sanity_check(model, images(), test="cascading", methods=["gradient", my_saliency])
    df = result.scores
    assert set(df["method"]) == {"gradient", "my_saliency"}
    assert sorted(df["stage"].unique()) == [0, 1, 2, 3] and set(df["test"]) == {"cascading"}
    # the same arithmetic: the user's gradient equals the suite's, value for value
    a = df[df.method == "gradient"].reset_index(drop=True)["value"]
    b = df[df.method == "my_saliency"].reset_index(drop=True)["value"]
    np.testing.assert_allclose(a, b, atol=1e-5)  # the suite's first-layer kernel rounds differently in float32
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_result_write_is_a_run_folder(tmp_path):
    result = benchmark.sanity_check(UserNet(), (images(), torch.arange(4)), test="independent",
                                    methods=["gradient", "edge"])
    out = result.write(tmp_path / "run")
    for name in ("scores.parquet", "calibration.parquet", "maps.npz", "meta.json", "report.html", "status.json"):
        assert (out / name).is_file(), name
    pd.testing.assert_frame_equal(pd.read_parquet(out / "scores.parquet"), result.scores, check_dtype=False)
    from benchmark import store

    assert store.is_finished(out)
    assert result.meta["model"]["units_derived"] is True


@pytest.mark.e2e
def test_the_api_and_the_command_line_give_bitwise_equal_tables(run_smoke):
    """The command line's trained model and images, given to sanity_check: the same table, value for value."""
    import yaml

    from benchmark.methods import build_method
    from benchmark.models import get_architecture

    run_dir = run_smoke
    cli = pd.read_parquet(run_dir / "scores.parquet")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    import json

    meta = json.loads((run_dir / "meta.json").read_text())
    model = get_architecture("cnn").build(1, 10)
    model.load_state_dict(torch.load(meta["model"]["checkpoint"], weights_only=True))
    from benchmark.config import DataConfig
    from benchmark.data import load_dataset

    data = load_dataset(DataConfig())
    n = cfg["n_images"]
    methods = [build_method(name, settings) for name, settings in cfg["method"].items()]
    api = benchmark.sanity_check(model, (data.eval_images[:n], data.eval_labels[:n]), test="cascading",
                                 methods=methods, model_name="cnn", data_name="digits", n_images=n,
                                 n_saved_images=cfg["n_saved_images"], num_threads=None).scores
    cols = [c for c in cli.columns if c != "run_id"]
    pd.testing.assert_frame_equal(api[cols].reset_index(drop=True), cli[cols].reset_index(drop=True))


@pytest.fixture(scope="module")
def run_smoke(tmp_path_factory):
    from hydra import compose, initialize_config_dir

    import common
    from benchmark.model_randomization import run

    root = tmp_path_factory.mktemp("smoke")
    with initialize_config_dir(config_dir=str(ROOT / "benchmark" / "conf"), version_base="1.3"):
        cfg = compose(config_name="model_randomization",
                      overrides=["experiment=smoke", f"results_root={root}", "progress=false"])
    return run(common.to_experiment(cfg))


def _raises(match, **kwargs):
    kwargs.setdefault("methods", ["gradient"])
    model = kwargs.pop("model", UserNet())
    data = kwargs.pop("data", images())
    with pytest.raises(ValueError, match=match):
        benchmark.sanity_check(model, data, **kwargs)


def test_bad_input_is_refused_before_compute(monkeypatch):
    import benchmark.core

    def no_compute(*a, **k):
        raise AssertionError("stages started before the input was checked")

    monkeypatch.setattr(benchmark.core, "score_stages", no_compute)
    _raises("does not take \\(model, x, target\\)", methods=[lambda model, x: x])
    _raises("returned a map of shape", methods=[lambda model, x, t: x[:, :, :3]])
    _raises("NaN or Inf", methods=[lambda model, x, t: x * float("nan")])
    _raises("not a torch.Tensor map", methods=[lambda model, x, t: x.numpy()])
    _raises("has no parameters", model=nn.Sequential(nn.Flatten(), nn.ReLU()))
    _raises("rejects inputs of shape \\(3, 32, 32\\)", data=torch.rand(2, 3, 32, 32))
    _raises("model.units.a has 'nope'", units={"a": ["nope"]})
    _raises("model.units is empty", units={})
    _raises("is not a registered test", test="cascade")
    _raises("is not a setting", n_imgs=3)
    _raises("selected twice", methods=["gradient", "gradient"])
    _raises("needs the random-label model", test="data_randomization")
    _raises("NaN or Inf values", data=images() * float("nan"))
    _raises("is not a known method", methods=["gradientt"])


def test_data_randomization_with_two_models():
    a, b = UserNet(), UserNet()
    torch.manual_seed(1)
    for p in b.parameters():
        p.data.normal_()
    result = benchmark.sanity_check(a, images(), test="data_randomization", random_model=b, methods=["gradient"])
    assert sorted(result.scores["layer"].unique()) == ["random_labels", "true_labels"]
    assert set(result.scores["test"]) == {"data_randomization"}


@pytest.mark.e2e
def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Check your own model in ten lines"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len([line for line in block.splitlines() if line.strip() and not line.startswith("#")]) <= 16
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "out" / "scores.parquet").is_file()
    assert {"gradient", "smoothgrad", "my_saliency"} <= set(namespace["result"].scores["method"])


def test_derived_units_empty_when_the_forward_calls_no_module():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 10)

        def forward(self, x):  # reads the weights, never calls the module
            return F.linear(x.flatten(1), self.lin.weight, self.lin.bias)

    _raises("calls none of its parameter-owning modules", model=Functional())


def test_data_randomization_with_a_train_fn_checks_the_memorization_gate():
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    y = torch.arange(64) % 10
    seen = {}

    def train_fn(images, labels, steps=300):
        seen["labels"] = labels
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            opt.step()
        return model

    trained = train_fn(x, y)
    result = benchmark.sanity_check(trained, x[:4], test="data_randomization", train_fn=train_fn, train_data=(x, y),
                                    methods=["gradient"])
    assert sorted(set(result.scores.layer)) == ["random_labels", "true_labels"]
    assert not torch.equal(seen["labels"], y) and sorted(seen["labels"].tolist()) == sorted(y.tolist())
    from benchmark.training import MemorizationError

    with pytest.raises(MemorizationError, match="memorization_gate"):
        benchmark.sanity_check(trained, x[:4], test="data_randomization", train_data=(x, y), methods=["gradient"],
                               train_fn=lambda a, b: train_fn(a, b, steps=1))
