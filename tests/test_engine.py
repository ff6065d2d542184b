"""The engine shares passes, is invariant to chunking, and leaves the model as it found it."""

import pytest
import torch

from benchmark.engine import Engine
from benchmark.methods import METHODS, build_method, build_methods


def count_forward_items(model):
    seen = {"items": 0, "calls": 0}

    def hook(_m, inp, _out):
        seen["items"] += inp[0].shape[0]
        seen["calls"] += 1

    return seen, model.fc.register_forward_hook(hook)


def test_shared_primitives_run_once(tiny_cnn, digits_batch):
    x, _ = digits_batch
    t = torch.zeros(len(x), dtype=torch.long)
    methods = build_methods({
        "gradient": {}, "gradient_x_input": {}, "gradcam": {},  # one plain pass
        "smoothgrad": {"n_samples": 6}, "vargrad": {"n_samples": 4},  # six noisy passes, shared
        "guided_backprop": {}, "guided_gradcam": {},  # one guided pass
    })
    engine = Engine(tiny_cnn, methods, target_layer=tiny_cnn.relu2)
    assert engine.passes_per_image == 1 + 6 + 1
    engine.explain(x, t, torch.arange(len(x)))  # sizes its chunks once
    seen, handle = count_forward_items(tiny_cnn)
    engine.explain(x, t, torch.arange(len(x)))
    handle.remove()
    assert seen["items"] == len(x) * 8
    assert seen["calls"] == 2  # one unguided chunk, one guided chunk


def test_vargrad_uses_the_first_samples_of_smoothgrad(tiny_cnn, digits_batch):
    x, _ = digits_batch
    t = tiny_cnn(x).argmax(1)
    ids = torch.arange(len(x))
    both = Engine(tiny_cnn, build_methods({"smoothgrad": {"n_samples": 6}, "vargrad": {"n_samples": 4}}),
                  seed=1).explain(x, t, ids)
    alone = Engine(tiny_cnn, [build_method("vargrad", {"n_samples": 4})], seed=1).explain(x, t, ids)
    torch.testing.assert_close(both["vargrad"], alone["vargrad"], atol=1e-7, rtol=1e-5)


def test_results_do_not_depend_on_chunk_size_or_batch(tiny_cnn, digits_batch):
    x, _ = digits_batch
    t = tiny_cnn(x).argmax(1)
    spec = {"gradient": {}, "smoothgrad": {"n_samples": 5}, "integrated_gradients": {"n_steps": 7},
            "ig_smoothgrad": {"n_samples": 2, "n_steps": 3}, "guided_gradcam": {}, "noise": {}}
    ids = torch.arange(len(x))
    big = Engine(tiny_cnn, build_methods(spec), target_layer=tiny_cnn.relu2, max_chunk=4096).explain(x, t, ids)
    small = Engine(tiny_cnn, build_methods(spec), target_layer=tiny_cnn.relu2, max_chunk=3).explain(x, t, ids)
    # the last three images alone, with their own ids: the same maps as inside the full batch
    part = Engine(tiny_cnn, build_methods(spec), target_layer=tiny_cnn.relu2).explain(x[3:], t[3:], ids[3:])
    for name in spec:
        torch.testing.assert_close(big[name], small[name], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(big[name][3:], part[name], atol=1e-6, rtol=1e-5)


def _with_batchnorm(model):
    """The tiny CNN with a BatchNorm after conv1: buffers that a forward pass in training mode would change."""
    model.conv1 = torch.nn.Sequential(model.conv1, torch.nn.BatchNorm2d(4))
    return model


def _model_state(model):
    """Every parameter and buffer by name (a copy of its values, its strides, its storage address, requires_grad)
    and every module's training flag."""
    tensors = {name: (t.detach().clone(), t.stride(), t.data_ptr(), t.requires_grad)
               for name, t in [*model.named_parameters(), *model.named_buffers()]}
    return tensors, [m.training for m in model.modules()]


def _assert_unchanged(model, before):
    """The same values (torch.equal), strides (channels-last restored), storage and flags as ``before``."""
    tensors, training = _model_state(model)
    assert training == before[1] and tensors.keys() == before[0].keys()
    for name, (value, stride, pointer, flag) in tensors.items():
        value0, stride0, pointer0, flag0 = before[0][name]
        assert torch.equal(value, value0), f"{name}: values changed"
        assert stride == stride0, f"{name}: strides {stride} instead of {stride0}"
        assert pointer == pointer0, f"{name}: another storage"
        assert flag == flag0, f"{name}: requires_grad changed"


def _no_hooks(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_model_is_left_unchanged_even_after_an_error(tiny_cnn, digits_batch):
    """In training mode, after every method and after an error in the pass: parameters and buffers as they were
    (values, strides, storage, requires_grad), training flags restored, no hooks left."""
    x, _ = digits_batch
    model = _with_batchnorm(tiny_cnn).train()
    before = _model_state(model)
    assert any(p.dim() == 4 for p in model.parameters()) and list(model.buffers())
    engine = Engine(model, build_methods({k: {} for k in METHODS if k != "custom"}), target_layer=model.relu2)
    assert engine.channels_last  # the passes run in channels-last: each 4-D weight is converted, then restored
    engine.explain(x[:2], torch.tensor([0, 1]), torch.arange(2))
    _assert_unchanged(model, before)
    _no_hooks(model)
    with pytest.raises(RuntimeError):
        engine.explain(x[:2], torch.tensor([0, 99]), torch.arange(2))  # target out of range
    _assert_unchanged(model, before)
    _no_hooks(model)


def test_guided_mode_ends_after_an_error_inside_the_guided_pass(tiny_cnn, digits_batch, monkeypatch):
    """An error inside the guided pass: the model as it was (values, strides, storage, flags), no hooks left, and
    no guided mode after it."""
    from benchmark.engine import modes as engine_module

    x, _ = digits_batch
    tiny_cnn = _with_batchnorm(tiny_cnn).train()
    before = _model_state(tiny_cnn)

    def broken(ctx, inp):
        raise RuntimeError("failure inside the guided pass")

    monkeypatch.setattr(engine_module._GuidedReLU, "forward", staticmethod(broken))
    engine = Engine(tiny_cnn, build_methods({"gradcam": {}, "guided_backprop": {}}), target_layer=tiny_cnn.relu2)
    with pytest.raises(RuntimeError, match="inside the guided pass"):
        engine.explain(x[:2], torch.tensor([0, 1]), torch.arange(2))
    monkeypatch.undo()
    _assert_unchanged(tiny_cnn, before)
    _no_hooks(tiny_cnn)
    # guided mode is gone: the gradient after the error is the plain gradient
    g = Engine(tiny_cnn, [build_method("gradient")]).explain(x[:2], torch.tensor([0, 1]), torch.arange(2))
    xs = x[:2].clone().requires_grad_(True)
    tiny_cnn.eval()
    ref = torch.autograd.grad(tiny_cnn(xs).gather(1, torch.tensor([[0], [1]])).sum(), xs)[0]
    torch.testing.assert_close(g["gradient"], ref)


def test_gradcam_without_a_layer_is_refused(tiny_cnn):
    with pytest.raises(ValueError, match="needs a target layer"):
        Engine(tiny_cnn, [build_method("gradcam")], target_layer=None)


@pytest.mark.parametrize("settings,match", [
    ({"n_samples": 0}, "positive whole number"),
    ({"noise_level": -1}, "positive number"),
    ({"bogus": 1}, "has no setting 'bogus'"),
])
def test_bad_method_settings_name_key_value_and_fix(settings, match):
    with pytest.raises(ValueError, match=match) as err:
        build_method("smoothgrad", settings)
    assert "method.smoothgrad." in str(err.value)


def test_unknown_and_empty_method_lists():
    with pytest.raises(ValueError, match="'gradinet' is not a known method"):
        build_methods({"gradinet": {}})
    with pytest.raises(ValueError, match="method is empty"):
        build_methods({})


def test_channels_last_converts_one_channel_weights_and_restores_every_parameter(digits_batch):
    from benchmark.engine import channels_last
    from benchmark.models.cnn import MnistCNN

    torch.manual_seed(0)
    model = MnistCNN().eval()
    x, _ = digits_batch
    params = list(model.parameters())
    before = [(p.data.data_ptr(), p.data.stride(), p.detach().clone()) for p in params]
    with channels_last(model):
        # conv1's (32, 1, 5, 5) weight counts as contiguous in both layouts: it is converted by its strides
        assert model.conv1.conv.weight.stride() == (25, 1, 5, 1)
        assert model.conv2.conv.weight.is_contiguous(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
        assert out.is_contiguous()
    for p, (ptr, stride, value) in zip(params, before):
        assert (p.data.data_ptr(), p.data.stride()) == (ptr, stride)
        assert torch.equal(p, value)
    # Same maps in both layouts. Inputs without flat regions: on a flat background the conv outputs tie
    # exactly, and rounding that differs between layouts can send a max-pool's gradient to another of the
    # tied inputs (both are valid subgradients).
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    t = model(x).argmax(1)
    spec = {"gradient": {}, "smoothgrad": {"n_samples": 4}, "integrated_gradients": {"n_steps": 5},
            "guided_gradcam": {}}
    maps = {layout: Engine(model, build_methods(spec), target_layer=model.conv2, layout=layout).explain(
        x, t, torch.arange(len(x))) for layout in ("plain", "channels_last")}
    for name in spec:
        torch.testing.assert_close(maps["plain"][name], maps["channels_last"][name], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("c_in, c_out, size, kernel, stride, padding, dilation", [
    (1, 32, 28, 5, 1, 2, 1),   # the MNIST CNN's conv1
    (3, 8, 19, 3, 2, 0, 1),    # Inception's first conv, smaller
    (3, 6, 20, 7, 2, 3, 1),    # ResNet's
    (2, 4, 15, 3, 2, 1, 2),    # dilated, odd size, stride not dividing it
    (1, 3, 9, (3, 5), (1, 2), (1, 2), (2, 1)),  # different height and width geometry
])
def test_conv_input_grad_equals_pytorchs_kernel(c_in, c_out, size, kernel, stride, padding, dilation):
    from benchmark.engine import conv2d_input_grad

    def pair(v):
        return (v, v) if isinstance(v, int) else v

    g = torch.Generator().manual_seed(0)
    w = torch.randn((c_out, c_in) + pair(kernel), generator=g, dtype=torch.float64)
    x = torch.randn(3, c_in, size, size + 1, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    up = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (expected,) = torch.autograd.grad(y, x, up)
    got = conv2d_input_grad(up, w, x.shape, pair(stride), pair(padding), pair(dilation))
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    assert got.is_contiguous()
    got_cl = conv2d_input_grad(up, w, x.shape, pair(stride), pair(padding), pair(dilation), torch.channels_last)
    assert got_cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(got_cl, got)


def test_few_channel_convs_only_reroute_input_gradients():
    from benchmark.engine import _FewChannelConv, few_channel_convs

    g = torch.Generator().manual_seed(1)
    conv1, conv2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 5, 3, padding="same")
    x = torch.randn(2, 1, 8, 8, generator=g)
    rerouted = []
    original_apply = _FewChannelConv.apply

    def spy(*args):
        rerouted.append(args[1].shape)
        return original_apply(*args)

    _FewChannelConv.apply = spy
    try:
        # weights that need gradients (training) keep PyTorch's path, and so does the 4-channel conv
        with few_channel_convs():
            out = conv2(torch.relu(conv1(x.requires_grad_(True)))).square().sum()
            grads = torch.autograd.grad(out, [x, conv1.weight, conv2.weight])
        assert rerouted == []
        for p in (*conv1.parameters(), *conv2.parameters()):
            p.requires_grad_(False)
        with few_channel_convs():
            out = conv2(torch.relu(conv1(x))).square().sum()
            (fast,) = torch.autograd.grad(out, x)
        assert rerouted == [conv1.weight.shape]
    finally:
        _FewChannelConv.apply = original_apply
    torch.testing.assert_close(fast, grads[0], atol=1e-6, rtol=1e-5)
    assert torch._C._len_torch_function_stack() == 0


def test_engine_maps_equal_with_pytorchs_conv_input_gradient(digits_batch):
    from benchmark.models.cnn import MnistCNN

    torch.manual_seed(0)
    model = MnistCNN().eval()
    x, _ = digits_batch
    t = model(x).argmax(1)
    spec = {"gradient": {}, "smoothgrad": {"n_samples": 4}, "vargrad": {"n_samples": 4},
            "integrated_gradients": {"n_steps": 5}, "guided_gradcam": {}}
    engines = {k: Engine(model, build_methods(spec), target_layer=model.conv2, conv_input_grad=k) for k in ("auto", "aten")}
    assert engines["auto"].few_channel_convs and not engines["aten"].few_channel_convs
    maps = {k: e.explain(x, t, torch.arange(len(x))) for k, e in engines.items()}
    assert torch._C._len_torch_function_stack() == 0
    for name in spec:
        scale = maps["aten"][name].abs().max()
        torch.testing.assert_close(maps["auto"][name] / scale, maps["aten"][name] / scale, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="conv_input_grad='cudnn' must be one of auto, aten"):
        Engine(model, build_methods(spec), conv_input_grad="cudnn")


def test_a_gradcam_layer_the_model_never_calls_is_a_clear_error(tiny_cnn, digits_batch):
    x, _ = digits_batch
    tiny_cnn.unused = torch.nn.Identity()
    engine = Engine(tiny_cnn, [build_method("gradcam")], target_layer=tiny_cnn.unused)
    with pytest.raises(RuntimeError, match="forward hook did not fire"):
        engine.explain(x[:2], torch.zeros(2, dtype=torch.long), torch.arange(2))


def test_every_method_on_a_float64_model_agrees_with_float32():
    """The dtype path a GPU run's half or double models take: every method's maps come back float32 on the CPU from a
    float64 model and inputs, within float32 rounding of the float32 run's."""
    import copy

    from benchmark.methods import METHODS, build_method
    from benchmark.models.cnn import MnistCNN

    torch.manual_seed(0)
    model = MnistCNN().eval()
    x = torch.rand(2, 1, 28, 28)
    target = model(x).argmax(1)
    small = {"lime": {"n_samples": 60}, "meaningful_perturbation": {"n_steps": 3},
             "ig_smoothgrad": {"n_steps": 3, "n_samples": 2}}
    names = [n for n in METHODS if n not in ("captum", "custom", "noise")]
    methods = [build_method(n, small.get(n, {})) for n in names]
    single = Engine(model, methods, target_layer=model.conv2).explain(x, target, torch.arange(2))
    double = copy.deepcopy(model).double()
    wide = Engine(double, methods, target_layer=double.conv2).explain(x.double(), target, torch.arange(2))
    for name in names:
        assert wide[name].dtype == torch.float32 and wide[name].device.type == "cpu", name
        scale = float(single[name].abs().max())
        assert float((single[name] - wide[name]).abs().max()) <= 1e-4 * max(scale, 1e-12), name
