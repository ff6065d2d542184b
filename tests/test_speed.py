"""experiments/speed.py at a small size: the Captum loop reproduces the suite's Spearman values."""

import argparse

import numpy as np
import pytest
import torch

pytest.importorskip("captum")


@pytest.mark.e2e
def test_captum_loop_matches_the_suite_with_identical_settings(tmp_path):
    import speed

    from benchmark.experiment import score_stages, validate
    from benchmark.randomization import randomized, stages

    args = argparse.Namespace(data="digits", root=None, n_images=4, threads=None, results_root=str(tmp_path),
                              memory_budget_mb=64,
                              methods=["gradient", "smoothgrad", "vargrad", "integrated_gradients", "guided_backprop",
                                       "gradcam", "guided_gradcam", "gradient_x_input"])
    cfg, arch, model, s = speed.prepare(args, epochs=1)
    cfg.method.update({"smoothgrad": {"n_samples": 6}, "vargrad": {"n_samples": 4},
                       "integrated_gradients": {"n_steps": 5}})
    _, methods = validate(cfg)
    stage_list = stages(arch, cfg.randomization.order, None)

    def suite_scores(conv_input_grad):
        cfg.conv_input_grad = conv_input_grad
        contexts = ((st, randomized(model, arch, st, cfg.randomization, cfg.seed)) for st in stage_list)
        return score_stages(cfg, arch, methods, contexts, s, n_stages=len(stage_list)).scores

    def assert_matches(df, atol, skip=()):
        for (stage, name, metric), values in ref.items():
            if name not in skip:
                ours = df[(df.stage == stage) & (df.method == name) & (df.metric == metric)].sort_values("image")
                np.testing.assert_allclose(ours.value.to_numpy(), values, atol=atol, rtol=0,
                                           err_msg=f"{name} {metric} {stage}")

    df = suite_scores("auto")
    x, _, ids = s.images
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = speed.run_captum_loop(cfg, arch, model, x, ids, chunk_items=8)
    assert len(ref) == len(stage_list) * len(methods) * 2
    assert_matches(df, 1e-4)
    # With PyTorch's own kernel for conv1's input gradient, as Captum has it, the maps are Captum's: equal
    # scores wherever both sum alike (all but NoiseTunnel's float32 sums of SmoothGrad and VarGrad)
    assert_matches(suite_scores("aten"), 1e-12, skip=("smoothgrad", "vargrad"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # Captum's NoiseTunnel is back to its own noise after the loop
    from captum.attr import NoiseTunnel

    assert NoiseTunnel._add_noise_to_input.__qualname__.startswith("NoiseTunnel")
