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
