"""ImageNet models (torchvision), photographs, and the offline Inception smoke path."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from benchmark.config import DataConfig, ExperimentConfig, ModelConfig, RandomizationConfig, SimilarityConfig
from benchmark.data import load_dataset
from benchmark.engine import Engine
from benchmark.methods import build_method
from benchmark.models import get_architecture, unit_modules
from benchmark.models.imagenet import PREPROCESSING, Preprocessing
from benchmark.randomization import Stage, randomized

PAPER_ORDER = ["Logits", "Mixed_7c", "Mixed_7b", "Mixed_7a", "Mixed_6e", "Mixed_6d", "Mixed_6c", "Mixed_6b",
               "Mixed_6a", "Mixed_5d", "Mixed_5c", "Mixed_5b", "Conv2d_4a_3x3", "Conv2d_3b_1x1", "Conv2d_2b_3x3",
               "Conv2d_2a_3x3", "Conv2d_1a_3x3"]


@pytest.fixture(scope="module")
def inception():
    arch = get_architecture("inception_v3")
    model = arch.build(3, 1000).eval()
    with torch.no_grad():  # the architecture's own initializer, unit by unit (as build_model does)
        for i, unit in enumerate(arch.units):
            for m in unit_modules(model, arch, unit):
                arch.init_module(m, torch.Generator().manual_seed(i))
    return arch, model


@pytest.mark.e2e
def test_inception_units_are_the_papers_17_blocks(inception):
    arch, model = inception
    top_down = [("Logits" if u == "logits" else u) for u in reversed(list(arch.units))]
    assert top_down == PAPER_ORDER
    assert arch.units["logits"] == ("fc",) and arch.gradcam_layer == "Mixed_7c"
    for unit in arch.units:
        assert unit_modules(model, arch, unit)
    # every convolution and dense layer the eval forward pass uses belongs to a unit
    covered = {id(p) for u in arch.units for m in unit_modules(model, arch, u) for p in m.parameters()}
    used = {id(p) for n, p in model.named_parameters() if not n.startswith("AuxLogits")}
    assert used <= covered


@pytest.mark.e2e
@pytest.mark.parametrize("name,n_units,layer", [("vgg16", 16, "features.29"), ("resnet50", 18, "layer4.2")])
def test_vgg_and_resnet_declare_units_and_gradcam_layer(name, n_units, layer):
    arch = get_architecture(name)
    model = arch.build(3, 1000)
    assert len(arch.units) == n_units and arch.gradcam_layer == layer
    model.get_submodule(layer)
    covered = {id(p) for u in arch.units for m in unit_modules(model, arch, u) for p in m.parameters()}
    assert covered == {id(p) for p in model.parameters()}


@pytest.mark.e2e
def test_inception_randomization_keeps_batchnorm_stats_and_restores_exactly(inception):
    arch, model = inception
    bn = model.Mixed_7c.branch1x1.bn
    with torch.no_grad():
        bn.running_mean.normal_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stage = Stage(2, "Mixed_7c", ("logits", "Mixed_7c"))
    with randomized(model, arch, stage, RandomizationConfig(reinit="layer_default"), seed=0):
        assert not torch.equal(model.Mixed_7c.branch1x1.conv.weight, before["Mixed_7c.branch1x1.conv.weight"])
        torch.testing.assert_close(bn.running_mean, before["Mixed_7c.branch1x1.bn.running_mean"], rtol=0, atol=0)
        assert torch.equal(model.Mixed_6e.branch1x1.conv.weight, before["Mixed_6e.branch1x1.conv.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.e2e
def test_guided_backprop_differs_from_gradient_on_inception(inception):
    """torchvision's BasicConv2d calls F.relu: the engine's guided ReLUs must reach it."""
    arch, model = inception
    x = torch.rand(1, 3, 96, 96) * 2 - 1  # Inception takes inputs from 75 pixels a side
    t = model(x).argmax(1)
    methods = [build_method("gradient", {}), build_method("guided_backprop", {})]
    maps = Engine(model, methods, target_layer=model.Mixed_7c).explain(x, t, torch.arange(1))
    grad, gbp = maps["gradient"], maps["guided_backprop"]
    assert grad.abs().max() > 0 and (gbp - grad).abs().max() > 0.1 * grad.abs().max()
    assert not any(m._forward_hooks for m in model.modules())


def _photo(path, size, colour):
    Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(path)


def test_image_folder_labels_and_preprocessing(tmp_path):
    for folder, colour in (("1", 10), ("207", 200)):
        (tmp_path / folder).mkdir()
        _photo(tmp_path / folder / "a.png", (400, 300), colour)
    (tmp_path / "n01440764").mkdir()
    _photo(tmp_path / "n01440764" / "b.jpg", (320, 480), 128)
    pre = PREPROCESSING["inception_v3"]
    data = load_dataset(DataConfig(name="image_folder", root=str(tmp_path)), pre)
    assert data.eval_images.shape == (3, 3, 299, 299)
    assert data.eval_labels.tolist() == [1, 207, -1]  # WordNet ids need data.class_index
    index = tmp_path / "wnids.txt"
    index.write_text("n01440764\nn01443537\n")
    data = load_dataset(DataConfig(name="image_folder", root=str(tmp_path), class_index=str(index)), pre)
    assert data.eval_labels.tolist() == [1, 207, 0]
    # ImageNet normalization: a grey of 200 maps to (200/255 - mean) / std per channel
    expect = (200 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(data.eval_images[1].mean((1, 2)), expect, atol=1e-3, rtol=0)
    paper = load_dataset(DataConfig(name="image_folder", root=str(tmp_path)),
                         Preprocessing(resize=342, crop=299, scaling="minus_one_one"))
    torch.testing.assert_close(paper.eval_images[1], torch.full((3, 299, 299), 200 / 255 * 2 - 1), atol=1e-5,
                               rtol=0)
    assert paper.input_range == (-1.0, 1.0)


def test_bad_imagenet_input_fails_with_the_fix(tmp_path):
    from benchmark.model_randomization import plan

    cases = [
        (dict(model=ModelConfig(name="inception_v3"), data=DataConfig(name="digits")), "is an ImageNet model"),
        (dict(model=ModelConfig(name="cnn"), data=DataConfig(name="skimage_photos")), "holds photographs"),
        (dict(model=ModelConfig(name="resnet50", weights="IMAGENET9K"), data=DataConfig(name="skimage_photos")),
         "IMAGENET1K_V2"),
        (dict(model=ModelConfig(name="vgg16", input_scaling="minus_one_one"), data=DataConfig(name="skimage_photos")),
         "Inception v3's input"),
    ]
    for kwargs, message in cases:
        cfg = ExperimentConfig(method={"gradient": {}}, results_root=str(tmp_path), **kwargs)
        with pytest.raises(ValueError, match=message):
            plan(cfg)
    with pytest.raises(ValueError, match="holds no images"):
        load_dataset(DataConfig(name="image_folder", root=str(tmp_path)), PREPROCESSING["vgg16"])


@pytest.mark.e2e
def test_inception_smoke_run_offline(tmp_path):
    """The whole ImageNet path on scikit-image's photographs with random weights, a few stages."""
    from benchmark.model_randomization import run

    cfg = ExperimentConfig(
        model=ModelConfig(name="inception_v3", input_scaling="minus_one_one"),
        data=DataConfig(name="skimage_photos", crop=96),  # 96 pixels: the same path, seconds not minutes
        method={"gradient": {}, "smoothgrad": {"n_samples": 2}, "integrated_gradients": {"n_steps": 2},
                "guided_backprop": {}, "gradcam": {}, "guided_gradcam": {}, "edge": {}},
        randomization=RandomizationConfig(units=["logits", "Mixed_7c", "Conv2d_1a_3x3"]),
        similarity=SimilarityConfig(metrics=["spearman_abs", "spearman", "ssim", "hog"]),
        n_images=1, n_saved_images=1, n_figure_images=1, results_root=str(tmp_path), progress=False,
        memory_budget_mb=512)
    run_dir = run(cfg)
    df = pd.read_parquet(run_dir / "scores.parquet")
    meta = json.loads((run_dir / "meta.json").read_text())
    assert [s["layer"] for s in meta["stages"]] == ["original", "logits", "Mixed_7c", "Conv2d_1a_3x3"]
    assert meta["data"]["preprocessing"]["scaling"] == "minus_one_one"
    assert meta["model"]["checkpoint"].startswith("random")
    assert (df[df.method == "edge"].value == 1.0).all()
    grad = df[(df.method == "gradient") & (df.metric == "spearman_abs") & (df.stage == 3)].value
    assert grad.notna().all() and (grad < 0.99).all()
    maps = np.load(run_dir / "maps.npz")
    assert maps["gradient/abs"].shape == (4, 1, 96, 96) and maps["gradient/abs"].dtype == np.float16
    assert meta["data"]["preprocessing"] == {"resize": 110, "crop": 96, "scaling": "minus_one_one"}


@pytest.mark.slow
def test_inception_smoke_experiment_full_size(tmp_path):
    """experiment=inception_smoke as a user runs it: 299x299, all 17 stages, every method (minutes)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "experiments" / "model_randomization.py"),
                          "experiment=inception_smoke", f"results_root={tmp_path}", "progress=false"],
                         capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir = Path(out.stdout.strip().splitlines()[-1].split("results: ")[1])
    df = pd.read_parquet(run_dir / "scores.parquet")
    assert df.stage.max() == 17 and set(df.layer) >= {"original", "logits", "Mixed_7c", "Conv2d_1a_3x3"}
