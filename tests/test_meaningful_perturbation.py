"""Meaningful perturbation (Fong and Vedaldi 2017): no reference implementation to match, so the defining properties.

The model is a fixed CNN with a clear class signal: a spot detector (sharp bright blobs; a blur removes its
response) read by the left half of the image for class 0 and the right half for class 1.
"""

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from benchmark.methods.external import probe_method
from benchmark.methods.meaningful_perturbation import MeaningfulPerturbation, optimize_masks, perturb, tv, upsample
from benchmark.methods.masks import blurred

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(n_steps=40, jitter=1)
QUICK = dict(n_steps=15, jitter=1)


class SpotNet(nn.Module):
    def __init__(self, size: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(size * size, 2)
        with torch.no_grad():
            self.conv.weight.fill_(-1 / 8)
            self.conv.weight[0, 0, 1, 1] = 1
            self.conv.bias.fill_(-0.25)
            left = torch.zeros(size, size)
            left[:, : size // 2] = 1
            self.fc.weight.copy_(2 * torch.stack([left.flatten(), 1 - left.flatten()]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).flatten(1))


@pytest.fixture
def model():
    return SpotNet().eval().requires_grad_(False)


@pytest.fixture
def batch():
    """Four 16 x 16 images, each a 3 x 3 bright square; the target is the side it is on."""
    x = torch.zeros(4, 1, 16, 16)
    for i, (r, c) in enumerate([(3, 2), (9, 4), (5, 11), (11, 12)]):
        x[i, 0, r : r + 3, c : c + 3] = 1
    return x, torch.tensor([0, 0, 1, 1])


def prob(model, x, target):
    return model(x).softmax(1).gather(1, target[:, None])[:, 0]


@pytest.mark.parametrize("jitter", [0, 1])
def test_the_objective_decreases(model, batch, jitter):
    x, target = batch
    _, history = optimize_masks(model, x, target, MeaningfulPerturbation(n_steps=40, jitter=jitter))
    assert history.shape == (40, 4)
    assert (history[-5:].mean(0) < history[:5].mean(0) - 0.05).all()
    if jitter == 0:  # no draws: the objective is deterministic
        assert (history[-1] < history[0] - 0.2).all()


def test_the_deletion_lowers_the_target_score_where_the_evidence_is(model, batch):
    x, target = batch
    method = MeaningfulPerturbation(**FAST)
    masks, _ = optimize_masks(model, x, target, method)
    assert masks.shape == (4, 1, 7, 7) and masks.min() >= 0 and masks.max() <= 1
    (_, sigma, _) = method.sizes(16, 16)
    before = prob(model, x, target)
    after = prob(model, perturb(x, blurred(x, sigma), upsample(masks, x)), target)
    assert (before > 0.95).all() and (after < before - 0.3).all()
    saliency = method.attribute(model, x, target)
    assert torch.allclose(saliency, 1 - upsample(masks, x))
    near = blurred(x, 1.0) > 0.05  # the square and its rim
    for s, n in zip(saliency[:, 0], near[:, 0]):
        assert s[n].mean() > s[~n].mean() + 0.3


def test_batching_does_not_change_an_images_map(model, batch):
    x, target = batch
    method = MeaningfulPerturbation(**QUICK)
    together = method.attribute(model, x, target)
    alone = torch.cat([method.attribute(model, x[i : i + 1], target[i : i + 1]) for i in range(len(x))])
    order = torch.tensor([2, 0, 3, 1])
    shuffled = method.attribute(model, x[order], target[order])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together[order], shuffled, atol=1e-5)


def test_the_seed_decides_the_draws(model, batch):
    x, target = batch
    one = MeaningfulPerturbation(**QUICK).attribute(model, x, target)
    assert torch.equal(one, MeaningfulPerturbation(**QUICK).attribute(model, x, target))
    other = MeaningfulPerturbation(**QUICK, seed=1).attribute(model, x, target)
    assert not torch.allclose(one, other, atol=1e-3)
    # without jitter nothing is drawn
    still = [MeaningfulPerturbation(n_steps=10, jitter=0, seed=s).attribute(model, x, target) for s in (0, 1)]
    assert torch.equal(*still)


def _hooks(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


@pytest.mark.parametrize("training,requires_grad", [(False, False), (True, True)])
def test_the_model_and_inputs_are_left_as_they_were(batch, training, requires_grad):
    x, target = batch
    model = SpotNet().train(training).requires_grad_(requires_grad)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks, x_before = _hooks(model), x.clone()
    with torch.no_grad():  # the method takes its own gradients
        out = MeaningfulPerturbation(n_steps=5, jitter=1).attribute(model, x, target)
    assert out.shape == (4, 1, 16, 16) and bool(torch.isfinite(out).all())
    assert model.training is training and _hooks(model) == hooks and torch.equal(x, x_before)
    assert all(p.requires_grad is requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_the_map_passes_the_suites_probe(model, batch):
    x, target = batch
    method = MeaningfulPerturbation(n_steps=3)
    probe_method(method, model, x, target)
    assert method.name == "meaningful_perturbation" and method.signed is False


def test_automatic_sizes_scale_the_papers():
    method = MeaningfulPerturbation()
    assert method.sizes(224, 224) == ((28, 28), 10.0, 2)  # the paper's 28 x 28 mask and blur 10
    assert method.sizes(28, 28) == ((7, 7), 1.25, 1)
    assert method.sizes(8, 8) == ((4, 4), 1.0, 1)
    assert MeaningfulPerturbation(mask_size=5, blur_sigma=2.0, jitter=0).sizes(28, 28) == ((5, 5), 2.0, 0)


def test_tv_is_the_papers_sum_per_side():
    flat = torch.full((1, 1, 4, 4), 0.3)
    assert tv(flat, 3.0).item() == 0
    step = torch.zeros(1, 1, 4, 4)
    step[..., 2:] = 1  # one unit jump in each of 4 rows
    assert tv(step, 3.0).item() == pytest.approx(4 / 4)
    assert tv(step * 0.5, 3.0).item() == pytest.approx(4 * 0.125 / 4)
    m = torch.rand(2, 1, 5, 5, requires_grad=True)
    (g,) = torch.autograd.grad(tv(m, 1.0).sum(), m)  # beta = 1: finite gradients, also at zero differences
    assert bool(torch.isfinite(g).all())


BAD = [("n_steps", 0), ("n_steps", 2.5), ("learning_rate", 0.0), ("learning_rate", -0.1), ("lambda1", -1e-4),
       ("lambda2", -0.01), ("beta", 0.5), ("mask_size", -1), ("blur_sigma", -1.0), ("jitter", -1), ("jitter", 1.5)]


@pytest.mark.parametrize("key,value", BAD)
def test_check_names_the_setting_the_value_and_the_fix(key, value):
    with pytest.raises(ValueError) as err:
        MeaningfulPerturbation(**{key: value}).check()
    message = str(err.value)
    assert f"method.meaningful_perturbation.{key}={value!r}" in message and "use " in message


@pytest.mark.parametrize("key,value", [("mask_size", 29), ("jitter", 28)])
def test_check_input_refuses_settings_too_large_for_the_images(key, value):
    MeaningfulPerturbation().check_input((28, 28))
    with pytest.raises(ValueError, match=f"method.meaningful_perturbation.{key}={value} .* use "):
        MeaningfulPerturbation(**{key: value}).check_input((28, 28))


def test_the_defaults_and_the_command_lines_node_agree(monkeypatch):
    from benchmark.methods.settings import method_nodes

    MeaningfulPerturbation().check()
    node = OmegaConf.to_container(OmegaConf.structured(method_nodes()["meaningful_perturbation"]))
    defaults = {f.name: f.default for f in dataclasses.fields(MeaningfulPerturbation)}
    assert node == defaults
    from hydra import compose, initialize_config_dir

    import common
    from benchmark.methods import METHODS, build_methods

    monkeypatch.setitem(METHODS, "meaningful_perturbation", MeaningfulPerturbation)  # as the registry will
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="model_randomization",
                      overrides=["method=[meaningful_perturbation]", "method.meaningful_perturbation.jitter=2"])
    (built,) = build_methods(common.to_experiment(cfg).method)
    assert built == MeaningfulPerturbation(jitter=2)
