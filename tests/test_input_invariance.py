"""The input invariance test (Kindermans et al. 2019): f2, the first layer absorbing the shift, reproduces f1;
the model is restored; Kindermans et al.'s outcomes per method; the refusals.

References: f2's first layer against a float64 convolution of the unshifted input (``F.conv2d`` / ``F.linear``),
and the test's outcomes against the paper's claims (gradient, SmoothGrad and IG from a shifted baseline invariant;
gradient x input and IG from a zero baseline not), on the suite's own CNN and MLP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import benchmark
from benchmark import store
from benchmark.checks import TESTS
from benchmark.checks import input_invariance as ii
from benchmark.config import ExperimentConfig, InputInvarianceConfig, VerdictConfig, hash_omitted
from benchmark.input_shift import ShiftAbsorbed, absorbed, equivalence, first_layer
from benchmark.methods import IntegratedGradients, SmoothGrad
from benchmark.methods.integrated_gradients import ShiftedIntegratedGradients
from benchmark.models.cnn import MnistCNN
from benchmark.models.mlp import MnistMLP
from benchmark.report.analysis import analyze

from conftest import TinyCNN, smoke_cfg

ROOT = Path(__file__).resolve().parents[1]


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _blank_corner(x: torch.Tensor) -> torch.Tensor:
    """Images with a blank (zero) top-left quarter: windows there hold the constant shift in f2's input."""
    x = x.clone()
    x[:, :, : x.shape[2] // 2, : x.shape[3] // 2] = 0.0
    return x


# ----- f2 reproduces f1 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel,stride,padding,bias,mode", [
    (3, 1, 1, True, "zeros"), (3, 1, 1, False, "zeros"), (5, 1, 2, True, "zeros"), (5, 2, 2, False, "zeros"),
    (3, 3, 2, True, "zeros"), (3, 2, 1, True, "reflect"), (4, 1, 0, True, "zeros")])
def test_a_convolutional_first_layer_absorbs_the_shift_exactly_at_the_borders(kernel, stride, padding, bias, mode):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, kernel, stride=stride, padding=padding, bias=bias, padding_mode=mode)
    x = _blank_corner(torch.rand(4, 3, 16, 16))
    m = torch.tensor([0.4, -1.5, 3.0]).view(-1, 1, 1)
    layer = ShiftAbsorbed(conv, m.expand_as(x[0]))
    with torch.no_grad():
        got = layer(x + m)
        want = conv(x)
        reference = F.conv2d(F.pad(x.double(), [padding] * 4, mode="constant" if mode == "zeros" else mode),
                             conv.weight.double(), None if conv.bias is None else conv.bias.double(), stride)
    np.testing.assert_allclose(got.double().numpy(), reference.numpy(), rtol=0, atol=2e-6)
    assert (got - want).abs().max() <= 2e-6
    # a window that holds the shift only (the blank corner, the zero-padded border included): bit for bit
    blank = F.conv2d(F.pad((x != 0).any(1, keepdim=True).float(), [padding] * 4), torch.ones(1, 1, kernel, kernel),
                     stride=stride)[:, 0] == 0
    assert blank.any() and torch.equal(got.permute(1, 0, 2, 3)[:, blank], want.permute(1, 0, 2, 3)[:, blank])


@pytest.mark.parametrize("bias", [True, False])
def test_a_linear_first_layer_gets_the_bias_b_minus_w_m(bias):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10, bias=bias), nn.ReLU(), nn.Linear(10, 3))
    x = torch.rand(5, 3, 4, 4)
    m = torch.tensor([0.5, -0.2, 2.0]).view(-1, 1, 1)
    first = first_layer(model, x)
    assert first.path == "1" and first.in_shape == (48,) and first.before == ("0",) and first.has_bias == bias
    with absorbed(model, first, m.expand_as(x[0])) as f2:
        moved = f2[1].bias_moved.double()
        w = model[1].layer.weight.double()
        want = -w @ m.expand_as(x[0]).reshape(-1).double() + (model[1].layer.bias.double() if bias else 0)
        np.testing.assert_allclose(moved.numpy(), want.detach().numpy(), rtol=1e-6)
        with torch.no_grad():
            z2 = f2[1](f2[0](x + m))
    with torch.no_grad():
        z1 = model[1](model[0](x))
    assert isinstance(model[1], nn.Linear) and (z2 - z1).abs().max() <= 1e-5 * z1.abs().max()
    assert equivalence(model, first, m.expand_as(x[0]), x).relative < 1e-6


@pytest.mark.parametrize("build", [lambda: MnistCNN(1, 10), lambda: MnistMLP(784, 10)], ids=["cnn", "mlp"])
def test_the_suites_models_are_reproduced_for_shifts_of_several_sizes(build, digits_batch):
    torch.manual_seed(0)
    model = build().eval()
    x = digits_batch[0]
    first = first_layer(model, x)
    assert first.path in ("conv1.conv", "hidden1")
    for value in (0.13, -1.0, 10.0, 100.0):
        eq = equivalence(model, first, torch.full_like(x[0], value), x)
        assert eq.finite and eq.relative < ii.EQUIVALENCE_RTOL, (value, eq)


# ----- the model as it was ---------------------------------------------------------------------------------------

def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], v) for k, v in state.items())


def test_absorbed_restores_the_first_layer_also_after_an_error():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    conv, state = model.conv1, _state(model)
    x = torch.rand(2, 1, 28, 28)
    first = first_layer(model, x)
    with pytest.raises(RuntimeError, match="inside"):
        with absorbed(model, first, torch.full_like(x[0], 0.3)):
            assert isinstance(model.conv1, ShiftAbsorbed)
            raise RuntimeError("inside")
    assert model.conv1 is conv and _same(model, state) and _hooks(model) == 0


METHODS = ["gradient", SmoothGrad(n_samples=4), "gradient_x_input", IntegratedGradients(n_steps=8),
           ShiftedIntegratedGradients(n_steps=8), "guided_backprop", "edge", "noise"]
KW = dict(quiet=True, progress=False, conv_input_grad="aten", similarity={"metrics": list(ii.DEFAULT_METRICS)})


def test_the_run_restores_the_model_bit_for_bit_and_leaves_no_hooks(digits_batch):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    state, conv = _state(model), model.conv1
    benchmark.sanity_check(model, digits_batch, test="input_invariance", methods=["gradient", "edge"], **KW)
    assert _same(model, state) and _hooks(model) == 0 and model.conv1 is conv


def test_an_error_in_the_shifted_stage_restores_the_model(digits_batch, monkeypatch):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    state, conv = _state(model), model.conv1

    def broken(*a, **k):
        assert isinstance(model.conv1, ShiftAbsorbed)  # inside the shifted stage's context
        raise RuntimeError("engine failed")

    monkeypatch.setattr(ii, "engine_for", broken)
    with pytest.raises(RuntimeError, match="engine failed"):
        benchmark.sanity_check(model, digits_batch, test="input_invariance", methods=["gradient"], **KW)
    assert _same(model, state) and _hooks(model) == 0 and model.conv1 is conv


# ----- Kindermans et al.'s outcomes ------------------------------------------------------------------------------

INVARIANT = {"gradient", "smoothgrad", "integrated_gradients_shifted", "guided_backprop", "edge", "noise"}
NOT_INVARIANT = {"gradient_x_input", "integrated_gradients"}


@pytest.mark.parametrize("build", [lambda: MnistCNN(1, 10), lambda: MnistMLP(784, 10)], ids=["cnn", "mlp"])
def test_gradient_and_smoothgrad_are_invariant_gradient_x_input_and_zero_baseline_ig_are_not(build, digits_batch):
    torch.manual_seed(0)
    model = build().eval()
    r = benchmark.sanity_check(model, digits_batch, test="input_invariance", methods=METHODS,
                               input_invariance={"shift": -1.0}, **KW)
    s = r.scores
    assert set(s.test) == {"input_invariance"} and list(dict.fromkeys(s.layer)) == ["original", "shifted"]
    assert (s[s.stage == 0].target.to_numpy() == s[s.stage == 1].target.to_numpy()).all()  # the same classes
    at1 = s[s.stage == 1].groupby(["method", "metric"]).value.mean().unstack()
    assert (at1.loc[sorted(INVARIANT), ii.METRIC] <= 1e-4).all(), at1
    assert (at1.loc[sorted(INVARIANT), "spearman"] >= 0.999).all(), at1
    assert (at1.loc[sorted(NOT_INVARIANT), ii.METRIC] > 0.05).all(), at1
    assert (at1.loc[sorted(NOT_INVARIANT), "spearman_abs"] < 0.95).all(), at1
    v = analyze(s, r.calibration, r.meta, VerdictConfig()).verdicts
    verdict = v[v.metric == ii.METRIC].set_index("method").verdict
    assert set(verdict[sorted(INVARIANT)]) == {"pass"} and set(verdict[sorted(NOT_INVARIANT)]) == {"fail"}
    assert set(v[v.method.isin(INVARIANT)].verdict) == {"pass"}  # the similarities read the same way
    meta = r.meta["input_invariance"]
    assert meta["shift"] == [-1.0] and meta["baselines"] == {"integrated_gradients_shifted": -1.0}
    assert meta["equivalence"]["relative"] < ii.EQUIVALENCE_RTOL
    assert meta["map_difference"]["gradient"]["max"] < 1e-5 and meta["map_difference"]["gradient_x_input"]["max"] > 0.1


def test_the_mean_shift_is_the_data_mean_per_channel_and_per_channel_baselines(digits_batch):
    from benchmark.data import Dataset

    x = torch.rand(6, 3, 8, 8)
    x[:, 1] += 1.0
    data = Dataset("d", x, torch.zeros(6).long(), x[:2], torch.zeros(2).long(), 2)
    values, source = ii.shift_of(InputInvarianceConfig(), data)
    torch.testing.assert_close(values, x.mean((0, 2, 3)))
    assert source.startswith("mean of the training split")
    assert ii.shift_of(InputInvarianceConfig(shift=[1, 2, 3]), data)[0].tolist() == [1.0, 2.0, 3.0]
    assert ii.shift_of(InputInvarianceConfig(shift=0.5), data)[0].tolist() == [0.5] * 3
    ig = ShiftedIntegratedGradients(n_steps=4).with_shift((0.5, 1.0, 1.5))
    assert ig.baseline == (0.5, 1.0, 1.5) and ig.name == "integrated_gradients_shifted"
    base = ig.primitives()[0].segments([ig.primitives()[0]], 0, x[0], 0, 0, False)[0].make()[0][0]
    assert base[:, 0, 0].tolist() == [0.5, 1.0, 1.5]  # the path's first point is the baseline image


def test_a_first_layer_without_bias_gets_one_and_the_run_says_so(digits_batch, caplog):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    model.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    with caplog.at_level(logging.WARNING, logger="benchmark"):
        r = benchmark.sanity_check(model, digits_batch, test="input_invariance", methods=["gradient"], **KW)
    assert r.meta["input_invariance"]["first_layer"]["bias_added"] is True and "has no bias" in caplog.text
    assert "has no bias: f2 gets one" in TESTS["input_invariance"].report_text(r.meta).compares
    # one image has a max-pooling window of two equal values that f1 and f2 round apart (a tie decided by float
    # rounding, the gradient undefined there): a few pixels move, the mean difference stays far below the tolerance
    assert r.scores[(r.scores.stage == 1) & (r.scores.metric == ii.METRIC)].value.max() <= 1e-3
    v = analyze(r.scores, r.calibration, r.meta, VerdictConfig()).verdicts
    assert v.set_index("metric").verdict[ii.METRIC] == "pass"


def test_the_verdict_reads_invariance_not_change():
    rows = pd.DataFrame([
        {"method": "a", "metric": ii.METRIC, "mean": 0.0, "ci_low": 0.0, "ci_high": 0.0},
        {"method": "b", "metric": ii.METRIC, "mean": 0.2, "ci_low": 0.1, "ci_high": 0.3},
        {"method": "c", "metric": ii.METRIC, "mean": 0.001, "ci_low": 0.0, "ci_high": 0.004},
        {"method": "a", "metric": "spearman", "mean": 1.0, "ci_low": 0.9999, "ci_high": 1.0},
        {"method": "b", "metric": "spearman", "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6},
        {"method": "a", "metric": "entropy_change", "mean": 0.0, "ci_low": 0.0, "ci_high": 0.0},
        {"method": "d", "metric": ii.METRIC, "mean": np.nan, "ci_low": np.nan, "ci_high": np.nan}])
    rows["verdict"], rows["level"], rows["why"] = "not_applicable", np.nan, ""
    v = ii.judge(rows, 1e-3)
    assert v.verdict.tolist() == ["pass", "fail", "inconclusive", "pass", "fail", "not_applicable", "inconclusive"]
    assert v.level.tolist()[:5] == [1e-3, 1e-3, 1e-3, 1 - 1e-3, 1 - 1e-3]


def test_the_differences_are_the_mean_and_largest_of_the_scaled_maps():
    a, b = np.zeros((3, 2, 2)), np.zeros((3, 2, 2))
    b[1, 0, 1] = 0.5
    b[2, 1, 1] = np.inf
    for fn, second in ((ii.mean_abs_difference, 0.125), (ii.max_abs_difference, 0.5)):
        s = fn(a, b)
        assert s.value[:2].tolist() == [0.0, second] and np.isnan(s.value[2])
        assert s.nan_reason == [None, None, "non_finite_map"]


# ----- refusals, before compute ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shift,tolerance,message", [
    (float("nan"), 1e-3, "input_invariance.shift=nan is not a finite number"),
    (1e38, 1e-3, "input_invariance.shift=1e+38 is too large"),
    ("median", 1e-3, "input_invariance.shift='median' is not a shift; use mean"),
    ([], 1e-3, "input_invariance.shift=[] is not a shift"),
    (True, 1e-3, "input_invariance.shift=True is not a shift"),
    (0, 1e-3, "input_invariance.shift=0 leaves the input unchanged"),
    (1.0, 0.0, "input_invariance.tolerance=0.0 must be a number in (0, 1)"),
    (1.0, 1.5, "input_invariance.tolerance=1.5 must be a number in (0, 1)")])
def test_bad_settings_fail_with_the_key_the_value_and_the_fix(shift, tolerance, message):
    with pytest.raises(ValueError, match=_escaped(message)):
        ii.check_settings(InputInvarianceConfig(shift=shift, tolerance=tolerance))


def _escaped(text: str) -> str:
    return re.escape(text)


def test_a_shift_per_channel_must_fit_the_models_channels(tmp_path):
    from benchmark.core import plan

    with pytest.raises(ValueError, match=r"input_invariance.shift=\[0.1, 0.2\] has 2 values and the model's input "
                                         r"has 1 channel"):
        plan(smoke_cfg(tmp_path, "test=input_invariance", "input_invariance.shift=[0.1,0.2]"), check=ii.InputInvariance())


class Normalized(nn.Module):
    """(x - 0.5) / 0.25 in forward before the first convolution: the input is changed before its first layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 28, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv((x - 0.5) / 0.25)).flatten(1))


class BatchNormFirst(Normalized):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(self.bn(x))).flatten(1))


class Twice(Normalized):
    def forward(self, x):
        return self.fc(torch.relu(self.conv(x) + self.conv(x)).flatten(1))


class SkipFromInput(Normalized):
    """The input reaches the output besides the first layer: f2's bias cannot absorb the shift."""

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1)) + 10.0 * x.flatten(1)[:, :3]


@pytest.mark.parametrize("cls,message", [
    (Normalized, "changes it before 'conv' (Conv2d; modules called before it: none: a computation in forward())"),
    (BatchNormFirst, "changes it before 'conv' (Conv2d; modules called before it: bn (BatchNorm2d))"),
    (Twice, "calls it more than once per forward pass")])
def test_models_whose_input_does_not_reach_the_first_layer_unchanged_are_refused(cls, message, digits_batch):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=_escaped(message)):
        first_layer(cls().eval(), digits_batch[0], "model 'given'")


def _no_maps(monkeypatch):
    from benchmark.engine import Engine

    def explain(*a, **k):
        raise AssertionError("maps computed before the model was checked")

    monkeypatch.setattr(Engine, "explain", explain)


def test_a_skip_connection_from_the_input_fails_the_equivalence_before_any_map(digits_batch, monkeypatch):
    torch.manual_seed(0)
    _no_maps(monkeypatch)
    with pytest.raises(ValueError, match=r"f2 \(model 'skipfrominput' with the shift moved into the bias of 'conv'\) "
                                         r"does not reproduce the trained model: max \|f2\(x \+ m\) - f1\(x\)\|"):
        benchmark.sanity_check(SkipFromInput().eval(), digits_batch, test="input_invariance", methods=["gradient"], **KW)


def test_a_shift_that_makes_the_first_layer_non_finite_is_refused_before_any_map(digits_batch, monkeypatch):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    with torch.no_grad():
        model.conv1.weight.mul_(1e35)
    _no_maps(monkeypatch)
    with pytest.raises(ValueError, match=r"input_invariance.shift=10000.0 makes the first layer 'conv1' non-finite"):
        benchmark.sanity_check(model, digits_batch, test="input_invariance", methods=["gradient"],
                               input_invariance={"shift": 1e4}, **KW)


def test_the_settings_leave_run_ids_unchanged_at_their_defaults():
    cfg = ExperimentConfig()
    assert {("input_invariance", "shift"), ("input_invariance", "tolerance")} <= set(hash_omitted(cfg))
    plain = {k: v for k, v in store.to_plain(cfg).items() if k not in store.NON_RESULT_KEYS}
    del plain["input_invariance"]  # the config as it was before the group existed
    for group, key in hash_omitted(cfg):
        if group in plain:
            plain[group].pop(key, None)
            if not plain[group]:
                del plain[group]
    before = hashlib.sha256(json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
    assert store.config_hash(cfg) == before
    other = ExperimentConfig(input_invariance=InputInvarianceConfig(shift=1.0))
    assert store.config_hash(other) != before


def test_the_command_line_selects_the_test_its_methods_and_metrics(tmp_path):
    from benchmark.model_randomization import plan

    p = plan(smoke_cfg(tmp_path, "test=input_invariance"))
    assert p.test == "input_invariance" and p.run_dir.parent.name == "model_randomization"
    assert [m.name for m in p.methods] == list(ii.DEFAULT_METHODS)
    assert p.cfg.similarity.metrics == list(ii.DEFAULT_METRICS) and [s.layer for s in p.stages] == ["original",
                                                                                                    "shifted"]
    chosen = plan(smoke_cfg(tmp_path, "test=input_invariance", "method=[gradient,edge]", "similarity.metrics=[ssim]"))
    assert [m.name for m in chosen.methods] == ["gradient", "edge"] and chosen.cfg.similarity.metrics == ["ssim"]
    mlp = plan(smoke_cfg(tmp_path, "test=input_invariance", "model=mlp"))
    assert "gradcam" not in [m.name for m in mlp.methods]  # skipped: the MLP has no convolution


@pytest.mark.e2e
def test_command_line_run(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "model_randomization.py"), "test=input_invariance",
           "experiment=smoke", "n_images=4", "progress=false", f"results_root={tmp_path / 'results'}",
           f"cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "results" / "model_randomization").iterdir()
    assert "_input_invariance_" in run_dir.name
    scores = pd.read_parquet(run_dir / "scores.parquet")
    assert set(scores.test) == {"input_invariance"} and set(scores.method) == set(ii.DEFAULT_METHODS)
    assert list(dict.fromkeys(scores.layer)) == ["original", "shifted"] and len(set(scores.image)) == 4
    summary = pd.read_csv(run_dir / "summary.csv")
    judged = summary[(summary.stage == 1) & (summary.metric == ii.METRIC)].set_index("method").verdict
    assert set(judged[["gradient", "smoothgrad", "integrated_gradients_shifted", "guided_backprop", "edge"]]) == {"pass"}
    assert set(judged[["gradient_x_input", "integrated_gradients"]]) == {"fail"}
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["test"] == "input_invariance" and meta["input_invariance"]["first_layer"]["path"] == "conv1.conv"
    assert meta["input_invariance"]["equivalence"]["relative"] < ii.EQUIVALENCE_RTOL
    html = (run_dir / "report.html").read_text()
    assert "What this test compares" in html and "here pass means invariant" in html
    assert "edge (control; expected pass)" in html
    # the report across runs judges the run by the test's own rule and expects the test's control verdicts
    report = subprocess.run([sys.executable, str(ROOT / "experiments" / "report.py"),
                             f"root={tmp_path / 'results'}"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    across = pd.read_csv(tmp_path / "results" / "report" / "verdicts.csv")
    mine = across[(across.metric == ii.METRIC) & (across.test == "input_invariance")].set_index("method").verdict
    assert mine.to_dict() == judged.to_dict()
    assert "edge (control; expected pass)" in (tmp_path / "results" / "report" / "report.md").read_text()
