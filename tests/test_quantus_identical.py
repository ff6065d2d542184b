"""Quantus' MPRT driven on the suite's own randomized weights (MNIST CNN, cascading), against the suite's numbers.

Quantus' ``MPRT`` gets a model wrapper (a subclass of Quantus' ``PyTorchModel``) whose layer generator yields, for
each of the suite's cascading stages 1..n, (the stage's unit, a copy of the model with the suite's weights for that
stage), copied inside ``benchmark.randomization.randomized`` for the stage; the explanation function is autograd's
gradient of the target logit (the suite's ``gradient``). Where the definitions coincide the numbers agree:

- spearman_abs: Quantus' Spearman of |gradient| (abs=True, normalise=False) equals the suite's spearman_abs with
  ``similarity.percentile=100`` (then the ABS map is (|m| - min) / (max - min), a positive affine map of |m|, and
  Spearman only sees ranks) and ``target="original_prediction"`` (Quantus explains y_batch at every layer).

And where they differ, the test shows the difference (docs/tests.md, "Quantus' MPRT on the suite's weights"):
Quantus' SSIM compares flattened 1-D maps, its normalise_by_max divides by one maximum over the whole batch, its
average correlation includes the original model's self-similarity, and its own layer resets are not the suite's
re-initialization.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

import benchmark
from benchmark.models.cnn import MnistCNN
from benchmark.postprocess import minmax_map
from benchmark.randomization import randomized

quantus = pytest.importorskip("quantus")
from quantus.helpers import utils as quantus_utils  # noqa: E402
from quantus.helpers.model.pytorch_model import PyTorchModel  # noqa: E402

ATOL = 1e-6


class SuiteStages(PyTorchModel):
    """Quantus' model interface whose layer generator yields the suite's cascading stages, in the suite's order.

    Each stage's model is a deep copy made inside the suite's ``randomized(...)`` context, so the live model is
    the trained one again before Quantus explains anything (Quantus explains its "original" model, ``get_model()``,
    while the generator is suspended at the first stage).
    """

    def __init__(self, model, plan, softmax=False):
        super().__init__(model=model, channel_first=True, softmax=softmax, device="cpu")
        self.plan = plan
        self.yielded: list[tuple[str, dict[str, torch.Tensor]]] = []

    def get_random_layer_generator(self, order: str = "top_down", seed: int = 42):
        assert order == "top_down", order  # the suite's cascading order: top unit first
        cfg, arch = self.plan.cfg, self.plan.arch
        for stage in self.plan.stages[1:]:
            with randomized(self.model, arch, stage, cfg.randomization, cfg.seed) as m:
                stage_model = copy.deepcopy(m)
            self.yielded.append((stage.layer, {k: v.clone() for k, v in stage_model.state_dict().items()}))
            yield stage.layer, stage_model

    @property
    def random_layer_generator_length(self) -> int:
        return len(self.plan.stages) - 1


def explain(model, inputs, targets, **kwargs):
    """The plain gradient of each image's ``targets`` logit, (B, 1, H, W), by autograd (the suite's gradient)."""
    x = torch.as_tensor(inputs).float().clone().requires_grad_(True)
    t = torch.as_tensor(np.asarray(targets)).long()
    (g,) = torch.autograd.grad(model(x)[torch.arange(len(x)), t].sum(), x)
    return g.detach().numpy()


def _near_tie(a: np.ndarray, rel: float = 1e-6) -> bool:
    """Two pixels of |a| within ``rel`` of each other (relative): float32 rounding can swap their ranks."""
    v = np.sort(np.abs(a).astype(np.float64).ravel())
    return bool((np.diff(v) <= rel * np.maximum(v[1:], np.finfo(np.float32).tiny)).any())


def _mprt(model, x, y, monkeypatch, **kw):
    """Quantus' MPRT, its model wrapped as given (``get_wrapped_model`` passes a Quantus interface through)."""
    original = quantus_utils.get_wrapped_model
    monkeypatch.setattr(quantus_utils, "get_wrapped_model",
                        lambda model, **k: model if isinstance(model, PyTorchModel) else original(model, **k))
    settings = dict(layer_order="top_down", similarity_func=quantus.similarity_func.correlation_spearman, abs=True,
                    normalise=False, return_average_correlation=False, return_last_correlation=False,
                    skip_layers=False, disable_warnings=True, display_progressbar=False)
    settings.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantus.MPRT(**settings)(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
                                       explain_func=explain, device="cpu", batch_size=len(x))


@pytest.fixture
def setup(digits_batch):
    torch.manual_seed(0)
    model = MnistCNN().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = digits_batch
    # The digits are upsampled 8x8 images: flat blocks give exactly equal activations, and a max-pool over exactly
    # equal values routes the gradient to whichever the kernel's rounding makes largest (the suite's and autograd's
    # differ there, by up to 0.07 of a map's range). A small seeded jitter breaks those ties; the comparison is of
    # the definitions, not of tie-breaking.
    images = images + 0.01 * torch.rand(images.shape, generator=torch.Generator().manual_seed(0))
    result = benchmark.sanity_check(model, (images, labels), test="cascading", methods=["gradient"], quiet=True,
                                    progress=False, target="original_prediction", conv_input_grad="aten",
                                    similarity={"percentile": 100, "metrics": ["spearman_abs", "ssim"]},
                                    randomization={"fair_null": False})
    with torch.no_grad():
        y = model(images).argmax(1)
    return model, before, images, y, result


def _suite(result, metric, stage):
    s = result.scores
    return s[(s.metric == metric) & (s.stage == stage)].sort_values("image")


def test_quantus_mprt_on_the_suites_stages_gives_the_suites_spearman_abs(setup, monkeypatch):
    model, before, images, y, result = setup
    plan = result.plan
    wrapper = SuiteStages(model, plan)
    scores = _mprt(wrapper, images, y, monkeypatch)

    # the same stages, in the same order, under the same names; Quantus' "original": the trained model, itself
    assert list(scores) == ["original"] + [st.layer for st in plan.stages[1:]] == \
        ["original", "logits", "fc1", "conv2", "conv1"]
    np.testing.assert_allclose(scores["original"], 1.0, atol=1e-12)
    # the weights Quantus' stage models had are the suite's cascade: each stage changes its own unit and keeps
    # every unit the stage before it changed
    assert [name for name, _ in wrapper.yielded] == [st.layer for st in plan.stages[1:]]
    for (name, state), stage in zip(wrapper.yielded, plan.stages[1:]):
        for k, v in state.items():
            unit = k.split(".")[0]
            assert torch.equal(v, before[k]) != (unit in stage.units), (name, k)

    # targets coincide: Quantus explains y_batch at every layer, the suite (original_prediction) the trained argmax
    for stage in plan.stages:
        assert _suite(result, "spearman_abs", stage.index).target.tolist() == y.tolist()

    # Exact where the maps' ranks are unambiguous. The suite's engine and autograd compute the same gradient up to
    # float32 rounding; where two pixels of a map lie within ~1e-6 of each other (relative), that rounding can swap
    # their ranks, and Spearman moves by at most one swap's worth (<= 12 / n^2 for n pixels). Those pairs are
    # listed, bounded, and counted, not hidden in the tolerance of the others.
    trained = explain(model, images.numpy(), y.numpy())
    diffs, near_tie_diffs = [], []
    for (name, state), stage in zip(wrapper.yielded, plan.stages[1:]):
        stage_model = copy.deepcopy(model)
        stage_model.load_state_dict(state)
        perturbed = explain(stage_model, images.numpy(), y.numpy())
        want = _suite(result, "spearman_abs", stage.index).value.to_numpy()
        got = np.asarray(scores[stage.layer])
        assert np.isfinite(want).all()
        for i in range(len(images)):
            n = trained[i].size
            if _near_tie(trained[i]) or _near_tie(perturbed[i]):
                assert abs(got[i] - want[i]) <= 12 / n**2, (stage.layer, i)
                near_tie_diffs.append((stage.layer, i, abs(got[i] - want[i])))
            else:
                assert abs(got[i] - want[i]) <= ATOL, (stage.layer, i, got[i], want[i])
                diffs.append(abs(got[i] - want[i]))
    print(f"max |Quantus - suite| spearman_abs, {len(diffs)} (stage, image) pairs without near ties: {max(diffs):.3g}; "
          f"near-tie pairs (stage, image, |diff|): {near_tie_diffs}")
    assert len(diffs) > len(near_tie_diffs)  # most pairs are compared at ATOL
    np.testing.assert_allclose(_suite(result, "spearman_abs", 0).value, 1.0, atol=1e-12)  # the suite's stage 0

    # normalise=True (Quantus' default, normalise_by_max) divides by positive numbers: Spearman unchanged
    normalised = _mprt(SuiteStages(model, plan), images, y, monkeypatch, normalise=True)
    for stage in plan.stages[1:]:
        np.testing.assert_allclose(normalised[stage.layer], scores[stage.layer], rtol=0, atol=1e-12)

    # the trained weights are back, bit for bit
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_where_quantus_mprt_differs_from_the_suite(setup, monkeypatch):
    model, before, images, y, result = setup
    plan = result.plan
    cfg, arch = plan.cfg, plan.arch
    trained = explain(model, images.numpy(), y.numpy())

    # 1. SSIM. Quantus' MPRT hands its similarity function (B, H*W) rows: its ssim is scikit-image's on flattened
    # 1-D maps (a 7-sample 1-D window) with the pair's own data range. The suite's is one 2-D comparison per image
    # (paper profile: 5x5 window) of min-max maps with data_range=1. Same maps (the suite's), both ways:
    ssim_gap = []
    for stage in plan.stages[1:]:
        with randomized(model, arch, stage, cfg.randomization, cfg.seed) as m:
            perturbed = explain(m, images.numpy(), y.numpy())
        a, b = minmax_map(trained).astype(np.float32), minmax_map(perturbed).astype(np.float32)
        suite = _suite(result, "ssim", stage.index).value.to_numpy()
        two_d = [structural_similarity(a[i].astype(np.float64), b[i].astype(np.float64), win_size=5,
                                       data_range=1.0) for i in range(len(a))]
        np.testing.assert_allclose(suite, two_d, rtol=0, atol=1e-5, err_msg=stage.layer)
        # Quantus' function on 2-D maps with the same window gives the suite's numbers (a min-max pair spans [0, 1],
        # so its data range is 1): the difference is the flattening
        same = [quantus.similarity_func.ssim(a[i].astype(np.float64), b[i].astype(np.float64), win_size=5)
                for i in range(len(a))]
        np.testing.assert_allclose(same, two_d, rtol=0, atol=1e-12)
        flat = np.asarray(quantus.similarity_func.ssim(a.reshape(len(a), -1), b.reshape(len(b), -1), batched=True))
        ssim_gap.append(np.abs(flat - suite).max())
    print(f"max |Quantus 1-D SSIM - suite 2-D SSIM| per stage: {np.round(ssim_gap, 3).tolist()}")
    assert min(ssim_gap) > 1e-2  # not rounding: another definition

    # 2. Normalisation. Quantus' normalise_by_max (its default, normalise=True) divides a batch by one maximum of
    # |a| over the whole batch: an image's normalised map depends on its batch companions. The suite's maps are
    # scaled per image (benchmark.postprocess: no maximum shared across the batch).
    q = quantus.normalise_func.normalise_by_max(trained)
    assert np.isclose(np.abs(q).max(), 1.0) and not np.allclose(np.abs(q).reshape(len(q), -1).max(1), 1.0)
    alone = quantus.normalise_func.normalise_by_max(trained[:1])
    assert not np.allclose(alone, q[:1])  # image 0 alone vs image 0 in the batch
    assert np.allclose(minmax_map(trained[:1]), minmax_map(trained)[:1], rtol=0, atol=0)

    # 3. The average. Quantus' return_average_correlation averages every key of its scores, "original" (the
    # trained model against itself, 1.0) included; a mean over the randomized stages excludes it.
    per_layer = _mprt(SuiteStages(model, plan), images, y, monkeypatch)
    average = _mprt(SuiteStages(model, plan), images, y, monkeypatch, return_average_correlation=True)
    with_self = np.mean([per_layer[k] for k in per_layer], axis=0)
    without = np.mean([per_layer[st.layer] for st in plan.stages[1:]], axis=0)
    np.testing.assert_allclose(average, with_self, rtol=0, atol=1e-12)
    assert np.abs(np.asarray(average) - without).min() > 1e-3
    suite_mean = np.mean([_suite(result, "spearman_abs", st.index).value.to_numpy() for st in plan.stages[1:]],
                         axis=0)
    # (the suite's mean over stages 1..n: Quantus' per stage scores, up to the near ties of the first test)
    np.testing.assert_allclose(without, suite_mean, rtol=0, atol=12 / trained[0].size ** 2)

    # 4. Quantus' own layer resets (its PyTorchModel generator: each module with reset_parameters, reset under
    # torch.manual_seed(seed + 1)) are not the suite's re-initialization (one generator per unit from (seed, unit),
    # the architecture's initializer): same layers in the same order, other weights.
    own = [(name, {k: v.clone() for k, v in m.state_dict().items()})
           for name, m in PyTorchModel(model=model, channel_first=True, softmax=False,
                                       device="cpu").get_random_layer_generator(order="top_down", seed=42)]
    assert [name for name, _ in own] == ["logits", "fc1", "conv2.conv", "conv1.conv"]
    suite_stages = SuiteStages(model, plan)
    for (name, theirs), (_, ours) in zip(own, suite_stages.get_random_layer_generator()):
        assert not torch.equal(theirs[f"{name}.weight"], ours.state_dict()[f"{name}.weight"]), name

    # 5. Targets. Quantus explains y_batch at every layer; the suite's default target (predicted) re-predicts with
    # each stage's model, so its targets change where the randomized model's argmax does.
    default = benchmark.sanity_check(model, images, test="cascading", methods=["gradient"], quiet=True,
                                     progress=False, conv_input_grad="aten", randomization={"fair_null": False},
                                     similarity={"percentile": 100, "metrics": ["spearman_abs"]})
    last = plan.stages[-1]
    with randomized(model, arch, last, cfg.randomization, cfg.seed) as m, torch.no_grad():
        own_prediction = m(images).argmax(1)
    assert _suite(default, "spearman_abs", last.index).target.tolist() == own_prediction.tolist()
    assert own_prediction.tolist() != y.tolist()

    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_quantus_efficient_mprt_on_the_suites_fully_randomized_model_gives_the_suites_entropy_change(setup,
                                                                                                       monkeypatch):
    """Quantus' EfficientMPRT with the suite's stages: its last model (every unit of the cascade re-initialized) is
    the suite's fully randomized model, and with 100 bins its relative entropy rise equals the suite's
    ``test=efficient_mprt`` score, per image. The histograms count float32 values; the suite's engine and autograd
    round a few pixels differently, and one pixel crossing a bin edge moves the entropy by about 1e-3, so every
    image is compared at 5e-3 and most agree to 1e-6."""
    model, before, images, y, result = setup
    wrapper = SuiteStages(model, result.plan, softmax=True)  # EfficientMPRT also takes the entropy of the outputs
    original = quantus_utils.get_wrapped_model
    monkeypatch.setattr(quantus_utils, "get_wrapped_model",
                        lambda model, **k: model if isinstance(model, PyTorchModel) else original(model, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = quantus.EfficientMPRT(complexity_func_kwargs={"n_bins": 100}, layer_order="top_down", disable_warnings=True,
                                    display_progressbar=False)(
            model=wrapper, x_batch=images.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=explain,
            device="cpu", batch_size=len(images), softmax=True)
    assert [name for name, _ in wrapper.yielded] == [st.layer for st in result.plan.stages[1:]]
    suite = benchmark.sanity_check(model, images, test="efficient_mprt", methods=["gradient"], quiet=True,
                                   progress=False, target="original_prediction", conv_input_grad="aten")
    s = suite.scores[(suite.scores.metric == "entropy_change") & (suite.scores.stage == 1)].sort_values("image")
    assert s.target.tolist() == y.tolist()
    # the suite's fully randomized model is the cascade's last stage, unit for unit
    last = {k: v for k, v in wrapper.yielded[-1][1].items()}
    with randomized(model, result.plan.arch, suite.plan.stages[1], suite.plan.cfg.randomization,
                    suite.plan.cfg.seed) as m:
        assert all(torch.equal(v, last[k]) for k, v in m.state_dict().items())
    diffs = np.abs(s.value.to_numpy() - np.asarray(got))
    print(f"|Quantus EfficientMPRT - suite entropy_change| per image: {np.round(diffs, 8).tolist()}")
    assert diffs.max() <= 5e-3 and (diffs <= 1e-6).mean() >= 0.5, diffs
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
