import pytest
import torch
from torch import nn

from benchmark.config import BatchNormStats, Order, RandomizationConfig, Reinit
from benchmark.models import ARCHITECTURES, Architecture, get_architecture
from benchmark.models.cnn import init_default
from benchmark.randomization import randomized, stages


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_stage_orders_follow_the_paper():
    arch = get_architecture("cnn")
    casc = stages(arch, Order.cascading)
    assert [s.layer for s in casc] == ["original", "logits", "fc1", "conv2", "conv1"]
    assert casc[2].units == ("logits", "fc1") and casc[0].units == ()
    indep = stages(arch, Order.independent)
    assert [s.units for s in indep[1:]] == [("logits",), ("fc1",), ("conv2",), ("conv1",)]
    bottom = stages(arch, Order.bottom_up)
    assert [s.layer for s in bottom] == ["original", "conv1", "conv2", "fc1", "logits"]
    assert bottom[2].units == ("conv1", "conv2")
    sub = stages(arch, Order.cascading, ["conv1", "logits"])
    assert [s.layer for s in sub] == ["original", "logits", "conv1"]


def test_unknown_unit_names_the_unit_and_the_choices():
    with pytest.raises(ValueError, match=r"'conv9'.*units are \['conv1', 'conv2', 'fc1', 'logits'\]"):
        stages(get_architecture("cnn"), Order.cascading, ["conv9"])


@pytest.mark.parametrize("policy", list(Reinit))
def test_weights_change_inside_and_are_restored_bit_identically(policy):
    arch = get_architecture("cnn")
    model = arch.build(1, 10)
    before = state(model)
    cfg = RandomizationConfig(reinit=policy)
    stage = stages(arch, Order.cascading)[2]  # logits + fc1
    with randomized(model, arch, stage, cfg, seed=0):
        inside = state(model)
    after = state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(inside["logits.weight"], before["logits.weight"])
    assert not torch.equal(inside["fc1.weight"], before["fc1.weight"])
    assert torch.equal(inside["conv1.conv.weight"], before["conv1.conv.weight"])
    if policy == Reinit.truncated_normal:
        assert inside["fc1.weight"].abs().max() <= 2 * cfg.std
        assert inside["fc1.weight"].std() == pytest.approx(0.0088, rel=0.05)


def test_restored_after_an_exception():
    arch = get_architecture("cnn")
    model = arch.build(1, 10)
    before = state(model)
    with pytest.raises(RuntimeError):
        with randomized(model, arch, stages(arch, Order.cascading)[-1], RandomizationConfig(), seed=0):
            raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in state(model).items())
    for m in model.modules():
        assert not m._forward_hooks


def test_each_unit_has_its_own_stream_and_the_same_draw_at_every_stage():
    arch = get_architecture("cnn")
    model = arch.build(1, 10)
    cfg = RandomizationConfig(reinit=Reinit.layer_default)
    casc = stages(arch, Order.cascading)
    with randomized(model, arch, casc[1], cfg, seed=0):
        logits_a = model.logits.weight.clone()
    with randomized(model, arch, casc[3], cfg, seed=0):
        logits_b = model.logits.weight.clone()
    with randomized(model, arch, casc[1], cfg, seed=1):
        logits_c = model.logits.weight.clone()
    assert torch.equal(logits_a, logits_b)
    assert not torch.equal(logits_a, logits_c)


def test_batchnorm_statistics_kept_by_default_and_reset_on_request():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    net[1].running_mean.fill_(3.0)
    net[1].weight.data.fill_(2.0)
    arch = Architecture("bn", lambda c, k: net, {"block": ("0", "1")}, None, init_default)
    stage = stages(arch, Order.cascading)[1]
    with randomized(net, arch, stage, RandomizationConfig(reinit=Reinit.layer_default), seed=0):
        assert torch.all(net[1].running_mean == 3.0)
        assert torch.all(net[1].weight == 1.0)
    cfg = RandomizationConfig(reinit=Reinit.layer_default, batchnorm_stats=BatchNormStats.reset)
    with randomized(net, arch, stage, cfg, seed=0):
        assert torch.all(net[1].running_mean == 0.0)
    assert torch.all(net[1].running_mean == 3.0) and torch.all(net[1].weight == 2.0)


def test_every_architecture_declares_units_that_exist():
    for name, arch in ARCHITECTURES.items():
        model = arch.build(1, 10)
        for unit, paths in arch.units.items():
            for path in paths:
                model.get_submodule(path)
        if arch.gradcam_layer:
            model.get_submodule(arch.gradcam_layer)


@pytest.mark.parametrize("order", list(Order))
@pytest.mark.parametrize("bn_stats", list(BatchNormStats))
def test_units_drawn_once_per_run_give_the_same_weights_as_drawn_per_stage(order, bn_stats, monkeypatch):
    """``randomized(..., drawn)``: each unit is drawn once and copied at later stages; every stage's weights
    and buffers are the ones a fresh draw gives, and the model is restored after each stage."""
    import benchmark.randomization as R

    arch = get_architecture("resnet50")  # units with BatchNorm buffers
    torch.manual_seed(0)
    model = arch.build(3, 10)
    before = state(model)
    cfg = RandomizationConfig(batchnorm_stats=bn_stats)
    fresh = []
    for st in stages(arch, order)[:6]:
        with randomized(model, arch, st, cfg, seed=0):
            fresh.append(state(model))
    draws = []
    original = R._reinit_on_cpu
    monkeypatch.setattr(R, "_reinit_on_cpu", lambda modules, *a: (draws.append(modules), original(modules, *a)))
    drawn = {}
    for st, expected in zip(stages(arch, order)[:6], fresh):
        with randomized(model, arch, st, cfg, seed=0, drawn=drawn):
            got = state(model)
        assert all(torch.equal(got[k], expected[k]) for k in expected), st.layer
        assert all(torch.equal(v, before[k]) for k, v in state(model).items())
    assert len(draws) == len({u for st in stages(arch, order)[:6] for u in st.units})
