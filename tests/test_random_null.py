"""The fair null of the model randomization tests: two independently randomized models, in every run.

The null is redrawn here from the run's saved settings with plain autograd and scipy; the random_null verdict rule
is checked on tables whose outcome is known; the null leaves the run's own scores untouched.
"""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

import benchmark
from benchmark import rng
from benchmark.config import VerdictConfig, VerdictRule
from benchmark.randomization import randomized
from benchmark.report.stats import paired_difference, summarize, verdicts
from benchmark.scoring import process


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 14 * 14, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))))


def images(n=6, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def gradient_maps(model, x):
    """Plain autograd: the gradient of each image's predicted-class logit."""
    x = x.clone().requires_grad_(True)
    out = model(x)
    out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
    return x.grad.detach()


def test_the_null_is_redrawn_independently_from_the_saved_settings():
    torch.manual_seed(0)
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    result = benchmark.sanity_check(model, x, test="cascading", methods=["gradient"], quiet=True, progress=False,
                                    randomization={"fair_null": True})
    cfg, arch = result.plan.cfg, result.plan.arch
    null = result.null
    assert null is not None and set(null.test) == {"cascading"}
    assert sorted(null.stage.unique()) == [1, 2, 3] and len(null) == 3 * 4 * len(x)
    assert result.meta["null"]["seed"] == rng.derive_seed(cfg.seed, "null")
    model.eval()
    for st in result.plan.stages[1:]:
        with randomized(model, arch, st, cfg.randomization, cfg.seed) as m:
            a = gradient_maps(m, x)
            weights_a = [p.detach().clone() for p in m.parameters()]
        with randomized(model, arch, st, cfg.randomization, rng.derive_seed(cfg.seed, "null")) as m:
            b = gradient_maps(m, x)
            assert any(not torch.equal(p, q) for p, q in zip(m.parameters(), weights_a))  # a draw of its own
        pa = process({"g": a}, cfg.similarity.percentile)["g"]["abs"]
        pb = process({"g": b}, cfg.similarity.percentile)["g"]["abs"]
        expected = [spearmanr(u.ravel(), v.ravel()).statistic for u, v in zip(pa, pb)]
        got = null[(null.stage == st.index) & (null.metric == "spearman_abs")].sort_values("image").value
        np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-5, err_msg=st.layer)
    for k, v in model.state_dict().items():  # the model as it was after both runs
        assert torch.equal(v, before[k]), k


def test_the_null_leaves_the_runs_scores_unchanged_and_can_be_turned_off(tmp_path):
    torch.manual_seed(1)
    model = Net()
    on = benchmark.sanity_check(model, images(4), test="independent", methods=["gradient", "noise"], quiet=True,
                                progress=False, randomization={"fair_null": True})
    off = benchmark.sanity_check(model, images(4), test="independent", methods=["gradient", "noise"], quiet=True,
                                 progress=False, randomization={"fair_null": False})
    cols = ["stage", "method", "metric", "image", "value", "nan_reason", "tie_fraction", "target"]
    assert on.scores[cols].equals(off.scores[cols])
    assert off.null is None and "null" not in off.meta
    out = on.write(tmp_path / "run")
    assert (out / "null.parquet").is_file()
    summary = pd.read_csv(out / "summary.csv")
    later = summary[summary.stage > 0]
    assert later.null_mean.notna().all() and summary[summary.stage == 0].null_mean.isna().all()
    html = (out / "report.html").read_text()
    assert "The fair null: two independently randomized models" in html and "random_null" in html
    assert not (off.write(tmp_path / "off") / "null.parquet").exists()


def _table(values: dict[str, list[float]], stage: int = 1) -> pd.DataFrame:
    rows = [{"test": "cascading", "stage": stage, "layer": "fc", "method": m, "metric": "spearman_abs", "image": i,
             "value": v, "nan_reason": None, "tie_fraction": 0.0} for m, vs in values.items() for i, v in enumerate(vs)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("rule", [VerdictRule.random_null])
def test_the_random_null_rule_on_known_tables(rule):
    g = np.random.default_rng(0)
    n = 40
    null_values = g.normal(0.1, 0.05, n)
    scores = _table({"same": null_values + g.normal(0, 0.05, n),  # the null's level: not above it
                     "above": null_values + 0.2 + g.normal(0, 0.05, n),  # clearly above
                     "below": null_values - 0.2,
                     "edge": np.ones(n), "few": [0.5, np.nan, np.nan, np.nan]})
    null = _table({"same": null_values, "above": null_values, "below": null_values, "edge": np.ones(n),
                   "few": [0.1, 0.1, 0.1, 0.1]})
    s, ns = summarize(scores), summarize(null)
    diff = summarize(paired_difference(scores, null))
    v = verdicts(s, {"spearman_abs": (-0.05, 0.05)}, VerdictConfig(rule=rule), 1, ns, diff).set_index("method")
    assert v.loc["same", "verdict"] == "pass" and v.loc["below", "verdict"] == "pass"
    assert v.loc["above", "verdict"] == "fail" and "above the null" in v.loc["above", "why"]
    assert v.loc["edge", "verdict"] == "fail" and "do not depend on the parameters" in v.loc["edge", "why"]
    assert v.loc["few", "verdict"] == "inconclusive"
    np.testing.assert_allclose(v.loc["below", "fell_toward_null"],
                               (1 - scores[scores.method == "below"].value.mean()) / (1 - null_values.mean()))
    # the same tables without a null: the calibration band's upper edge, and the reason says so
    fallback = verdicts(s, {"spearman_abs": (-0.05, 0.05)}, VerdictConfig(rule=rule), 1).set_index("method")
    assert fallback.loc["above", "verdict"] == "fail" and "no null in this run" in fallback.loc["above", "why"]
    assert fallback.loc["above", "level"] == 0.05


def test_the_null_is_drawn_on_request(tmp_path):
    from conftest import smoke_cfg

    from benchmark.config import ExperimentConfig

    assert ExperimentConfig().randomization.fair_null is False  # it doubles the stages' maps
    assert ExperimentConfig().verdict.rule == VerdictRule.calibration_band  # docs/outputs.md says why
    assert smoke_cfg(tmp_path).randomization.fair_null is False
    assert smoke_cfg(tmp_path, "randomization.fair_null=true").randomization.fair_null is True
    assert VerdictRule(smoke_cfg(tmp_path, "verdict=random_null").verdict.rule) == VerdictRule.random_null
