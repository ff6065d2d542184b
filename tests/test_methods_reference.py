"""The engine's methods against Captum on the same model and inputs, and the noise level against its definition.

Every comparison is relative to the reference's scale (``assert_matches``): the maps of the tiny CNN are made
large (its logits x100, the same argmax) and each reference must reach ``MIN_SCALE``, so no map passes by being
small (at an absolute 1e-5, Guided GradCAM's maps of the unscaled CNN, at most 3e-6, would match zeros).
"""

import pytest
import torch
import torch.nn.functional as F
from captum.attr import (GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, LayerAttribution,
                         LayerGradCam, NoiseTunnel, Saliency)
from torch import nn

from benchmark.engine import Engine, path_alphas
from benchmark.methods import build_method, build_methods
from tests.conftest import TinyCNN

REL, RTOL = 1e-5, 1e-4  # atol = REL * max |reference|; rtol on top
MIN_SCALE = 1e-2  # max |reference| must reach this, a thousand times an absolute 1e-5
LOGIT_SCALE = 100.0


def assert_matches(out, ref):
    """``out`` equals ``ref`` to REL of the reference's largest magnitude, and that magnitude is far from zero."""
    scale = float(ref.detach().abs().max())
    assert scale >= MIN_SCALE, f"max |reference| = {scale:.3g} is below {MIN_SCALE}: the comparison says nothing"
    torch.testing.assert_close(out, ref, atol=REL * scale, rtol=RTOL)


def scaled(model, last=None):
    """``model`` with its logits multiplied by LOGIT_SCALE (the same argmax; every map grows with them)."""
    last = last if last is not None else model.fc
    with torch.no_grad():
        last.weight.mul_(LOGIT_SCALE)
        last.bias.mul_(LOGIT_SCALE)
    return model


def explain(model, x, target, name, seed=0, layer=None, ids=None, **settings):
    layer = layer if layer is not None else getattr(model, "conv2", None)
    # Captum runs in PyTorch's plain layout; so does the engine here, for the same arithmetic. In another
    # layout, rounding can break exact ties of conv outputs on the digits' flat regions the other way at a
    # max-pool (tests/test_engine.py compares the layouts on inputs without ties).
    engine = Engine(model, [build_method(name, settings)], target_layer=layer, seed=seed, layout="plain")
    return engine.explain(x, target, torch.arange(len(x)) if ids is None else ids)[name]


@pytest.fixture
def setup(tiny_cnn, digits_batch):
    x, _ = digits_batch
    model = scaled(tiny_cnn)
    target = model(x).argmax(1)
    return model, x, target


def plain_gradient(model, x, target):
    xs = x.clone().requires_grad_(True)
    return torch.autograd.grad(model(xs).gather(1, target[:, None]).sum(), xs)[0]


def test_gradient_matches_saliency(setup):
    model, x, t = setup
    ref = Saliency(model).attribute(x, target=t, abs=False)
    assert_matches(explain(model, x, t, "gradient"), ref)


def test_gradient_x_input_matches(setup):
    model, x, t = setup
    ref = InputXGradient(model).attribute(x, target=t)
    assert_matches(explain(model, x, t, "gradient_x_input"), ref)


@pytest.mark.parametrize("rule", ["riemann_trapezoid", "riemann_right", "riemann_left", "riemann_middle",
                                  "gausslegendre"])
def test_integrated_gradients_matches_captum(setup, rule):
    model, x, t = setup
    ref = IntegratedGradients(model).attribute(x, baselines=0.0, target=t, n_steps=20, method=rule)
    assert_matches(explain(model, x, t, "integrated_gradients", n_steps=20, rule=rule), ref)


def test_linspace_rule_is_the_paper_code_formula(setup):
    model, x, t = setup
    n = 10
    grads = []
    for a in torch.linspace(0, 1, n):
        xs = (a * x).requires_grad_(True)
        out = model(xs).gather(1, t[:, None]).sum()
        grads.append(torch.autograd.grad(out, xs)[0])
    ref = x * torch.stack(grads).mean(0)
    assert_matches(explain(model, x, t, "integrated_gradients", n_steps=n), ref)
    a, w = path_alphas(n, "linspace")
    assert float(w.sum()) == pytest.approx(1.0)


def sd_by_definition(image, level):
    """The noise sd of the paper's code (PAIR saliency): noise_level * (max x - min x) of the image."""
    return level * (float(image.max()) - float(image.min()))


def first_layer_inputs(model, run):
    """``run()``'s result and every input with gradients that ``model.conv1`` saw meanwhile (its noisy copies)."""
    seen = []
    handle = model.conv1.register_forward_pre_hook(
        lambda _m, inp: seen.append(inp[0].detach().clone()) if inp[0].requires_grad else None)
    try:
        out = run()
    finally:
        handle.remove()
    return out, torch.cat(seen)


def assert_noise_by_definition(copies, image, level):
    """The copies are the image plus noise of the defined sd: (copy - x) / sd has mean 0 and sd 1."""
    z = (copies - image) / sd_by_definition(image, level)
    assert abs(float(z.mean())) < 0.06 and abs(float(z.std()) - 1) < 0.06, (float(z.mean()), float(z.std()))


def captum_draws(monkeypatch, copies):
    """Captum's NoiseTunnel perturbs the input into ``copies`` (the engine's draws, read from the model)."""
    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(lambda inp, sd, n: copies.clone()))


@pytest.mark.parametrize("nt_type,name,n", [("smoothgrad", "smoothgrad", 7), ("vargrad", "vargrad", 5)])
def test_noise_tunnel_matches_on_the_engines_draws(monkeypatch, setup, nt_type, name, n):
    """Per image: the engine's noisy copies have the defined sd, and Captum's NoiseTunnel on the same copies
    gives the engine's map."""
    model, x, t = setup
    for i in range(len(x)):
        out, copies = first_layer_inputs(
            model, lambda: explain(model, x[i : i + 1], t[i : i + 1], name, seed=3, ids=torch.tensor([i]),
                                   n_samples=n, noise_level=0.15))
        assert copies.shape == (n, *x.shape[1:])
        assert_noise_by_definition(copies, x[i], 0.15)
        captum_draws(monkeypatch, copies)
        ref = NoiseTunnel(Saliency(model)).attribute(x[i : i + 1], nt_type=nt_type, nt_samples=n, target=int(t[i]),
                                                     abs=False, nt_samples_batch_size=n)
        assert_matches(out, ref)


def path_starts(points):
    """The noisy starts of IG paths from a zero baseline: of the points a * start (0 <= a <= 1), the farthest
    one on each ray."""
    flat = points.flatten(1).double()
    norms = flat.norm(dim=1)
    flat, points, norms = flat[norms > 0], points[norms > 0], norms[norms > 0]
    unit = flat / norms[:, None]
    same_ray = unit @ unit.T > 1 - 1e-9
    return points[[k for k in range(len(points)) if not (same_ray[k] & (norms > norms[k])).any()]]


def test_ig_smoothgrad_matches_noise_tunnel_around_ig(monkeypatch, setup):
    """Per image: the engine's path starts have the defined sd, and Captum's NoiseTunnel around
    IntegratedGradients from the same starts gives the engine's map."""
    model, x, t = setup
    n, steps = 4, 6
    for i in range(len(x)):
        out, points = first_layer_inputs(
            model, lambda: explain(model, x[i : i + 1], t[i : i + 1], "ig_smoothgrad", seed=5, ids=torch.tensor([i]),
                                   n_samples=n, n_steps=steps, rule="riemann_trapezoid"))
        starts = path_starts(points)
        assert len(points) == n * steps and starts.shape == (n, *x.shape[1:])
        assert_noise_by_definition(starts, x[i], 0.15)
        captum_draws(monkeypatch, starts)
        ref = NoiseTunnel(IntegratedGradients(model)).attribute(
            x[i : i + 1], nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=n, target=int(t[i]),
            baselines=0.0, n_steps=steps, method="riemann_trapezoid")
        assert_matches(out, ref)


class HalfSquare(nn.Module):
    """f(x) = |x|^2 / 2, one output per image: its input gradient is the input."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return 0.5 * self.w * x.flatten(1).square().sum(1, keepdim=True)


class Total(HalfSquare):
    """f(x) = sum of x: Integrated Gradients from a zero baseline, any exact rule, is the input."""

    def forward(self, x):
        return self.w * x.flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("level", [0.15, 0.4])
def test_noise_sd_is_noise_level_times_each_images_range(level):
    """SmoothGrad, VarGrad and IG-SmoothGrad perturb each image with sd = noise_level * (max x - min x) of that
    image, read back from maps that expose the noise: under f = |x|^2 / 2 the gradient at a copy is the copy,
    under f = sum x so is IG from 0. Images of different ranges and minima tell this from a batch-wide range, the
    maximum alone or a fixed level."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(4, 1, 64, 64, generator=g)
    u = (u - u.amin((1, 2, 3), keepdim=True)) / (u.amax((1, 2, 3), keepdim=True) - u.amin((1, 2, 3), keepdim=True))
    x = torch.tensor([0.5, 2.0, 1.0, 3.0]).view(-1, 1, 1, 1) * u + torch.tensor([0.25, -1.0, 2.0, 0.0]).view(-1, 1, 1, 1)
    t, ids, n = torch.zeros(4, dtype=torch.long), torch.arange(4), 32
    noisy = {"n_samples": n, "noise_level": level}
    maps = Engine(HalfSquare(), build_methods({"smoothgrad": noisy, "vargrad": noisy}), seed=0).explain(x, t, ids)
    ig = Engine(Total(), [build_method("ig_smoothgrad", {**noisy, "n_steps": 1, "rule": "riemann_middle"})],
                seed=0).explain(x, t, ids)["ig_smoothgrad"]
    for i in range(len(x)):
        sd = sd_by_definition(x[i], level)
        # SmoothGrad and IG-SmoothGrad: x + sd * (the mean of n standard normals) at every pixel
        for name, mean_of_copies in (("smoothgrad", maps["smoothgrad"][i]), ("ig_smoothgrad", ig[i])):
            z = (mean_of_copies - x[i]) * n**0.5 / sd
            assert abs(float(z.mean())) < 0.1 and float(z.std()) == pytest.approx(1.0, rel=0.05), (name, i)
        # VarGrad: the variance over n copies at every pixel, sd^2 (n - 1) / n on average
        assert (float(maps["vargrad"][i].mean()) * n / (n - 1)) ** 0.5 == pytest.approx(sd, rel=0.01), i


SPELLINGS = ["nn.ReLU", "nn.ReLU(inplace=True)", "F.relu", "F.relu(inplace=True)", "F.relu(h, True)", "F.relu_",
             "torch.relu", "torch.relu_", "Tensor.relu", "Tensor.relu_"]


class Spelled(TinyCNN):
    """The tiny CNN with both ReLUs written as ``spelling``; the in-place spellings discard what they return."""

    def __init__(self, spelling):
        super().__init__()
        self.spelling = spelling
        self.relu1, self.relu2 = nn.ReLU(inplace="inplace" in spelling), nn.ReLU(inplace="inplace" in spelling)

    def act(self, h, module):
        s = self.spelling
        if s.startswith("nn.ReLU"):
            return module(h)
        if s == "F.relu":
            return F.relu(h)
        if s == "torch.relu":
            return torch.relu(h)
        if s == "Tensor.relu":
            return h.relu()
        if s == "F.relu(inplace=True)":
            F.relu(h, inplace=True)
        elif s == "F.relu(h, True)":
            F.relu(h, True)
        elif s == "F.relu_":
            F.relu_(h)
        elif s == "torch.relu_":
            torch.relu_(h)
        else:
            h.relu_()
        return h

    def forward(self, x):
        x = F.max_pool2d(self.act(self.conv1(x), self.relu1), 2)
        x = F.max_pool2d(self.act(self.conv2(x), self.relu2), 2)
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_guided_backprop_of_every_relu_spelling_is_captums_on_the_nn_relu_twin(digits_batch, spelling):
    """Guided Backprop of a model whose ReLUs are spelled ``spelling`` equals Captum's GuidedBackprop on its
    nn.ReLU twin (the same weights) and differs from the plain gradient; the spelling keeps the logits."""
    torch.manual_seed(0)
    twin = scaled(TinyCNN().eval())
    model = Spelled(spelling).eval()
    model.load_state_dict(twin.state_dict())
    x, _ = digits_batch
    t = twin(x).argmax(1)
    assert torch.equal(model(x), twin(x))
    ref = GuidedBackprop(twin).attribute(x, target=t)
    gbp = explain(model, x, t, "guided_backprop")
    assert_matches(gbp, ref)
    assert (gbp - plain_gradient(model, x, t)).abs().max() > 0.1 * ref.abs().max()
    assert torch.equal(model(x), twin(x))


def test_gradcam_matches_layer_gradcam_upsampled(setup):
    model, x, t = setup
    # The GradCAM layer is the ReLU after conv2 (as the MNIST CNN's conv block output).
    cam = LayerGradCam(model, model.relu2).attribute(x, target=t, relu_attributions=True)
    ref = LayerAttribution.interpolate(cam, x.shape[-2:], interpolate_mode="bilinear")
    out = explain(model, x, t, "gradcam", layer=model.relu2)
    assert_matches(out, ref)
    assert out.min() >= 0


def test_guided_gradcam_matches_captum(setup):
    model, x, t = setup
    ref = GuidedGradCam(model, model.relu2).attribute(x, target=t, interpolate_mode="bilinear")
    assert_matches(explain(model, x, t, "guided_gradcam", layer=model.relu2), ref)


def test_edge_control_is_the_sobel_magnitude(setup):
    from skimage.filters import sobel

    model, x, t = setup
    out = explain(model, x, t, "edge")
    for i in range(len(x)):
        torch.testing.assert_close(out[i, 0], torch.tensor(sobel(x[i, 0].numpy())), atol=1e-6, rtol=0)


def test_guided_backprop_on_torchvision_basic_conv2d(digits_batch):
    """torchvision's Inception blocks (BasicConv2d) call F.relu: guided backprop must still apply."""
    from torchvision.models.inception import BasicConv2d

    torch.manual_seed(1)
    blocks = nn.Sequential(BasicConv2d(1, 4, kernel_size=3, padding=1), nn.MaxPool2d(2),
                           BasicConv2d(4, 6, kernel_size=3, padding=1), nn.MaxPool2d(2), nn.Flatten(),
                           nn.Linear(6 * 7 * 7, 5)).eval()
    scaled(blocks, blocks[5])
    twin = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4, eps=0.001), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6, eps=0.001),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 7 * 7, 5)).eval()
    src = blocks.state_dict()
    mapping = {"0.conv": "0", "0.bn": "1", "2.conv": "4", "2.bn": "5", "5": "9"}
    twin.load_state_dict({k.replace(old, new, 1): v for k, v in src.items()
                          for old, new in mapping.items() if k.startswith(old + ".")})
    x, _ = digits_batch
    t = blocks(x).argmax(1)
    torch.testing.assert_close(twin(x), blocks(x))
    gbp = explain(blocks, x, t, "guided_backprop", layer=blocks[2])
    ref = GuidedBackprop(twin).attribute(x, target=t)
    assert_matches(gbp, ref)
    assert (gbp - plain_gradient(blocks, x, t)).abs().max() > 0.1 * ref.abs().max()


def test_captum_adapter_runs_any_captum_method(setup):
    model, x, t = setup
    saliency = build_method("captum", {"attribution": "Saliency", "attribute_kwargs": {"abs": False}})
    out = Engine(model, [saliency]).explain(x, t, torch.arange(len(x)))["captum_saliency"]
    assert_matches(out, explain(model, x, t, "gradient"))
    engine = Engine(model, [build_method("captum", {"attribution": "DeepLift"}), build_method("gradient")],
                    target_layer=model.conv2)
    maps = engine.explain(x, t, torch.arange(len(x)))
    assert set(maps) == {"captum_deeplift", "gradient"} and maps["captum_deeplift"].shape == x.shape
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks
    with pytest.raises(ValueError, match="method.captum.attribution='NoSuchThing'"):
        build_method("captum", {"attribution": "NoSuchThing"})
