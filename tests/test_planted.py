"""The ground-truth task (data=planted) and the localization scores, against their definitions and scipy."""

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from benchmark.config import DataConfig
from benchmark.data.planted import load_planted, places
from benchmark.localization import localization


@pytest.mark.parametrize("variant", ["pattern", "digit"])
def test_the_square_decides_the_label_or_is_a_distractor(variant):
    from sklearn.datasets import load_digits

    data = load_planted(DataConfig(name="planted", planted_variant=variant, planted_size=3))
    regions = data.eval_regions
    assert regions.shape == (len(data.eval_images), 28, 28) and bool((regions.sum((1, 2)) == 9).all())
    assert bool((data.eval_images[:, 0][regions] == 1.0).all())
    corners = places(3)
    place = torch.tensor([corners.index(tuple(int(v) for v in r.nonzero()[0])) for r in regions])
    digits = torch.as_tensor(load_digits().target)
    if variant == "pattern":
        assert torch.equal(place, data.eval_labels)  # the label is the square's place
    else:
        assert not torch.equal(place, data.eval_labels) and set(data.eval_labels.tolist()) <= set(digits.tolist())
        assert float((place == data.eval_labels).float().mean()) < 0.25  # independent of the label
    # the squares sit in the border, outside the digit's 20 x 20 box
    assert not regions[:, 4:24, 4:24].any()


def test_localization_scores_by_definition_and_auc_against_the_mann_whitney_statistic():
    g = np.random.default_rng(0)
    maps = g.random((5, 10, 10))
    regions = np.zeros((5, 10, 10), dtype=bool)
    regions[:, 2:5, 3:6] = True
    maps[0, 3, 4] = 5.0  # image 0 points inside
    maps[1, 8, 8] = 5.0  # image 1 outside
    got = localization(maps, regions)
    for i in range(5):
        m, r = maps[i].ravel(), regions[i].ravel()
        assert got["mass"][i] == pytest.approx(m[r].sum() / m.sum())
        u = mannwhitneyu(m[r], m[~r]).statistic
        assert got["auc"][i] == pytest.approx(u / (r.sum() * (~r).sum()))
    assert got["pointing"][0] == 1.0 and got["pointing"][1] == 0.0
    zero = localization(np.zeros((1, 10, 10)), regions[:1])
    assert np.isnan(zero["mass"][0]) and np.isnan(zero["pointing"][0]) and np.isnan(zero["auc"][0])


@pytest.mark.e2e
def test_trained_maps_point_at_the_square_and_stop_after_randomization(tmp_path):
    import sys
    from pathlib import Path

    from conftest import smoke_cfg

    from benchmark.model_randomization import run

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from localization import run_localization

    out = run(smoke_cfg(tmp_path / "results", "data=planted", "method=[gradient,edge]", "n_images=12",
                        "n_saved_images=12", "training.epochs=3"))
    table = run_localization(out)
    assert (out / "localization.csv").is_file()
    mean = table.groupby(["method", "score", "stage"])["value"].mean()
    assert mean["gradient", "pointing", 0] >= 0.9 and mean["gradient", "pointing", 4] <= 0.5
    assert mean["gradient", "auc", 0] > mean["gradient", "auc", 4]
    assert mean["edge", "auc", 0] == mean["edge", "auc", 4]  # the control ignores the model


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").exists(), reason="../shared/data/MNIST not present")
@pytest.mark.parametrize("variant", ["pattern", "digit"])
def test_mnist_base_plants_the_square_in_both_splits(variant):
    from benchmark.data.mnist import load_mnist_like

    cfg = DataConfig(name="planted", root=str(SHARED), planted_base="mnist", planted_variant=variant)
    data = load_planted(cfg)
    base = load_mnist_like(cfg, "mnist")
    corners = places(3)
    for split in ("train", "eval"):
        images, plain = getattr(data, f"{split}_images"), getattr(base, f"{split}_images")
        assert images.shape == plain.shape and len(getattr(data, f"{split}_labels")) == len(plain)
        changed = (images != plain).flatten(1).any(1)
        assert float(changed.float().mean()) > 0.99  # a 1.0 square over ink already at 1.0 changes nothing
        outside = torch.ones(28, 28, dtype=torch.bool)
        for r, c in corners:
            outside[r:r + 3, c:c + 3] = False
        assert torch.equal(images[:, 0][:, outside], plain[:, 0][:, outside])  # only the ten places change
    regions = data.eval_regions
    assert regions.shape == (len(data.eval_images), 28, 28) and bool((data.eval_images[:, 0][regions] == 1.0).all())
    place = torch.tensor([corners.index(tuple(int(v) for v in r.nonzero()[0])) for r in regions])
    if variant == "pattern":
        assert torch.equal(place, data.eval_labels)
    else:
        assert torch.equal(data.eval_labels, base.eval_labels)
    overlap = data.provenance["overlap"]
    assert set(overlap) == {"train", "eval"} and all(0 <= v < 0.2 for v in overlap.values())


def test_planted_base_is_checked_before_loading():
    from benchmark.data.planted import check_planted

    with pytest.raises(ValueError, match=r"data.planted_base='fashion' is not a base; use digits .* or mnist"):
        check_planted(DataConfig(name="planted", planted_base="fashion"))


def test_every_scored_map_is_localized_in_the_run_and_the_report_shows_it(tmp_path):
    """localization.parquet holds every scored image's scores at every stage, the same as
    benchmark.localization (checked against scipy above) of the saved unclipped maps, within their float16 rounding;
    status.json hashes it, the report has its section, and a folder written again without regions drops it."""
    import json
    import sys
    from pathlib import Path

    import pandas as pd
    from conftest import smoke_cfg

    import benchmark
    from benchmark.model_randomization import run

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from localization import run_localization

    out = run(smoke_cfg(tmp_path / "results", "data=planted", "method=[gradient,edge]", "n_images=10",
                        "n_saved_images=4", "training.epochs=1"))
    loc = pd.read_parquet(out / "localization.parquet")
    scores = pd.read_parquet(out / "scores.parquet")
    stages = sorted(scores.stage.unique())
    assert sorted(loc.stage.unique()) == stages and set(loc.method) == {"gradient", "edge"}
    assert len(loc) == len(stages) * 2 * 3 * 10 and set(loc.image) == set(scores.image)  # stages x methods x scores
    saved = run_localization(out)  # the script: the 4 saved images' float16 magnitudes
    both = saved.merge(loc, on=["stage", "method", "score", "image"], suffixes=("_saved", "_run"))
    assert len(both) == len(stages) * 2 * 3 * 4
    for score, tol in (("mass", 2e-3), ("auc", 2e-3)):
        d = both[both.score == score]
        np.testing.assert_allclose(d.value_saved, d.value_run, atol=tol, err_msg=score)
    assert "localization.parquet" in json.loads((out / "status.json").read_text())["files"]
    report = (out / "report.md").read_text()
    assert "Where the evidence is" in report and "Pointing game" in report

    # the same folder written again from data that know no regions: no stale localization beside the new scores
    torch.manual_seed(0)
    from benchmark.models.cnn import MnistCNN

    r = benchmark.sanity_check(MnistCNN().eval(), torch.rand(4, 1, 28, 28), methods=["gradient"], quiet=True,
                               progress=False)
    assert r.localization is None
    r.write(out)
    assert not (out / "localization.parquet").exists()
    assert "Where the evidence is" not in (out / "report.md").read_text()
