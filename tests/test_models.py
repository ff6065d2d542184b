"""The MNIST CNN computes the paper's function: ReLU after pooling where nothing reads a block's output."""

import pytest
import torch
import torch.nn.functional as F

from benchmark.methods.engine import capture_output, channels_last, guided_relus, prepared
from benchmark.models.cnn import MnistCNN, _Flatten


def _declared(model: MnistCNN) -> torch.nn.Module:
    """The architecture as declared (conv, ReLU, max-pool, twice; flatten, FC + ReLU, FC), on the same tensors."""
    from speed import ModuleReLUCNN

    return ModuleReLUCNN(model)


def _inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 28, 28, generator=g)
    x[1] = 0.0  # a constant image: every pooling window of conv1 ties (all equal to the bias)
    x[2] = x[2].clamp(min=0).round()  # many exact ties in the input
    return x


@pytest.mark.parametrize("layout", [False, True])
@pytest.mark.parametrize("guided", [False, True])
def test_relu_after_pooling_gives_the_declared_values_and_gradients_bit_for_bit(layout, guided):
    torch.manual_seed(1)
    model = MnistCNN()
    with torch.no_grad():  # negative biases: many windows whose conv outputs are all negative
        model.conv1.conv.bias.sub_(0.3)
        model.conv2.conv.bias.sub_(0.1)
    x = _inputs()
    target = torch.arange(6) % 10
    results = []
    with prepared(model), channels_last(model, layout), (guided_relus() if guided else torch.enable_grad()):
        for forward in (_declared(model), model):
            xi = (x.to(memory_format=torch.channels_last) if layout else x.clone()).requires_grad_(True)
            out = forward(xi)
            (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), [xi])
            results.append((out, grad))
    (out_a, grad_a), (out_b, grad_b) = results
    assert torch.equal(out_a, out_b)
    assert torch.equal(grad_a, grad_b)
    assert (grad_a != 0).any()


def test_parameter_gradients_are_unchanged_for_training():
    torch.manual_seed(2)
    model = MnistCNN()
    x, y = _inputs(), torch.arange(6) % 10
    grads = []
    for forward in (_declared(model), model):
        model.zero_grad()
        F.cross_entropy(forward(x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_an_observed_block_keeps_its_declared_output():
    """GradCAM reads conv2's output through a forward hook: it must be the ReLU's, at full resolution."""
    torch.manual_seed(3)
    model = MnistCNN().eval()
    x = _inputs()
    with capture_output(model.conv2) as store:
        model(x)
    expected = F.relu(model.conv2.conv(F.max_pool2d(F.relu(model.conv1.conv(x)), 2)))
    assert store["out"].shape == (6, 64, 14, 14)
    assert torch.equal(store["out"], expected)
    assert not model.conv2._forward_hooks  # the hook is gone, and with it the declared path


def test_flatten_returns_the_gradient_in_the_input_layout():
    x = torch.randn(3, 4, 5, 5).to(memory_format=torch.channels_last).requires_grad_(True)
    y = _Flatten.apply(x)
    assert torch.equal(y, x.detach().flatten(1))
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, [x], g)
    assert gx.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(gx, g.view(3, 4, 5, 5))
    plain = torch.randn(3, 4, 5, 5, requires_grad=True)
    (gp,) = torch.autograd.grad(_Flatten.apply(plain), [plain], g)
    assert gp.is_contiguous()


def test_a_backward_hook_on_a_block_sees_its_declared_output_gradient():
    torch.manual_seed(4)
    model = MnistCNN().eval()
    seen = []
    handle = model.conv1.register_full_backward_hook(lambda m, gin, gout: seen.append(gout[0].shape))
    try:
        x = _inputs().requires_grad_(True)
        model(x)[:, 3].sum().backward()
    finally:
        handle.remove()
    assert seen == [torch.Size([6, 32, 28, 28])]
