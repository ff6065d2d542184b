"""Occlusion, leave-one-out and LIME against Captum on the same model, inputs, regions and draws; the engine's
forward-only path (shared masks, chunking, stages together) and the settings' checks."""

import numpy as np
import pytest
import torch
from captum.attr import FeatureAblation, Lime as CaptumLime, Occlusion as CaptumOcclusion
from captum.attr._core.lime import get_exp_kernel_similarity_function
from captum._utils.models.linear_model import SkLearnRidge

from benchmark.engine import Engine, StagePlan
from benchmark.methods import build_method
from benchmark.methods.masks import default_window, fill_image, grid_labels, slic_labels, window_masks
from benchmark.methods.perturbation import LimeScores


def explain(model, x, target, name, seed=0, **settings):
    return Engine(model, [build_method(name, settings)], seed=seed).explain(x, target, torch.arange(len(x)))[name]


@pytest.fixture
def setup(tiny_cnn, digits_batch):
    x = digits_batch[0][:3]
    return tiny_cnn, x, tiny_cnn(x).argmax(1)


def assert_close(out, ref):
    scale = float(ref.abs().max())
    assert scale > 0
    torch.testing.assert_close(out, ref.float(), atol=1e-5 * scale, rtol=1e-4)


def fills(x, fill):
    return torch.stack([fill_image(img, fill, 0.0) for img in x])


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_occlusion_is_captums(setup, fill):
    model, x, t = setup
    ours = explain(model, x, t, "occlusion", window=4, stride=2, fill=fill)
    ref = CaptumOcclusion(model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2),
                                           baselines=fills(x, fill), target=t)
    assert_close(ours, ref)


def test_occlusion_of_the_probability_is_captums_on_the_softmax(setup):
    model, x, t = setup
    ours = explain(model, x, t, "occlusion", window=6, stride=4, output="probability")  # the last windows cropped
    ref = CaptumOcclusion(lambda v: torch.softmax(model(v), 1)).attribute(
        x, sliding_window_shapes=(1, 6, 6), strides=(1, 4, 4), baselines=0.0, target=t)
    assert_close(ours, ref)


def test_default_windows_cover_the_side():
    assert default_window(28) == (4, 2) and default_window(224) == (32, 16) and default_window(8) == (2, 1)
    for size in range(2, 300):
        w, s = default_window(size)
        assert w <= size and (size - w) % s == 0  # every window whole
        assert window_masks(size, 3, (w, 1), (s, 1)).sum((1, 2)).eq(w).all()
    assert window_masks(28, 28, (6, 6), (4, 4)).shape[0] == 7 * 7  # 0, 4, ..., 24: the last cropped to 4 rows


def test_pixel_level_leave_one_out_is_feature_ablation(setup):
    model, x, t = setup
    ours = explain(model, x, t, "leave_one_out", regions="grid", cell=1)
    assert_close(ours, FeatureAblation(model).attribute(x, target=t, perturbations_per_eval=64))


@pytest.mark.parametrize("regions,fill", [("slic", "zero"), ("grid", "mean"), ("slic", "blur")])
def test_leave_one_out_is_feature_ablation_on_the_same_regions(setup, regions, fill):
    model, x, t = setup
    ours = explain(model, x, t, "leave_one_out", regions=regions, cell=5, fill=fill)
    method = build_method("leave_one_out", {"regions": regions, "cell": 5})
    mask = torch.stack([torch.from_numpy(method.primitives()[0].labels(img)) for img in x])[:, None]
    assert len(mask[0].unique()) > 4
    ref = FeatureAblation(model).attribute(x, target=t, feature_mask=mask, baselines=fills(x, fill),
                                           perturbations_per_eval=16)
    assert_close(ours, ref)


@pytest.mark.parametrize("fill", ["zero", "blur"])
def test_lime_is_captums_with_the_same_segments_draws_kernel_and_ridge(setup, fill):
    model, x, t = setup
    settings = {"n_samples": 120, "n_segments": 30, "fill": fill}
    seed = 3
    ours = explain(model, x, t, "lime", seed=seed, **settings)
    prim = build_method("lime", settings).primitives()[0]
    assert isinstance(prim, LimeScores)
    for i in range(len(x)):
        labels = torch.from_numpy(prim.labels(x[i]))
        z = prim.draws(int(labels.max()) + 1, i, seed)
        draws = iter(z)

        def perturb(_inp, **_kw):
            return next(draws)[None]

        lime = CaptumLime(model, interpretable_model=SkLearnRidge(alpha=1.0),
                          similarity_func=get_exp_kernel_similarity_function("cosine", 1.0), perturb_func=perturb)
        ref = lime.attribute(x[i : i + 1], target=t[i : i + 1], feature_mask=labels[None, None],
                             baselines=fills(x[i : i + 1], fill), n_samples=len(z), perturbations_per_eval=40)
        assert_close(ours[i : i + 1], ref)


def test_lime_draws_are_seeded_per_image_and_identical_at_every_call(setup):
    model, x, t = setup
    a = explain(model, x, t, "lime", seed=1, n_samples=60, n_segments=20)
    assert torch.equal(a, explain(model, x, t, "lime", seed=1, n_samples=60, n_segments=20))
    assert not torch.equal(a, explain(model, x, t, "lime", seed=2, n_samples=60, n_segments=20))
    # an image's map does not depend on the batch it is in
    one = Engine(model, [build_method("lime", {"n_samples": 60, "n_segments": 20})], seed=1).explain(
        x[1:2], t[1:2], torch.tensor([1]))["lime"]
    torch.testing.assert_close(one, a[1:2], atol=1e-6, rtol=1e-5)


def test_equal_masks_of_occlusion_and_leave_one_out_run_once(setup):
    model, x, t = setup
    methods = [build_method("occlusion", {"window": 4, "stride": 4}),
               build_method("leave_one_out", {"regions": "grid", "cell": 4})]
    together = Engine(model, methods)
    assert together.items_per_image(x, torch.arange(3)) == 1 + 49  # the image and 7 x 7 tiles, not 1 + 2 x 49
    maps = together.explain(x, t, torch.arange(3))
    assert torch.equal(maps["occlusion"], maps["leave_one_out"])
    alone = Engine(model, methods[:1]).explain(x, t, torch.arange(3))
    assert torch.equal(maps["occlusion"], alone["occlusion"])
    lime = Engine(model, methods + [build_method("lime", {"n_samples": 50, "regions": "grid", "cell": 4,
                                                          "fill": "mean"})])
    assert lime.items_per_image(x, torch.arange(3)) == 50 + 1 + 50  # another fill: a stream of its own


def test_maps_do_not_depend_on_the_chunk_size(setup):
    model, x, t = setup
    methods = [build_method("occlusion", {}), build_method("lime", {"n_samples": 80})]
    big = Engine(model, methods).explain(x, t, torch.arange(3))
    small = Engine(model, methods, max_chunk=7).explain(x, t, torch.arange(3))
    # a budget of 1 MB: the masks of one image at a time (a quarter of the budget holds LIME's 400 masks of 784 B)
    lean = Engine(model, [build_method("occlusion", {}), build_method("lime", {"n_samples": 400})], memory_budget_mb=1)
    one_by_one = lean.explain(x, t, torch.arange(3))
    together = Engine(model, [build_method("occlusion", {}), build_method("lime", {"n_samples": 400})]).explain(
        x, t, torch.arange(3))
    for name in big:
        torch.testing.assert_close(small[name], big[name], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(one_by_one[name], together[name], atol=1e-6, rtol=1e-5)


def test_stages_explained_together_equal_each_stage_alone():
    from benchmark.models.cnn import MnistCNN

    torch.manual_seed(0)
    model = MnistCNN().eval()
    x = torch.rand(2, 1, 28, 28)
    t = model(x).argmax(1)
    methods = [build_method("occlusion", {"window": 7, "stride": 7}), build_method("leave_one_out", {"regions": "grid"}),
               build_method("gradient", {})]
    new = torch.randn_like(model.logits.weight)
    cut = len(model.steps()) - 1
    plans = [StagePlan("stage0", t), StagePlan("stage1", t, [(model.logits.weight, new)], cut)]
    joint = Engine(model, methods).explain_stages(x, torch.arange(2), plans)
    alone0 = Engine(model, methods).explain(x, t, torch.arange(2))
    old = model.logits.weight.data.clone()
    model.logits.weight.data = new
    alone1 = Engine(model, methods).explain(x, t, torch.arange(2))
    model.logits.weight.data = old
    for name in alone0:
        torch.testing.assert_close(joint[0][name], alone0[name], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(joint[1][name], alone1[name], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(joint[0]["occlusion"], joint[1]["occlusion"])


def test_regions_from_scikit_image_and_grids():
    labels = grid_labels(5, 7, 3)
    assert labels.max() + 1 == 2 * 3 and labels[4, 6] == 5
    img = torch.zeros(1, 28, 28)
    img[0, :, 14:] = 1.0
    got = slic_labels(img, 16, 0.1)
    assert got.min() == 0 and set(np.unique(got)) == set(range(got.max() + 1)) and got.max() >= 3
    assert len(np.unique(got[:, 13:15], axis=None)) >= 2  # the edge separates superpixels


@pytest.mark.parametrize("name,settings,fragment", [
    ("occlusion", {"stride": 0}, "method.occlusion.stride=0 must be a positive whole number"),
    ("occlusion", {"window": -2}, "method.occlusion.window=-2 must be a positive whole number"),
    ("occlusion", {"fill": "grey"}, "method.occlusion.fill='grey' is not a fill; use one of ['zero', 'mean', 'blur']"),
    ("occlusion", {"output": "loss"}, "method.occlusion.output='loss' is not a score"),
    ("occlusion", {"fill": "blur", "blur_sigma": 0}, "method.occlusion.blur_sigma=0 must be a positive number"),
    ("leave_one_out", {"regions": "quickshift"}, "method.leave_one_out.regions='quickshift' is not a segmentation"),
    ("leave_one_out", {"n_segments": 1}, "method.leave_one_out.n_segments=1 must be a whole number of at least 2"),
    ("lime", {"n_samples": 10, "n_segments": 50}, "method.lime.n_samples=10 is below n_segments=50"),
    ("lime", {"kernel_width": -1.0}, "method.lime.kernel_width=-1.0 must be a positive number"),
    ("lime", {"alpha": 0}, "method.lime.alpha=0 must be a positive number"),
])
def test_settings_that_cannot_work_are_refused_when_built(name, settings, fragment):
    with pytest.raises(ValueError, match=None) as info:
        build_method(name, settings)
    assert fragment in str(info.value)


@pytest.mark.parametrize("name,settings,fragment", [
    ("occlusion", {"window": 30}, "method.occlusion.window=30 is larger than the 28x28 images"),
    ("lime", {"n_samples": 40}, "method.lime.n_samples=40 is below the 49 regions of the 28x28 images"),
    ("leave_one_out", {"regions": "grid", "cell": 28}, "method.leave_one_out.cell=28 makes one region"),
    ("occlusion", {"window": 3, "stride": 5}, "method.occlusion.stride=5 is larger than the window (3)"),
])
def test_settings_that_cannot_work_on_the_images_are_refused_by_shape(name, settings, fragment):
    method = build_method(name, settings)
    with pytest.raises(ValueError) as info:
        method.check_input((28, 28))
    assert fragment in str(info.value)


def test_a_segmentation_of_one_region_is_refused_on_the_first_image():
    method = build_method("leave_one_out", {"n_segments": 2, "compactness": 1e6})
    with pytest.raises(ValueError, match="yields 1 region on the first image"):
        method.check_regions(torch.zeros(1, 4, 4))
    build_method("leave_one_out", {}).check_regions(torch.rand(1, 28, 28))


# every method of the perturbation, optimization and propagation families, small
SMALL = {"occlusion": {}, "leave_one_out": {"regions": "grid"}, "lime": {"n_samples": 60, "n_segments": 16},
         "meaningful_perturbation": {"n_steps": 5}, "lrp": {}, "deeplift": {"baseline": "blur"}}


def small_methods():
    return [build_method(name, settings) for name, settings in SMALL.items()]


def test_every_new_method_through_data_randomization(tiny_cnn, digits_batch):
    import benchmark

    other = type(tiny_cnn)().eval()
    result = benchmark.sanity_check(tiny_cnn, digits_batch, test="data_randomization", random_model=other,
                                    methods=small_methods())
    got = result.scores
    assert set(got.method) == set(SMALL) and set(got.layer) == {"true_labels", "random_labels"}
    assert got[got.layer == "random_labels"].value.notna().all()
    assert (got[(got.layer == "random_labels") & (got.metric == "spearman")].value < 0.999).all()


@pytest.mark.e2e
def test_every_new_method_through_the_cascading_run_and_report(tmp_path):
    from conftest import smoke_cfg

    from benchmark.model_randomization import run

    cfg = smoke_cfg(tmp_path / "results", f"method=[gradient,{','.join(SMALL)}]", "method.lime.n_samples=60",
                    "method.lime.n_segments=16", "method.meaningful_perturbation.n_steps=5", "n_images=3",
                    "n_saved_images=3")
    out = run(cfg)
    import pandas as pd

    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores.method) == {"gradient", *SMALL}
    assert scores.stage.nunique() == 5 and scores.value.notna().all()
    report = (out / "report.html").read_text()
    assert all(name in report for name in SMALL)


def test_external_methods_are_called_on_slices_sized_to_the_budget(setup):
    """LRP, DeepLIFT and meaningful perturbation see at most half a chunk of images per call; the maps are the same."""
    model, x, t = setup
    methods = [build_method("lrp", {}), build_method("deeplift", {}), build_method("meaningful_perturbation", {"n_steps": 4})]
    whole = Engine(model, methods).explain(x, t, torch.arange(3))
    seen = []
    original = methods[0].attribute

    class Spy(type(methods[0])):
        def attribute(self, model, x, target):
            seen.append(len(x))
            return original(model, x, target)

    sliced = Engine(model, [Spy(), *methods[1:]], max_chunk=2).explain(x, t, torch.arange(3))
    assert seen == [1, 1, 1]
    for name in whole:
        torch.testing.assert_close(sliced[name], whole[name], atol=1e-6, rtol=1e-5)
