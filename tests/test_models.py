"""The MNIST CNN computes the paper's function; its explicit rewrite (ReLU after pooling) keeps every bit."""

import pytest
import torch
import torch.nn.functional as F

from benchmark.engine import capture_output, channels_last, guided_relus, prepared
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
        for forward, rewrite in ((_declared(model), False), (model, True)):
            xi = (x.to(memory_format=torch.channels_last) if layout else x.clone()).requires_grad_(True)
            with model.equivalent_rewrite() if rewrite else torch.enable_grad():
                assert model.conv1.pool_first == model.conv2.pool_first == rewrite
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
    for forward, rewrite in ((_declared(model), False), (model, True)):
        model.zero_grad()
        with model.equivalent_rewrite() if rewrite else torch.enable_grad():
            F.cross_entropy(forward(x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_a_kept_block_keeps_its_declared_output():
    """GradCAM reads conv2's output through a forward hook: the engine keeps it declared, the ReLU's at full size."""
    torch.manual_seed(3)
    model = MnistCNN().eval()
    x = _inputs()
    with model.equivalent_rewrite(keep=(model.conv2,)), capture_output(model.conv2) as store:
        assert model.conv1.pool_first and not model.conv2.pool_first
        model(x)
    expected = F.relu(model.conv2.conv(F.max_pool2d(F.relu(model.conv1.conv(x)), 2)))
    assert store["out"].shape == (6, 64, 14, 14)
    assert torch.equal(store["out"], expected)
    assert not model.conv2._forward_hooks


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


def test_the_rewrite_is_undone_also_after_an_error():
    model = MnistCNN().eval()
    try:
        with model.equivalent_rewrite():
            assert model.conv1.pool_first and model.conv2.pool_first
            raise RuntimeError("inside the block")
    except RuntimeError:
        pass
    assert not model.conv1.pool_first and not model.conv2.pool_first
    seen = []  # outside the rewrite a backward hook on a block sees its declared 28x28 output gradient
    handle = model.conv1.register_full_backward_hook(lambda m, gin, gout: seen.append(gout[0].shape))
    try:
        model(_inputs().requires_grad_(True))[:, 3].sum().backward()
    finally:
        handle.remove()
    assert seen == [torch.Size([6, 32, 28, 28])]
