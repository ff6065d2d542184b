"""The engine shares passes, is invariant to chunking, and leaves the model as it found it."""

import pytest
import torch

from benchmark.methods import METHODS, Engine, build_method, build_methods


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


def _model_state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [p.requires_grad for p in model.parameters()],
            model.training)


def _no_hooks(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_model_is_left_unchanged_even_after_an_error(tiny_cnn, digits_batch):
    x, _ = digits_batch
    tiny_cnn.train()
    before = _model_state(tiny_cnn)
    engine = Engine(tiny_cnn, build_methods({k: {} for k in METHODS}), target_layer=tiny_cnn.relu2)
    engine.explain(x[:2], torch.tensor([0, 1]), torch.arange(2))
    after = _model_state(tiny_cnn)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]
    _no_hooks(tiny_cnn)
    with pytest.raises(RuntimeError):
        engine.explain(x[:2], torch.tensor([0, 99]), torch.arange(2))  # target out of range
    assert _model_state(tiny_cnn)[1:] == before[1:]
    _no_hooks(tiny_cnn)


def test_guided_mode_ends_after_an_error_inside_the_guided_pass(tiny_cnn, digits_batch, monkeypatch):
    from benchmark.methods import engine as engine_module

    x, _ = digits_batch
    tiny_cnn.train()
    before = _model_state(tiny_cnn)

    def broken(ctx, inp):
        raise RuntimeError("failure inside the guided pass")

    monkeypatch.setattr(engine_module._GuidedReLU, "forward", staticmethod(broken))
    engine = Engine(tiny_cnn, build_methods({"gradcam": {}, "guided_backprop": {}}), target_layer=tiny_cnn.relu2)
    with pytest.raises(RuntimeError, match="inside the guided pass"):
        engine.explain(x[:2], torch.tensor([0, 1]), torch.arange(2))
    monkeypatch.undo()
    assert _model_state(tiny_cnn)[1:] == before[1:]
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
    from benchmark.methods.engine import channels_last
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
