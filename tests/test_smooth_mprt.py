"""The smooth MPRT (Hedström et al. 2023, sMPRT): its scores against an independent computation and Quantus.

- Independent: autograd's gradients of each bottom-up stage's model (the suite's re-initialization), averaged over
  the noisy copies written out here (sd = 0.1 (max - min) per image, z from ``rng.generator(seed, "smooth_mprt",
  image, copy)``, the last copy the image itself), then ``scipy.stats.spearmanr`` per image.
- Quantus' ``SmoothMPRT``: its randomized models are its own (each layer's ``reset_parameters`` after
  ``torch.manual_seed``) and its noise NumPy's global generator, so it cannot give the suite's numbers on its own.
  Given the suite's stage models (its layer generator replaced) and the suite's standard normal draws (its
  ``np.random.randn`` replaced), the rest is Quantus' definition (noise sd, copies, the noise-free last copy,
  the mean, the absolute value, normalization, Spearman) and gives the suite's ``spearman_abs`` at
  ``similarity.percentile=100`` (at 99 the suite clips the top 1% of the ABS map, which then tie).
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

import benchmark
from benchmark import rng, store
from benchmark.checks.smooth_mprt import DEFAULT_METHODS, check_settings, noisy_copy
from benchmark.config import ExperimentConfig, SmoothMPRTConfig, hash_omitted
from benchmark.methods.smoothgrad import SmoothGrad
from benchmark.randomization import randomized
from benchmark.runtime import torch_threads

from conftest import ROOT, TinyCNN, smoke_cfg

N = 4
KW = dict(quiet=True, progress=False, conv_input_grad="aten")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one torch thread is the fastest, and what the machine's other work leaves (restored after)."""
    with torch_threads(1):
        yield


def _copies(x: torch.Tensor, n: int, level: float = 0.1, seed: int = 0) -> list[torch.Tensor]:
    """The n inputs of each map, written out: n - 1 noisy copies, then the images themselves."""
    out = []
    for j in range(n - 1):
        z = torch.stack([torch.randn(tuple(x.shape[1:]), generator=rng.generator(seed, "smooth_mprt", i, j))
                         for i in range(len(x))])
        sd = level * (x.flatten(1).max(1).values - x.flatten(1).min(1).values)
        out.append(x + sd.view(-1, 1, 1, 1) * z)
    return out + [x]


def _mean_gradient(model: torch.nn.Module, inputs: list[torch.Tensor], target: torch.Tensor) -> np.ndarray:
    total = 0.0
    for xi in inputs:
        xx = xi.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xx)[torch.arange(len(xi)), target].sum(), xx)
        total = total + g.float().double()  # each copy's map in float32, summed in float64, as the suite does
    return (total / len(inputs)).numpy().reshape(len(target), -1)


def _run(model, batch, **settings):
    return benchmark.sanity_check(model, batch, test="smooth_mprt", **{**KW, **settings})


def _values(scores: pd.DataFrame, metric: str, stage: int) -> np.ndarray:
    s = scores[(scores.metric == metric) & (scores.stage == stage)].sort_values("image")
    return s.value.to_numpy()


# ----- pieces -----------------------------------------------------------------------------------------------------

def test_noisy_copy_is_per_image_and_does_not_depend_on_the_batch():
    x = torch.rand(5, 1, 8, 8)
    ids = torch.arange(10, 15)
    whole = noisy_copy(x, ids, 0, 3, 0.1)
    part = noisy_copy(x[2:4], ids[2:4], 0, 3, 0.1)
    assert torch.equal(whole[2:4], part)
    assert not torch.equal(whole, noisy_copy(x, ids, 0, 4, 0.1))  # another copy, other draws
    sd = 0.1 * (x.flatten(1).max(1).values - x.flatten(1).min(1).values)
    z = (whole - x) / sd.view(-1, 1, 1, 1)
    torch.testing.assert_close(z[1], torch.randn(1, 8, 8, generator=rng.generator(0, "smooth_mprt", 11, 3)))


@pytest.mark.parametrize("n,level,fragment", [
    (0, 0.1, "smooth_mprt.n_samples=0 must be a positive whole number"),
    (-2, 0.1, "smooth_mprt.n_samples=-2 must be a positive whole number"),
    (2.5, 0.1, "smooth_mprt.n_samples=2.5 must be a positive whole number"),
    (True, 0.1, "smooth_mprt.n_samples=True must be a positive whole number"),
    (50, -0.1, "smooth_mprt.noise_level=-0.1 must be >= 0"),
    (50, float("nan"), "smooth_mprt.noise_level=nan is not a finite number"),
    (50, float("inf"), "smooth_mprt.noise_level=inf is not a finite number"),
    (50, "loud", "smooth_mprt.noise_level='loud' is not a finite number"),
])
def test_bad_settings_name_the_key_the_value_and_the_fix(n, level, fragment):
    with pytest.raises(ValueError, match="e.g. "):
        check_settings(SmoothMPRTConfig(n_samples=n, noise_level=level))
    with pytest.raises(ValueError) as info:
        check_settings(SmoothMPRTConfig(n_samples=n, noise_level=level))
    assert fragment in str(info.value)
    check_settings(SmoothMPRTConfig(n_samples=1, noise_level=0.0))  # both edges are allowed


def test_bad_settings_fail_before_compute(monkeypatch):
    import benchmark.api as api

    monkeypatch.setattr(api, "compute", lambda *a, **k: pytest.fail("computed"))
    with pytest.raises(ValueError, match=r"smooth_mprt\.n_samples=1\.5"):
        _run(TinyCNN().eval(), torch.rand(4, 1, 28, 28), methods=["gradient"], smooth_mprt={"n_samples": 1.5})


def test_command_line_selects_bottom_up_stages_and_the_cheap_default_methods(tmp_path):
    from benchmark.model_randomization import plan

    p = plan(smoke_cfg(tmp_path, "test=smooth_mprt"))
    assert p.test == "smooth_mprt" and "_smooth_mprt_" in p.run_id and p.run_dir.parent.name == "model_randomization"
    assert [s.layer for s in p.stages] == ["original", "conv1", "conv2", "fc1", "logits"]
    assert p.stages[-1].units == ("conv1", "conv2", "fc1", "logits")  # the last stage: fully randomized
    assert [m.name for m in p.methods] == list(DEFAULT_METHODS)
    chosen = smoke_cfg(tmp_path, "test=smooth_mprt", "method=[gradient,smoothgrad]")
    chosen.skip_unsupported_methods = False  # what the runner sets when method= is given
    assert [m.name for m in plan(chosen).methods] == ["gradient", "smoothgrad"]


def test_settings_at_their_defaults_leave_run_ids_unchanged():
    cfg = ExperimentConfig()
    omitted = hash_omitted(cfg)
    assert {("smooth_mprt", "n_samples"), ("smooth_mprt", "noise_level")} <= set(omitted)
    plain = {k: v for k, v in store.to_plain(cfg).items() if k not in store.NON_RESULT_KEYS}
    for group, key in omitted:  # the config as it was before the keys (and their groups) existed
        del plain[group][key]
        if not plain[group]:
            del plain[group]
    assert "smooth_mprt" not in plain
    before = hashlib.sha256(json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
    assert store.config_hash(cfg) == before
    cfg.smooth_mprt.n_samples = 10
    assert store.config_hash(cfg) != before and ("smooth_mprt", "n_samples") not in hash_omitted(cfg)


# ----- runs ------------------------------------------------------------------------------------------------------

def test_scores_against_an_independent_computation(digits_batch):
    """The scores equal scipy's Spearman of autograd's gradients averaged over the copies written out here, for
    every stage's model. In float64 (model and images), so the suite's and autograd's float32 maps are the same
    numbers: in float32 their rounding differs, and pixels within rounding of each other would swap ranks."""
    torch.manual_seed(0)
    model = TinyCNN().double().eval()
    images, labels = digits_batch
    images = images.double()
    r = _run(model, (images, labels), methods=["gradient"], smooth_mprt={"n_samples": N},
             similarity={"metrics": ["spearman_abs", "spearman"], "percentile": 100.0})
    s = r.scores
    assert set(s.test) == {"smooth_mprt"}
    assert list(dict.fromkeys(s.layer)) == ["original", "conv1", "conv2", "fc"]
    inputs = _copies(images, N)
    with torch.no_grad():
        target = model(images).argmax(1)
    trained = _mean_gradient(model, inputs, target)
    for stage in r.plan.stages[1:]:
        with randomized(model, r.plan.arch, stage, r.plan.cfg.randomization, r.plan.cfg.seed) as m:
            with torch.no_grad():
                own = m(images).argmax(1)  # target=predicted: each stage explains its own prediction
            maps = _mean_gradient(m, inputs, own)
        for metric, f in (("spearman_abs", np.abs), ("spearman", lambda a: a)):
            want = [scipy.stats.spearmanr(f(trained[i]), f(maps[i]))[0] for i in range(len(images))]
            np.testing.assert_allclose(_values(s, metric, stage.index), want, rtol=0, atol=1e-9,
                                       err_msg=f"{stage}, {metric}")
    assert (_values(s, "spearman_abs", 0) == 1).all()


def test_scores_equal_quantus_smooth_mprt_given_the_suites_models_and_draws(digits_batch, monkeypatch):
    quantus = pytest.importorskip("quantus")
    from quantus.helpers.model.pytorch_model import PyTorchModel

    torch.manual_seed(0)
    model = TinyCNN().eval()
    images, labels = digits_batch
    # The digits are upsampled 8x8 images: in the noise-free copy, flat blocks give exactly equal activations, and a
    # max-pool over equal values routes the gradient to whichever the kernel's float32 rounding makes largest (the
    # suite's and Quantus' differ there). A small seeded jitter breaks those ties; the test above runs in float64,
    # which Quantus (it casts to float32) cannot.
    images = images + 0.01 * torch.rand(images.shape, generator=torch.Generator().manual_seed(0))
    r = _run(model, (images, labels), methods=["gradient"], smooth_mprt={"n_samples": N},
             target="original_prediction", similarity={"metrics": ["spearman_abs"], "percentile": 100.0})
    arch, cfg = r.plan.arch, r.plan.cfg
    # Quantus' own bottom-up layers of this model are the suite's units, in the same order
    own = [name for name, _ in PyTorchModel(copy.deepcopy(model), channel_first=True).get_random_layer_generator(
        order="bottom_up")]
    assert own == [st.layer for st in r.plan.stages[1:]]

    def suite_layers(self, order="top_down", seed=42):
        assert order == "bottom_up"
        for st in r.plan.stages[1:]:
            with randomized(model, arch, st, cfg.randomization, cfg.seed) as m:
                stage_model = copy.deepcopy(m)
            yield st.layer, stage_model

    draws = [((c - images) / (0.1 * (images.flatten(1).max(1).values - images.flatten(1).min(1).values))
              .view(-1, 1, 1, 1)).numpy().astype(np.float64) for c in _copies(images, N)[:-1]]
    calls = iter(range(10**6))
    monkeypatch.setattr(PyTorchModel, "get_random_layer_generator", suite_layers)
    monkeypatch.setattr(np.random, "randn", lambda *shape: draws[next(calls) % (N - 1)])
    with torch.no_grad():
        y = model(images).argmax(1).numpy()
    metric = quantus.SmoothMPRT(nr_samples=N, noise_magnitude=0.1, layer_order="bottom_up", disable_warnings=True)
    got = metric(model=model, x_batch=images.numpy(), y_batch=y, a_batch=None, explain_func=quantus.explain,
                 explain_func_kwargs={"method": "Gradient"}, device="cpu", batch_size=len(images))
    assert next(calls) % (N - 1) == 0  # every smoothing drew N - 1 copies: the draws stayed aligned
    for st in r.plan.stages[1:]:
        np.testing.assert_allclose(_values(r.scores, "spearman_abs", st.index), got[st.layer], atol=1e-5,
                                   err_msg=st.layer)


def test_one_noise_free_sample_is_the_bottom_up_test_and_the_weights_are_restored(digits_batch):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = digits_batch
    methods = ["gradient", SmoothGrad(n_samples=4), "gradcam", "noise"]
    kw = dict(methods=methods, **KW)
    smooth = benchmark.sanity_check(model, (images, labels), test="smooth_mprt", smooth_mprt={"n_samples": 1}, **kw)
    bottom_up = benchmark.sanity_check(model, (images, labels), test="bottom_up", **kw)
    cols = ["stage", "layer", "method", "metric", "image", "value", "nan_reason", "target"]
    a, b = (t.scores[cols].sort_values(cols[:5]).reset_index(drop=True) for t in (smooth, bottom_up))
    pd.testing.assert_frame_equal(a, b)
    assert set(smooth.scores.test) == {"smooth_mprt"}
    # more samples change the maps (the noise) but never the model: every weight as it was, bit for bit
    _run(model, (images, labels), methods=methods, smooth_mprt={"n_samples": 3})
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_meta_counts_every_copys_passes_and_the_report_says_the_copies(digits_batch):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    r = _run(model, digits_batch, methods=["gradient", SmoothGrad(n_samples=4)], smooth_mprt={"n_samples": 3})
    assert r.meta["engine"]["passes_per_image_per_stage"] == 3 * (1 + 4)  # per copy: the gradient, 4 samples
    assert r.meta["smooth_mprt"]["n_samples"] == 3 and r.meta["test"] == "smooth_mprt"
    text = benchmark.checks.TESTS["smooth_mprt"].report_text(r.meta)
    assert "mean over 3 noisy copies" in text.description and not text.paper


@pytest.mark.e2e
def test_command_line_run(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "model_randomization.py"), "test=smooth_mprt",
           "experiment=smoke", "method=[gradient,gradcam,edge]", "smooth_mprt.n_samples=3", "progress=false",
           f"results_root={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "results" / "model_randomization").iterdir()
    assert "_smooth_mprt_" in run_dir.name
    scores = pd.read_parquet(run_dir / "scores.parquet")
    assert set(scores.test) == {"smooth_mprt"} and set(scores.method) == {"gradient", "gradcam", "edge"}
    assert list(dict.fromkeys(scores.layer)) == ["original", "conv1", "conv2", "fc1", "logits"]
    assert len(set(scores.image)) == 4
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["smooth_mprt"]["n_samples"] == 3 and meta["test"] == "smooth_mprt"
    html = (run_dir / "report.html").read_text()
    assert "What this test compares" in html and "noisy copies" in html
    summary = pd.read_csv(run_dir / "summary.csv")
    assert set(summary[(summary.method == "edge") & summary.verdict.notna()].verdict) == {"fail"}


def test_python_without_methods_runs_the_tests_own_default_list(digits_batch):
    images, labels = digits_batch
    torch.manual_seed(0)
    r = _run(TinyCNN().eval(), (images[:2], labels[:2]), smooth_mprt={"n_samples": 1})
    assert list(dict.fromkeys(r.scores.method)) == list(DEFAULT_METHODS)
