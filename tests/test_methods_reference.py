"""The engine's methods against Captum on the same model and inputs."""

import pytest
import torch
from captum.attr import (GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, LayerAttribution,
                         LayerGradCam, NoiseTunnel, Saliency)

from benchmark.methods import Engine, build_method
from benchmark.methods.engine import noise_scale, path_alphas, standard_noise

ATOL = 1e-5


def explain(model, x, target, name, seed=0, layer=None, **settings):
    layer = layer if layer is not None else model.conv2
    # Captum runs in PyTorch's plain layout; so does the engine here, for the same arithmetic. In another
    # layout, rounding can break exact ties of conv outputs on the digits' flat regions the other way at a
    # max-pool (tests/test_engine.py compares the layouts on inputs without ties).
    engine = Engine(model, [build_method(name, settings)], target_layer=layer, seed=seed, layout="plain")
    return engine.explain(x, target, torch.arange(len(x)))[name]


@pytest.fixture
def setup(tiny_cnn, digits_batch):
    x, _ = digits_batch
    target = tiny_cnn(x).argmax(1)
    return tiny_cnn, x, target


def test_gradient_matches_saliency(setup):
    model, x, t = setup
    ref = Saliency(model).attribute(x, target=t, abs=False)
    torch.testing.assert_close(explain(model, x, t, "gradient"), ref, atol=ATOL, rtol=0)


def test_gradient_x_input_matches(setup):
    model, x, t = setup
    ref = InputXGradient(model).attribute(x, target=t)
    torch.testing.assert_close(explain(model, x, t, "gradient_x_input"), ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("rule", ["riemann_trapezoid", "riemann_right", "riemann_left", "riemann_middle",
                                  "gausslegendre"])
def test_integrated_gradients_matches_captum(setup, rule):
    model, x, t = setup
    ref = IntegratedGradients(model).attribute(x, baselines=0.0, target=t, n_steps=20, method=rule)
    out = explain(model, x, t, "integrated_gradients", n_steps=20, rule=rule)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_linspace_rule_is_the_paper_code_formula(setup):
    model, x, t = setup
    n = 10
    grads = []
    for a in torch.linspace(0, 1, n):
        xs = (a * x).requires_grad_(True)
        out = model(xs).gather(1, t[:, None]).sum()
        grads.append(torch.autograd.grad(out, xs)[0])
    ref = x * torch.stack(grads).mean(0)
    torch.testing.assert_close(explain(model, x, t, "integrated_gradients", n_steps=n), ref, atol=ATOL, rtol=0)
    a, w = path_alphas(n, "linspace")
    assert float(w.sum()) == pytest.approx(1.0)


def _identical_noise(monkeypatch, x_all, seed, level, n):
    """Make Captum's NoiseTunnel draw the engine's noise for each image."""
    state = {"row": 0}

    def add_noise(inp, stdev, n_part):
        i = state["row"]
        z = torch.stack([standard_noise(seed, i, j, inp.shape[1:]) for j in range(n_part)])
        sd = float(noise_scale(x_all[i : i + 1], level))
        return inp.repeat_interleave(n_part, dim=0) + sd * z

    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(add_noise))
    return state


@pytest.mark.parametrize("nt_type,name,n", [("smoothgrad", "smoothgrad", 7), ("vargrad", "vargrad", 5)])
def test_noise_tunnel_matches_with_identical_noise(monkeypatch, setup, nt_type, name, n):
    model, x, t = setup
    out = explain(model, x, t, name, seed=3, n_samples=n, noise_level=0.15)
    state = _identical_noise(monkeypatch, x, 3, 0.15, n)
    refs = []
    for i in range(len(x)):
        state["row"] = i
        nt = NoiseTunnel(Saliency(model))
        refs.append(nt.attribute(x[i : i + 1], nt_type=nt_type, nt_samples=n, target=int(t[i]), abs=False,
                                 nt_samples_batch_size=n))
    torch.testing.assert_close(out, torch.cat(refs), atol=ATOL, rtol=1e-4)


def test_ig_smoothgrad_matches_noise_tunnel_around_ig(monkeypatch, setup):
    model, x, t = setup
    out = explain(model, x, t, "ig_smoothgrad", seed=5, n_samples=4, n_steps=6, rule="riemann_trapezoid")
    state = _identical_noise(monkeypatch, x, 5, 0.15, 4)
    refs = []
    for i in range(len(x)):
        state["row"] = i
        nt = NoiseTunnel(IntegratedGradients(model))
        refs.append(nt.attribute(x[i : i + 1], nt_type="smoothgrad", nt_samples=4, nt_samples_batch_size=4,
                                 target=int(t[i]), baselines=0.0, n_steps=6, method="riemann_trapezoid"))
    torch.testing.assert_close(out, torch.cat(refs), atol=ATOL, rtol=1e-4)


def test_guided_backprop_matches_captum_on_relu_modules(setup):
    model, x, t = setup
    ref = GuidedBackprop(model).attribute(x, target=t)
    torch.testing.assert_close(explain(model, x, t, "guided_backprop"), ref, atol=ATOL, rtol=0)


def test_guided_backprop_is_right_on_functional_relu(digits_batch):
    """F.relu models: guided backprop differs from the gradient and equals the nn.ReLU twin's result."""
    from tests.conftest import TinyCNN

    torch.manual_seed(0)
    modules = TinyCNN(functional=False).eval()
    functional = TinyCNN(functional=True).eval()
    functional.load_state_dict(modules.state_dict())
    x, _ = digits_batch
    t = modules(x).argmax(1)
    gbp_f = explain(functional, x, t, "guided_backprop", layer=functional.conv2)
    grad_f = explain(functional, x, t, "gradient", layer=functional.conv2)
    assert (gbp_f - grad_f).abs().max() > 1e-3
    ref = GuidedBackprop(modules).attribute(x, target=t)
    torch.testing.assert_close(gbp_f, ref, atol=ATOL, rtol=0)
    # Captum's module hooks miss F.relu: on the functional twin they return the plain gradient.
    miss = GuidedBackprop(functional).attribute(x, target=t)
    torch.testing.assert_close(miss, grad_f, atol=ATOL, rtol=0)


def test_gradcam_matches_layer_gradcam_upsampled(setup):
    model, x, t = setup
    # The GradCAM layer is the ReLU after conv2 (as the MNIST CNN's conv block output).
    cam = LayerGradCam(model, model.relu2).attribute(x, target=t, relu_attributions=True)
    ref = LayerAttribution.interpolate(cam, x.shape[-2:], interpolate_mode="bilinear")
    out = explain(model, x, t, "gradcam", layer=model.relu2)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    assert out.min() >= 0


def test_guided_gradcam_matches_captum(setup):
    model, x, t = setup
    ref = GuidedGradCam(model, model.relu2).attribute(x, target=t, interpolate_mode="bilinear")
    out = explain(model, x, t, "guided_gradcam", layer=model.relu2)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_edge_control_is_the_sobel_magnitude(setup):
    from skimage.filters import sobel

    model, x, t = setup
    out = explain(model, x, t, "edge")
    for i in range(len(x)):
        torch.testing.assert_close(out[i, 0], torch.tensor(sobel(x[i, 0].numpy())), atol=1e-6, rtol=0)


def test_guided_backprop_on_torchvision_basic_conv2d(digits_batch):
    """torchvision's Inception blocks (BasicConv2d) call F.relu: guided backprop must still apply."""
    from torch import nn
    from torchvision.models.inception import BasicConv2d

    torch.manual_seed(1)
    blocks = nn.Sequential(BasicConv2d(1, 4, kernel_size=3, padding=1), nn.MaxPool2d(2),
                           BasicConv2d(4, 6, kernel_size=3, padding=1), nn.MaxPool2d(2), nn.Flatten(),
                           nn.Linear(6 * 7 * 7, 5)).eval()
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
    grad = explain(blocks, x, t, "gradient", layer=blocks[2])
    assert (gbp - grad).abs().max() > 1e-4
    torch.testing.assert_close(gbp, GuidedBackprop(twin).attribute(x, target=t), atol=ATOL, rtol=0)


def test_captum_adapter_runs_any_captum_method(setup):
    model, x, t = setup
    saliency = build_method("captum", {"attribution": "Saliency", "attribute_kwargs": {"abs": False}})
    out = Engine(model, [saliency]).explain(x, t, torch.arange(len(x)))["captum_saliency"]
    torch.testing.assert_close(out, explain(model, x, t, "gradient"), atol=ATOL, rtol=0)
    engine = Engine(model, [build_method("captum", {"attribution": "DeepLift"}), build_method("gradient")],
                    target_layer=model.conv2)
    maps = engine.explain(x, t, torch.arange(len(x)))
    assert set(maps) == {"captum_deeplift", "gradient"} and maps["captum_deeplift"].shape == x.shape
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks
    with pytest.raises(ValueError, match="method.captum.attribution='NoSuchThing'"):
        build_method("captum", {"attribution": "NoSuchThing"})


def test_guided_backprop_keeps_in_place_relu_semantics(digits_batch):
    """A model that calls x.relu_() and discards the result: same logits, same guided map as out of place."""
    from torch import nn

    class InPlace(nn.Module):
        def __init__(self, mode):
            super().__init__()
            self.mode = mode
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 14 * 14, 5)

        def forward(self, x):
            h = self.conv(x)
            if self.mode == "tensor":
                h.relu_()
            elif self.mode == "functional":
                torch.nn.functional.relu(h, inplace=True)
            else:
                h = torch.relu(h)
            return self.fc(torch.nn.functional.max_pool2d(h, 2).flatten(1))

    torch.manual_seed(0)
    ref_model = InPlace("plain").eval()
    x, _ = digits_batch
    t = ref_model(x).argmax(1)
    ref = explain(ref_model, x, t, "guided_backprop", layer=ref_model.conv)
    for mode in ("tensor", "functional"):
        model = InPlace(mode).eval()
        model.load_state_dict(ref_model.state_dict())
        torch.testing.assert_close(model(x), ref_model(x))
        torch.testing.assert_close(explain(model, x, t, "guided_backprop", layer=model.conv), ref, atol=ATOL, rtol=0)
