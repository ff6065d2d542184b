"""LRP and DeepLIFT (benchmark.methods.propagation) against zennit and Captum on the same weights and inputs.

The suite's models call F.relu and F.max_pool2d (the MNIST CNN); zennit's Pass rule and Captum's DeepLift act on
nn.ReLU / nn.MaxPool2d modules. So each reference runs on a twin built from those modules with the same weights.
Comparisons are relative to the reference's scale (logits x100, as tests/test_methods_reference.py).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LRP as CaptumLRP
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr import InputXGradient
from captum.attr._utils.lrp_rules import EpsilonRule
from omegaconf import OmegaConf
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlus, EpsilonPlusFlat, NameMapComposite
from zennit.rules import AlphaBeta, Epsilon, Pass, ZPlus

from benchmark.engine import Engine
from benchmark.methods import METHODS, build_method
from benchmark.methods.masks import blurred
from benchmark.methods.settings import method_nodes
from benchmark.methods.propagation import LRP, LRP_RULES, DeepLift, check_lrp_model
from benchmark.models.cnn import MnistCNN

REL, RTOL, MIN_SCALE, LOGIT_SCALE = 1e-5, 1e-4, 1e-2, 100.0


def assert_matches(out, ref, rel=REL):
    scale = float(ref.detach().abs().max())
    assert scale >= MIN_SCALE, f"max |reference| = {scale:.3g} is below {MIN_SCALE}: the comparison says nothing"
    torch.testing.assert_close(out, ref, atol=rel * scale, rtol=RTOL)


class Twin(nn.Module):
    """The MNIST CNN's layers (weights copied) with nn.ReLU and nn.MaxPool2d modules, what zennit's Pass rule and
    Captum's DeepLift act on; ``fail`` raises in the forward or the backward pass after the first ReLU.

    A clone separates each ReLU from its max-pool: Captum hooks a module's input and output tensors, and when
    the ReLU's output is the max-pool's input, the ReLU's hook reads that tensor's gradient before the max-pool's
    hook rewrites it; its map then misses f(x) - f(x0) (by more than its largest value on a random CNN).
    """

    def __init__(self, cnn: MnistCNN, bn: bool = False, fail: str = ""):
        super().__init__()
        self.conv1 = copy.deepcopy(cnn.conv1.conv)
        self.bn1 = nn.BatchNorm2d(self.conv1.out_channels).eval() if bn else None  # Captum LRP refuses nn.Identity
        self.relu1, self.pool1 = nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = copy.deepcopy(cnn.conv2.conv), nn.ReLU(), nn.MaxPool2d(2)
        self.fc1, self.relu3, self.logits = copy.deepcopy(cnn.fc1), nn.ReLU(), copy.deepcopy(cnn.logits)
        self.fail = fail

    def forward(self, x):
        x = self.conv1(x)
        x = self.relu1(self.bn1(x) if self.bn1 is not None else x)
        if self.fail == "forward":
            raise RuntimeError("forward failed")
        if self.fail == "backward":
            x = _FailBackward.apply(x)
        x = self.pool2(self.relu2(self.conv2(self.pool1(x.clone()))).clone())
        return self.logits(self.relu3(self.fc1(x.flatten(1))))


class _FailBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward failed")


def frozen(model):
    """Eval mode, no parameter gradients: how the engine calls external methods (engine.state.prepared)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


@pytest.fixture
def cnn(digits_batch):
    """The MNIST CNN (F.relu, F.max_pool2d), its logits x100, its nn-module twin, real digits and their argmax."""
    torch.manual_seed(0)
    model = frozen(MnistCNN())
    with torch.no_grad():
        model.logits.weight.mul_(LOGIT_SCALE)
        model.logits.bias.mul_(LOGIT_SCALE)
    x, _ = digits_batch
    twin = frozen(Twin(model))
    assert torch.equal(model(x), twin(x))
    return model, twin, x, model(x).argmax(1)


def n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


def one_hot_times_output(target):
    return lambda out: F.one_hot(target, out.shape[1]).to(out) * out


# ----------------------------------------------------------------------------------------------------------- LRP


def zennit_reference(rule):
    """zennit's own composite for ``rule`` on the twin: a built-in one, or rules mapped by the twin's layer names."""
    if rule == "epsilon_plus":
        return EpsilonPlus()
    if rule == "epsilon_plus_flat":
        return EpsilonPlusFlat()
    hook = {"epsilon": Epsilon(), "zplus": ZPlus(), "alpha1beta0": AlphaBeta(alpha=1, beta=0)}[rule]
    return NameMapComposite([(("relu1", "relu2", "relu3"), Pass()), (("conv1", "conv2", "fc1", "logits"), hook)])


@pytest.mark.parametrize("rule", LRP_RULES)
def test_lrp_of_the_f_relu_cnn_is_zennits_on_its_nn_relu_twin(cnn, rule):
    model, twin, x, t = cnn
    with Gradient(twin, zennit_reference(rule)) as attributor:
        _, ref = attributor(x.clone().requires_grad_(True), one_hot_times_output(t))
    out = LRP(rule=rule).attribute(model, x, t)
    assert out.shape == x.shape
    assert_matches(out, ref)
    plain = InputXGradient(model).attribute(x.clone(), target=t)  # the rules matter: LRP is not gradient x input
    if rule != "epsilon":
        assert (out - plain).abs().max() > 0.1 * ref.abs().max()


def test_lrp_epsilon_is_captums_lrp_with_the_epsilon_rule(cnn):
    model, twin, x, t = cnn
    for layer in (twin.conv1, twin.conv2, twin.fc1, twin.logits):
        layer.rule = EpsilonRule(epsilon=1e-6)  # the suite's epsilon
    # Max-pools: zennit passes the gradient; Captum's default Epsilon rule (1e-9) on a small maximum is off by 1e-5.
    twin.pool1.rule, twin.pool2.rule = EpsilonRule(epsilon=1e-30), EpsilonRule(epsilon=1e-30)
    ref = CaptumLRP(twin).attribute(x.clone(), target=t)
    assert_matches(LRP(rule="epsilon").attribute(model, x, t), ref)


def fold_batch_norm(twin):
    """The twin with its batch norm folded into conv1 by hand, no BatchNorm left."""
    folded = copy.deepcopy(twin)
    bn, conv = folded.bn1, folded.conv1
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    conv.weight.copy_(conv.weight * scale[:, None, None, None])
    conv.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
    folded.bn1 = None
    return folded


def with_batch_norm(model):
    twin = Twin(model, bn=True)
    torch.manual_seed(1)
    bn = twin.bn1
    for t, lo in ((bn.weight, 0.5), (bn.bias, -0.5), (bn.running_mean, -0.5), (bn.running_var, 0.5)):
        t.data = lo + torch.rand_like(t)
    return frozen(twin)


@torch.no_grad()
def test_lrp_merges_batch_norm_into_the_layer_before_it(cnn):
    model, _, x, t = cnn
    twin = with_batch_norm(model)
    folded = fold_batch_norm(twin)
    torch.testing.assert_close(twin(x), folded(x), rtol=1e-5, atol=1e-4)
    with torch.enable_grad():
        # epsilon_plus: ZPlus on conv1 reads the merged weights (epsilon_plus_flat's Flat there would not)
        method = LRP(rule="epsilon_plus")
        assert_matches(method.attribute(twin, x, t), method.attribute(folded, x, t), rel=1e-4)


@pytest.mark.parametrize("fail", ["", "forward", "backward"])
@pytest.mark.parametrize("rule", ["epsilon", "epsilon_plus_flat"])
def test_lrp_leaves_no_hooks_and_the_same_model_also_after_an_error(cnn, rule, fail):
    model, _, x, t = cnn
    twin = with_batch_norm(model)
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    out_before = twin(x)
    twin.fail = fail
    if fail:
        with pytest.raises(RuntimeError, match=f"{fail} failed"):
            LRP(rule=rule).attribute(twin, x, t)
    else:
        LRP(rule=rule).attribute(twin, x, t)
    twin.fail = ""
    assert n_hooks(twin) == 0
    assert all(torch.equal(v, before[k]) for k, v in twin.state_dict().items())
    assert torch.equal(twin(x), out_before)
    assert not any(p.requires_grad for p in twin.parameters())


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.gain


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28, 28)
        self.lstm = nn.LSTM(28, 10, batch_first=True)

    def forward(self, x):
        raise AssertionError("the check runs before any forward pass")


@pytest.mark.parametrize("model, kind", [(Recurrent(), "LSTM"), (nn.Sequential(nn.Flatten(), Scaled()), "Scaled")])
def test_lrp_names_a_parametrized_module_no_rule_covers_before_any_compute(model, kind, digits_batch):
    x, _ = digits_batch
    for call in (lambda: check_lrp_model(model), lambda: LRP().attribute(model, x, torch.zeros(len(x), dtype=int))):
        with pytest.raises(ValueError, match=rf"\({kind}\) has parameters and no LRP rule covers it.*replace the layer"):
            call()
    check_lrp_model(MnistCNN())


# ------------------------------------------------------------------------------------------------------ DeepLIFT


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_deeplift_of_the_f_relu_cnn_is_captums_on_its_nn_module_twin(cnn, baseline):
    model, twin, x, t = cnn
    method = DeepLift(baseline=baseline, blur_sigma=2.0)
    x0 = method.reference(x)
    assert not x0.any() if baseline == "zero" else torch.equal(x0, blurred(x, 2.0)) and not torch.equal(x0, x)
    ref = CaptumDeepLift(twin).attribute(x.clone(), baselines=x0, target=t)
    out = method.attribute(model, x, t)
    assert out.shape == x.shape
    # the rescale rule divides by a layer's input change, which the blurred baseline makes tiny at some pixels: the
    # float32 rounding of the two implementations' different operation orders grows there (on an AMD EPYC CPU 2 of
    # 4,704 values differ by 2.3e-5 of the map's scale), so the blurred baseline is held to 1e-4 of the scale
    assert_matches(out, ref, rel=REL if baseline == "zero" else 1e-4)
    # Captum on the F.relu model hooks nothing: its "DeepLift" is the gradient at x times x - x0.
    plain = CaptumDeepLift(model).attribute(x.clone(), baselines=x0, target=t)
    assert (plain - ref).abs().max() > 0.1 * ref.abs().max()
    if baseline == "zero":
        assert_matches(plain, InputXGradient(model).attribute(x.clone(), target=t))


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_deeplift_is_complete(cnn, baseline):
    """The map sums to f(x)[t] - f(x0)[t] for every image."""
    model, _, x, t = cnn
    method = DeepLift(baseline=baseline)
    with torch.no_grad():
        delta = (model(x) - model(method.reference(x))).gather(1, t[:, None])[:, 0]
    sums = method.attribute(model, x, t).sum((1, 2, 3))
    torch.testing.assert_close(sums, delta, atol=1e-4 * float(delta.abs().max()), rtol=1e-4)


def test_deeplift_is_complete_with_overlapping_max_pool_windows(digits_batch):
    """3x3 windows at stride 2 (ResNet's stem): a pixel in two windows gets both windows' shares."""
    torch.manual_seed(0)
    model = frozen(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1), nn.Flatten(),
                                 nn.Linear(4 * 13 * 13, 3)))
    x, _ = digits_batch
    t = model(x).argmax(1)
    method = DeepLift(baseline="blur", blur_sigma=2.0)
    with torch.no_grad():
        delta = (model(x) - model(method.reference(x))).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(method.attribute(model, x, t).sum((1, 2, 3)), delta, atol=1e-5, rtol=1e-4)


SPELLINGS = ["nn.ReLU", "F.relu", "F.relu(inplace=True)", "torch.relu_", "Tensor.relu"]


class Spelled(nn.Module):
    """A tiny CNN with its ReLUs spelled ``spelling`` and max-pools as modules (nn.ReLU) or torch.max_pool2d."""

    def __init__(self, spelling):
        super().__init__()
        self.spelling = spelling
        self.conv1, self.conv2, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1), nn.Linear(294, 5)
        self.relu1, self.relu2, self.pool1, self.pool2 = nn.ReLU(), nn.ReLU(), nn.MaxPool2d(2), nn.MaxPool2d(2)

    def act(self, h, relu, pool):
        s = self.spelling
        if s == "nn.ReLU":
            return pool(relu(h).clone())  # a clone between the modules (Twin)
        if s == "F.relu":
            h = F.relu(h)
        elif s == "F.relu(inplace=True)":
            F.relu(h, inplace=True)
        elif s == "torch.relu_":
            torch.relu_(h)
        else:
            h = h.relu()
        return torch.max_pool2d(h, 2) if s == "Tensor.relu" else F.max_pool2d(h, 2)

    def forward(self, x):
        x = self.act(self.conv1(x), self.relu1, self.pool1)
        x = self.act(self.conv2(x), self.relu2, self.pool2)
        return LOGIT_SCALE * self.fc(x.flatten(1))


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_deeplift_of_every_relu_spelling_is_captums_on_the_nn_module_twin(digits_batch, spelling):
    torch.manual_seed(0)
    twin = frozen(Spelled("nn.ReLU"))
    model = frozen(Spelled(spelling))
    model.load_state_dict(twin.state_dict())
    x, _ = digits_batch
    t = twin(x).argmax(1)
    x0 = blurred(x, 1.5)
    ref = CaptumDeepLift(twin).attribute(x.clone(), baselines=x0, target=t)
    assert_matches(DeepLift(baseline="blur", blur_sigma=1.5).attribute(model, x, t), ref)
    assert torch.equal(model(x), twin(x))


def test_deeplift_leaves_the_model_as_it_was_also_after_an_error(cnn):
    model, twin, x, t = cnn
    out_before = model(x)
    DeepLift().attribute(model, x, t)
    for fail in ("forward", "backward"):
        twin.fail = fail
        with pytest.raises(RuntimeError, match=f"{fail} failed"):
            DeepLift().attribute(twin, x, t)
        assert torch.overrides._get_current_function_mode_stack() == []
    twin.fail = ""
    assert torch.equal(model(x), out_before) and torch.equal(twin(x), out_before)
    assert n_hooks(model) == 0 and n_hooks(twin) == 0
    assert torch.overrides._get_current_function_mode_stack() == []


def test_deeplift_refuses_a_nonlinearity_without_a_rule(digits_batch):
    x, _ = digits_batch
    model = frozen(nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.Sigmoid(), nn.Linear(8, 3)))
    with pytest.raises(ValueError, match="calls sigmoid.*Rescale rule for ReLU and max-pooling only"):
        DeepLift().attribute(model, x, torch.zeros(len(x), dtype=int))
    assert torch.overrides._get_current_function_mode_stack() == []


# ------------------------------------------------------------------------------------------- settings and engine


@pytest.mark.parametrize("method, key, value, fix", [
    (LRP(rule="lrp0"), "method.lrp.rule", "'lrp0'", "epsilon_plus_flat"),
    (LRP(epsilon=0.0), "method.lrp.epsilon", "0.0", "positive number"),
    (LRP(epsilon=True), "method.lrp.epsilon", "True", "positive number"),
    (DeepLift(baseline="mean"), "method.deeplift.baseline", "'mean'", "'zero', 'blur'"),
    (DeepLift(blur_sigma=0), "method.deeplift.blur_sigma", "0", "positive number of pixels"),
    (DeepLift(blur_sigma=-1.0), "method.deeplift.blur_sigma", "-1.0", "positive number of pixels"),
    (DeepLift(blur_sigma=float("inf")), "method.deeplift.blur_sigma", "inf", "positive number of pixels"),
])
def test_bad_settings_name_key_value_and_fix(method, key, value, fix):
    with pytest.raises(ValueError) as err:
        method.check()
    assert all(s in str(err.value) for s in (f"{key}={value}", fix)), str(err.value)


@pytest.mark.parametrize("cls", [LRP, DeepLift])
def test_the_command_lines_nodes_hold_the_defaults(cls):
    node = OmegaConf.to_container(OmegaConf.structured(method_nodes()[cls.name]))
    assert node == {f: getattr(cls(), f) for f in cls.__dataclass_fields__}
    cls(**node).check()


def test_the_engine_runs_both_with_parameters_frozen(cnn):
    model, _, x, t = cnn
    for p in model.parameters():
        p.requires_grad_(True)  # the engine turns them off for the call and back on after
    methods = [LRP(), DeepLift(baseline="blur")]
    maps = Engine(model, methods, layout="plain").explain(x, t, torch.arange(len(x)))
    frozen(model)
    for m in methods:
        torch.testing.assert_close(maps[m.name], m.attribute(model, x, t))
    assert n_hooks(model) == 0


@pytest.mark.skipif(not {"lrp", "deeplift"} <= set(METHODS), reason="not yet registered in benchmark/methods/__init__.py")
def test_the_registry_builds_them_from_the_command_lines_nodes():
    for cls in (LRP, DeepLift):
        settings = OmegaConf.to_container(OmegaConf.structured(method_nodes()[cls.name]))
        assert METHODS[cls.name] is cls and build_method(cls.name, settings) == cls(**settings)
    with pytest.raises(ValueError, match="method.lrp.rule='lrp0' is not an LRP rule"):
        build_method("lrp", {"rule": "lrp0"})
    with pytest.raises(ValueError, match="method.deeplift.baseline='mean' is not a DeepLIFT baseline"):
        build_method("deeplift", {"baseline": "mean"})
