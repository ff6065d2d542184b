"""The tests that followed the paper: random logit (Sixt et al. 2020) and efficient MPRT (Hedström et al. 2023).

Reference checks, and where they cannot be identical:

- Random logit against Quantus' ``RandomLogit``: the drawn class. Quantus reseeds NumPy's global generator per
  batch and draws an offset k in [0, classes - 1) per position in the batch; the suite draws k per image from
  ``rng.generator(seed, "random_logit", image_id)``. Given the same offsets, both map k to the same class (the
  k-th class other than the explained one): tested with Quantus' own draws. Its SSIM differs (Quantus compares
  flattened 1-D maps with the pair's own data range), so the scores are checked against scikit-image's SSIM and
  autograd's gradient of the drawn class's logit instead.
- Efficient MPRT against Quantus' ``EfficientMPRT``: Quantus' randomized model is its own (each layer's
  ``reset_parameters``), so the suite's scores cannot equal Quantus' on one model. The metric can: Quantus'
  original and fully randomized explanations, scored by the suite's ``entropy_change`` (on the raw maps and on the
  suite's float32 min-max maps), give Quantus' scores; the suite's run is checked against ``np.histogram`` +
  ``scipy.stats.entropy`` (and Quantus' ``discrete_entropy``) on autograd gradients of the trained model and of
  the suite's fully randomized model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from skimage.metrics import structural_similarity
from torch import nn

import benchmark
from benchmark import store
from benchmark import checks
from benchmark.checks import TESTS, check_test_value
from benchmark.checks.efficient_mprt import entropy_change, histogram_entropy, n_bins
from benchmark.checks.random_logit import other_classes
from benchmark.config import ExperimentConfig, hash_omitted
from benchmark.postprocess import minmax_map
from benchmark.randomization import Stage, randomized

from conftest import TinyCNN, smoke_cfg

METHODS = "method=[gradient,smoothgrad,gradcam,edge,noise]"


def _gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """(B, 1, H, W) gradient of each image's ``target`` logit, by autograd (the reference for ``gradient``)."""
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xx)[torch.arange(len(x)), target].sum(), xx)
    return g.detach().numpy()


def _minmax(a: np.ndarray) -> np.ndarray:
    """The suite's min-max post-processing, as the scorer applies it (float32)."""
    return minmax_map(a).astype(np.float32)


class TwoClass(nn.Module):
    def __init__(self, k: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 28 * 28, k)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


# ----- pieces -----------------------------------------------------------------------------------------------------

def test_stage_target_defaults_to_none_and_existing_stages_are_unchanged():
    assert Stage(0, "original", ()).target is None
    assert Stage(1, "fc", ("fc",)) == Stage(1, "fc", ("fc",), None)


def test_other_class_is_uniform_over_the_other_classes_and_per_image():
    n, ids = 5, torch.arange(400)
    target = ids % n
    logits = torch.zeros(len(ids), n)
    drawn = other_classes(0, target, logits, ids)
    assert not bool((drawn == target).any())
    counts = np.bincount((drawn - target).remainder(n).numpy(), minlength=n)
    assert counts[0] == 0 and (counts[1:] > 60).all()  # every other class, about 100 each
    # an image's class does not depend on its batch companions (no per-batch reseeding)
    sub = torch.tensor([7, 123, 399])
    assert torch.equal(other_classes(0, target[sub], logits[sub], sub), drawn[sub])
    assert not torch.equal(other_classes(1, target, logits, ids), drawn)  # the seed matters


def test_other_class_maps_offsets_as_quantus_random_logit():
    """Quantus' own draws (offsets from np.random.seed(42)) mapped to classes by the suite's rule: the classes
    Quantus explained."""
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.rand(6, 1, 28, 28)
    y = model(x).argmax(1).numpy()
    asked = []

    def explain(model, inputs, targets, **kwargs):
        asked.append(np.asarray(targets).copy())
        return np.random.default_rng(len(asked)).random((len(inputs), 1, 28, 28)).astype(np.float32)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantus.RandomLogit(num_classes=5, seed=42, disable_warnings=True)(
            model=model, x_batch=x.numpy(), y_batch=y, a_batch=None, explain_func=explain, device="cpu")
    quantus_other = asked[-1]
    np.random.seed(42)
    offsets = np.random.randint(0, 4, len(y))
    mine = np.where(offsets < y, offsets, offsets + 1)
    assert (mine == quantus_other).all() and not (quantus_other == y).any()


def test_histogram_entropy_matches_numpy_scipy_and_quantus():
    rng = np.random.default_rng(0)
    for values in (rng.normal(size=784), rng.random(300) ** 3, np.r_[np.zeros(700), rng.random(84)]):
        counts, _ = np.histogram(values, bins=100)
        p = counts[counts > 0] / counts.sum()
        assert histogram_entropy(values, 100) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-12)
        assert histogram_entropy(values, 100) == scipy.stats.entropy(counts)
    quantus = pytest.importorskip("quantus")
    maps = rng.random((3, 28, 28)).astype(np.float32)
    for m in maps:
        assert histogram_entropy(m, 100) == quantus.functions.complexity_func.discrete_entropy(a=m, x=m, n_bins=100)


def test_entropy_change_definition_degenerate_maps_and_rules():
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 28, 28)), rng.normal(size=(2, 28, 28))
    sc = entropy_change(a, b)
    h_a = [scipy.stats.entropy(np.histogram(m, 100)[0]) for m in a]
    h_b = [scipy.stats.entropy(np.histogram(m, 100)[0]) for m in b]
    np.testing.assert_allclose(sc.value, (np.array(h_b) - h_a) / h_a, rtol=1e-12)
    assert entropy_change(a, a).value.tolist() == [0.0, 0.0]  # stage 0 against itself
    const = np.zeros((1, 28, 28))
    assert entropy_change(const, a[:1]).nan_reason == ["constant_map_original"]
    assert entropy_change(a[:1], const).value.tolist() == [-1.0]  # the randomized map lost every structure
    assert entropy_change(a[:1] * np.nan, a[:1]).nan_reason == ["non_finite_map"]
    # a rule: numpy's bin count on the trained map, clamped to [10, 200] as Quantus clamps
    assert n_bins(a[0], "sturges") == len(np.histogram_bin_edges(a[0], "sturges")) - 1
    assert n_bins(np.r_[0.0, 1.0], "sqrt") == 10 and n_bins(a[0], 37) == 37
    k = n_bins(a[0], "fd")
    h = scipy.stats.entropy(np.histogram(a[0], k)[0])
    assert entropy_change(a[:1], b[:1], "fd").value[0] == pytest.approx(
        (scipy.stats.entropy(np.histogram(b[0], k)[0]) - h) / h, rel=1e-12)


def test_entropy_change_gives_quantus_efficient_mprt_scores_on_quantus_maps():
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.rand(5, 1, 28, 28)
    y = model(x).argmax(1)
    seen = []

    def explain(model, inputs, targets, **kwargs):
        a = _gradients(model, torch.as_tensor(inputs).float(), torch.as_tensor(targets).long())
        seen.append(a)
        return a

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = quantus.EfficientMPRT(disable_warnings=True, display_progressbar=False)(
            model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=explain, device="cpu",
            batch_size=5)
    trained, randomized_map = seen[-2], seen[-1]  # the original model's, then the fully randomized one's
    assert not np.allclose(trained, randomized_map)
    np.testing.assert_allclose(entropy_change(trained, randomized_map).value, scores, rtol=1e-12)
    np.testing.assert_allclose(entropy_change(_minmax(trained), _minmax(randomized_map)).value, scores, rtol=1e-12)


# ----- bad input, before any compute ---------------------------------------------------------------------------

@pytest.mark.parametrize("bins", [0, -3, "bogus", 1.5])
def test_bad_entropy_bins_fail_before_compute(tmp_path, bins):
    from benchmark.model_randomization import plan

    cfg = smoke_cfg(tmp_path, "test=efficient_mprt")
    cfg.similarity.entropy_bins = bins
    with pytest.raises(ValueError, match=r"similarity\.entropy_bins=.*(at least 1|not a bin rule|whole number)"):
        plan(cfg)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("classes", [1, 2])
def test_random_logit_refuses_one_or_two_class_models_before_compute(classes, monkeypatch):
    import benchmark.api as api

    monkeypatch.setattr(api, "compute", lambda *a, **k: pytest.fail("computed"))
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=rf"test=random_logit needs .* at least 3 classes.*num_classes={classes}.*"
                                         r"test=cascading"):
        benchmark.sanity_check(TwoClass(classes).eval(), torch.rand(4, 1, 28, 28), test="random_logit",
                               methods=["gradient"], quiet=True, progress=False)


# ----- command line selection and run ids -------------------------------------------------------------------

def test_command_line_names_select_the_registered_tests(tmp_path):
    from benchmark.model_randomization import plan

    for name in ("random_logit", "efficient_mprt", "independent"):
        cfg = smoke_cfg(tmp_path, f"test={name}")
        p = plan(cfg)
        assert p.test == name and f"_{name}_" in p.run_id and p.run_dir.parent.name == "model_randomization"
    assert plan(smoke_cfg(tmp_path, "test=efficient_mprt")).cfg.similarity.metrics == ["entropy_change"]
    chosen = plan(smoke_cfg(tmp_path, "test=efficient_mprt", "similarity.metrics=[entropy_change,ssim]"))
    assert chosen.cfg.similarity.metrics == ["entropy_change", "ssim"]
    assert [s.layer for s in plan(smoke_cfg(tmp_path, "test=random_logit")).stages] == ["original", "random_class"]
    cfg = smoke_cfg(tmp_path, "test=random_logit")
    check_test_value(cfg)
    cfg.test = "data_randomization"  # a model test given to the data randomization runner: said, not run
    with pytest.raises(ValueError, match="test='random_logit' is a model_randomization test"):
        checks.test_for(cfg)


def test_new_key_leaves_run_ids_unchanged_at_its_default():
    cfg = ExperimentConfig()
    omitted = hash_omitted(cfg)
    text_keys = {("model", k) for k in ("name_or_path", "max_length", "output")} | {
        ("data", k) for k in ("sources", "text_column", "label_column", "delimiter")}
    smooth_keys = {("smooth_mprt", "n_samples"), ("smooth_mprt", "noise_level")}
    invariance_keys = {("input_invariance", "shift"), ("input_invariance", "tolerance")}
    planted_keys = {("data", "planted_size"), ("data", "planted_variant"), ("data", "planted_base")}
    assert {("similarity", "entropy_bins")} | planted_keys | text_keys | smooth_keys | invariance_keys == set(omitted)
    plain = {k: v for k, v in store.to_plain(cfg).items() if k not in store.NON_RESULT_KEYS}
    for group, key in omitted:  # the config as it was before the keys existed
        del plain[group][key]
        if not plain[group]:  # and before the group existed (smooth_mprt)
            del plain[group]
    before = hashlib.sha256(json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]
    assert store.config_hash(cfg) == before
    other = dataclasses.replace(cfg, similarity=dataclasses.replace(cfg.similarity, entropy_bins="fd"))
    assert store.config_hash(other) != before and ("similarity", "entropy_bins") not in hash_omitted(other)


# ----- runs ------------------------------------------------------------------------------------------------------

def test_python_api_random_logit_explains_a_random_other_class(digits_batch):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    images, labels = digits_batch
    r = benchmark.sanity_check(model, (images, labels), test="random_logit", methods=["gradient"], quiet=True,
                               progress=False, conv_input_grad="aten", similarity={"metrics": ["ssim", "spearman"]})
    s = r.scores
    assert set(s.test) == {"random_logit"} and set(s.metric) == {"ssim", "spearman"}
    assert list(dict.fromkeys(s.layer)) == ["original", "random_class"]
    t0 = s[(s.stage == 0) & (s.metric == "ssim")].set_index("image").target
    t1 = s[(s.stage == 1) & (s.metric == "ssim")].set_index("image").target
    with torch.no_grad():
        predicted = model(images).argmax(1)
    assert t0.tolist() == predicted.tolist() and (t1 != t0).all()
    assert t1.tolist() == other_classes(0, predicted, torch.zeros(len(images), 5), torch.arange(len(images))).tolist()
    # the stage-1 score: scikit-image's SSIM (paper profile: 5x5 window) of autograd's maps of the two classes
    a = _minmax(_gradients(model, images, predicted)).reshape(-1, 28, 28)
    b = _minmax(_gradients(model, images, torch.tensor(t1.tolist()))).reshape(-1, 28, 28)
    want = [structural_similarity(a[i].astype(np.float64), b[i].astype(np.float64), win_size=5, data_range=1.0)
            for i in range(len(a))]
    got = s[(s.stage == 1) & (s.metric == "ssim")].sort_values("image").value.to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_python_api_efficient_mprt_against_an_independent_computation(digits_batch):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    images, labels = digits_batch
    kw = dict(methods=["gradient"], quiet=True, progress=False, conv_input_grad="aten")
    r = benchmark.sanity_check(model, (images, labels), test="efficient_mprt",
                               similarity={"metrics": ["entropy_change", "ssim"]}, **kw)
    s = r.scores
    assert set(s.test) == {"efficient_mprt"} and list(dict.fromkeys(s.layer)) == ["original", "fully_randomized"]
    e = s[s.metric == "entropy_change"]
    assert (e[e.stage == 0].value == 0).all()
    # independent: np.histogram + scipy entropy of autograd's maps, trained and with every unit re-initialized
    with torch.no_grad():
        target = model(images).argmax(1)
    trained = _minmax(_gradients(model, images, target))
    stage = r.plan.stages[1]
    assert set(stage.units) == set(r.plan.arch.units)
    with randomized(model, r.plan.arch, stage, r.plan.cfg.randomization, r.plan.cfg.seed) as random_model:
        with torch.no_grad():
            own = random_model(images).argmax(1)  # target=predicted: each stage explains its own prediction
        rand = _minmax(_gradients(random_model, images, own))
    assert e[e.stage == 1].sort_values("image").target.tolist() == own.tolist()
    h = np.array([scipy.stats.entropy(np.histogram(m, 100)[0]) for m in trained])
    want = (np.array([scipy.stats.entropy(np.histogram(m, 100)[0]) for m in rand]) - h) / h
    # The engine's gradients and autograd's differ by float32 rounding (~1e-6 of the randomized model's), which can
    # move a pixel across a bin edge: a histogram's entropy jumps by a count's worth there (~1e-3); most are exact.
    got = e[e.stage == 1].sort_values("image").value.to_numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-3)
    assert np.isclose(got, want, rtol=1e-12, atol=0).sum() >= len(want) - 2
    # the fully randomized model is the cascading test's last stage, bit for bit
    c = benchmark.sanity_check(model, (images, labels), test="cascading", similarity={"metrics": ["ssim"]}, **kw).scores
    last = c[c.stage == c.stage.max()].sort_values("image").value.to_numpy()
    np.testing.assert_array_equal(s[(s.stage == 1) & (s.metric == "ssim")].sort_values("image").value.to_numpy(),
                                  last)


def _command_line_run(tmp_path: Path, test: str) -> tuple[Path, pd.DataFrame, str]:
    from benchmark.model_randomization import run

    run_dir = run(smoke_cfg(tmp_path / "results", f"test={test}", METHODS))
    html = (run_dir / "report.html").read_text()
    return run_dir, pd.read_parquet(run_dir / "scores.parquet"), html


def test_command_line_random_logit_run(tmp_path):
    run_dir, scores, html = _command_line_run(tmp_path, "random_logit")
    assert run_dir.parent.name == "model_randomization" and "_random_logit_" in run_dir.name
    assert set(scores.test) == {"random_logit"} and {"ssim", "spearman"} <= set(scores.metric)
    assert "What this test compares" in html and "a class drawn uniformly from the other classes" in html
    assert TESTS["random_logit"].report_text({}).axis in html or "random_class" in html
    summary = pd.read_csv(run_dir / "summary.csv")
    judged = summary[summary.verdict.notna()]
    assert set(judged.verdict) <= {"pass", "fail", "inconclusive"}
    assert set(judged[judged.method == "edge"].verdict) == {"fail"}  # the edge map ignores the class
    assert "Beside the paper" not in html


def test_command_line_efficient_mprt_run(tmp_path):
    run_dir, scores, html = _command_line_run(tmp_path, "efficient_mprt")
    assert set(scores.test) == {"efficient_mprt"} and set(scores.metric) == {"entropy_change"}
    assert (scores[scores.stage == 0].value == 0).all()
    summary = pd.read_csv(run_dir / "summary.csv")
    assert set(summary[summary.stage == 1].verdict) == {"not_applicable"}  # never a similarity pass / fail
    assert "entropy_change is no similarity" in html and "Relative entropy change" in html
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["efficient_mprt"]["entropy_bins"] == 100 and meta["test"] == "efficient_mprt"


def test_paper_tests_keep_their_report_text():
    from benchmark.checks import report_text_of as report_text
    from benchmark.report.style import x_label

    axes = {"cascading": "layers randomized, cumulative from the top (left: trained model)",
            "bottom_up": "layers randomized, cumulative from the bottom (left: trained model)",
            "independent": "the one layer randomized, the rest trained (left: trained model)",
            "data_randomization": "model"}
    for name, axis in axes.items():
        assert x_label(name) == axis
        t = report_text(name, {})
        assert t.compares == "" and t.figure == ("bars" if name == "data_randomization" else "curves")
        assert t.paper == {"cascading": "cascading", "data_randomization": "data_randomization"}.get(name)
    assert report_text("cascading", {}).description == "cascading model parameter randomization"
    assert report_text("cascading", {}).columns == "columns: cascading randomization stages, trained model first"


def test_a_test_without_report_text_and_an_unregistered_one_get_the_plain_text():
    from benchmark.checks.base import Check
    from benchmark.checks.report_text import ReportText
    from benchmark.checks import report_text_of as report_text

    class Quiet(Check):
        name = "quiet_test"
        folder = "model_randomization"

    t = Quiet().report_text({})
    assert t.description == "quiet_test" and t.figure == "curves" and t.paper is None
    assert report_text("not_registered_here", {}).description == "not_registered_here"
    with pytest.raises(ValueError, match=r"figure='pie'.*'curves', 'bars'"):
        ReportText("d", "a", "c", "", figure="pie")
    with pytest.raises(ValueError, match=r"paper='fig3'.*'cascading', 'data_randomization'"):
        ReportText("d", "a", "c", "", paper="fig3")


@pytest.mark.e2e
def test_random_null_experiment_compares_two_independent_randomizations(tmp_path):
    """experiments/random_null.py: trained vs random A and random A vs random B, on the smoke run's model."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import random_null

    table = random_null.main(["experiment=smoke", f"results_root={tmp_path}", "method=[gradient,edge]", "n_images=4"])
    assert set(table.pair) == {"trained_vs_random", "random_vs_random"}
    edge = table[table.method == "edge"]
    assert (edge["mean"] == 1.0).all()  # the control ignores the model: identical under any randomization
    grad = table[(table.method == "gradient") & (table.metric == "spearman_abs")].set_index("pair")["mean"]
    assert -1.0 <= grad["random_vs_random"] <= 1.0 and grad["random_vs_random"] != grad["trained_vs_random"]


@pytest.mark.parametrize("test,message", [
    ("smooth_mprt", r"test=smooth_mprt averages maps over noisy copies .* model 'minilm' is a text classifier; use "
                    r"test=bottom_up"),
    ("input_invariance", r"test=input_invariance shifts the input by a constant and model 'minilm' is a text "
                         r"classifier: a shift of its word embeddings is not an input"),
    ("efficient_mprt", r"test=efficient_mprt .* model 'minilm' is a text classifier"),
])
def test_image_only_tests_refuse_text_models_before_compute(test, message):
    from benchmark.checks import TESTS
    from benchmark.config import ExperimentConfig

    class Text:
        name, modality = "minilm", "text"

    with pytest.raises(ValueError, match=message):
        TESTS[test].stages(Text(), ExperimentConfig())
