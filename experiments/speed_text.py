"""The text methods on one stage of MiniLM, this suite's engine against a Captum loop, timed side by side.

    python experiments/speed_text.py                      # 16 held-out sentiment sentences, the default text settings
    python experiments/speed_text.py --n-sentences 4      # a quick look

The same work both ways, on the same model (the bundled all-MiniLM-L6-v2 with a head; speed does not need it
trained), the same sentences and targets, the explained output of the default (the log-probability):

(a)  this suite: ``Engine.explain`` on the token rows with every method together: gradient (l2), gradient x input,
     Integrated Gradients (50 steps, zero baseline, Gauss-Legendre as Captum's default), SmoothGrad (50 samples)
     and VarGrad (25, the same samples), leave-one-out ([MASK]) and LIME over tokens (100 samples). The gradient
     items of all sentences go in chunks of at most 64 items, sentences shortest first, each chunk cut to its own
     longest sentence;
(b)  a Captum loop as Captum's text tutorials write it: one explainer per method, called once per sentence on its
     ``inputs_embeds`` (no padding), batched per sentence: ``Saliency``, ``InputXGradient``,
     ``IntegratedGradients(n_steps=50, internal_batch_size=50)``, ``NoiseTunnel(Saliency)`` smoothgrad (50) and
     vargrad (25), ``FeatureAblation`` (one feature per token, ``perturbations_per_eval`` = the tokens),
     ``Lime`` (100 samples, ``perturbations_per_eval=100``).

Agreement (untimed): the gradient, IG and leave-one-out maps of (a) and (b) per token, max |difference| relative to
the largest |value|. Prints a table and one JSON line (``ratio``: (b) over (a)). Needs captum (the ``bench`` extra).

``--roofline`` adds how close either way can come to this machine's limit: the model's FLOPs per token (counted by
``torch.utils.flop_counter`` on one forward and one input-gradient backward), the rate of one float32 matrix product
of the model's layer shape (``linear``, 800 x 384 by 384 x 1536), and the model's own rate forward and backward on a
batch the size of a Captum call (50 items of 16 tokens). When the model already runs near the matrix product's rate,
no batching can make the same arithmetic much faster; only work shared between methods can.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmark.config import ExperimentConfig  # noqa: E402
from benchmark.engine import Engine  # noqa: E402
from benchmark.inputs import setup  # noqa: E402
from benchmark.methods import build_method  # noqa: E402
from benchmark.resolve import text_architecture_for  # noqa: E402
from benchmark.training import build_model  # noqa: E402

SETTINGS = {"gradient": {}, "gradient_x_input": {}, "integrated_gradients": {"rule": "gausslegendre"}, "smoothgrad": {},
            "vargrad": {},
            "token_leave_one_out": {}, "token_lime": {"n_samples": 100}}


def suite(model, tokens, target, methods):
    return Engine(model, methods).explain(tokens, target, torch.arange(len(tokens)))


def captum_loop(model, tokens, target, sd_of):
    from captum.attr import FeatureAblation, InputXGradient, IntegratedGradients, Lime, NoiseTunnel, Saliency

    out = {k: [] for k in SETTINGS}
    emb_layer = model.word_embeddings()
    for b in range(len(tokens)):
        n = int(tokens[b, :, 1].sum())
        t = tokens[b : b + 1, :n]
        attn = t[..., 1]
        emb = emb_layer(t[..., 0]).detach()
        scored = t[0, :, 2] > 0

        def f(e, attn=attn):
            return model.explained(model.hf(inputs_embeds=e, attention_mask=attn.expand(len(e), -1)).logits)

        tgt = int(target[b])
        base = emb.clone()
        base[0, scored] = 0.0
        mask_base = emb.clone()
        mask_base[0, scored] = emb_layer.weight[model.special_ids["mask"]].detach()
        fmask = torch.arange(n)[None, :, None].expand_as(emb)
        sd = sd_of(emb[0, scored])
        out["gradient"].append(Saliency(f).attribute(emb, target=tgt, abs=False)[0].norm(dim=-1))
        out["gradient_x_input"].append(InputXGradient(f).attribute(emb, target=tgt)[0].sum(-1))
        out["integrated_gradients"].append(IntegratedGradients(f).attribute(
            emb, baselines=base, target=tgt, n_steps=50, method="gausslegendre", internal_batch_size=50)[0].sum(-1))
        out["smoothgrad"].append(NoiseTunnel(Saliency(f)).attribute(
            emb, nt_type="smoothgrad", nt_samples=50, nt_samples_batch_size=50, stdevs=sd, target=tgt, abs=False)[0]
            .norm(dim=-1))
        out["vargrad"].append(NoiseTunnel(Saliency(f)).attribute(
            emb, nt_type="vargrad", nt_samples=25, nt_samples_batch_size=25, stdevs=sd, target=tgt, abs=False)[0]
            .sum(-1))
        out["token_leave_one_out"].append(FeatureAblation(f).attribute(
            emb, baselines=mask_base, target=tgt, feature_mask=fmask, perturbations_per_eval=n)[0, :, 0])
        out["token_lime"].append(Lime(f).attribute(
            emb, baselines=mask_base, target=tgt, feature_mask=fmask, n_samples=100, perturbations_per_eval=100)[0, :, 0])
    return out


def _3(value: float) -> float:
    """Three significant figures (a small model's rate stays positive, not rounded to 0.0)."""
    return float(f"{value:.3g}")


def roofline(model, n_items: int = 50, n_tokens: int = 16, repeats: int = 5) -> dict:
    """GFLOP/s of this machine's float32 matrix product at the model's layer shape, and of the model forward + input
    gradient on one batch; the model's FLOPs per token."""
    from torch.utils.flop_counter import FlopCounterMode

    hidden = model.word_embeddings().weight.shape[1]
    e = torch.randn(n_items, n_tokens, hidden, requires_grad=True)
    attn = torch.ones(n_items, n_tokens, dtype=torch.long)

    def step():
        out = model.hf(inputs_embeds=e, attention_mask=attn).logits[:, 0].sum()
        return torch.autograd.grad(out, e)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    x, w = torch.randn(n_items * n_tokens, hidden), torch.randn(4 * hidden, hidden)

    def rate(fn, work):
        fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return work * repeats / (time.perf_counter() - t0) / 1e9

    sgemm = rate(lambda: torch.nn.functional.linear(x, w), 2 * x.shape[0] * hidden * w.shape[0])
    model_rate = rate(step, flops)
    return {"flops_per_token_fwd_bwd": flops / (n_items * n_tokens), "sgemm_gflops": _3(sgemm),
            "model_gflops": _3(model_rate), "model_over_sgemm": _3(model_rate / sgemm)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-sentences", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--roofline", action="store_true", help="also the machine's matrix-product rate and the model's")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = ExperimentConfig()
    cfg.model.name, cfg.data.name, cfg.n_images = "minilm", "sentiment", args.n_sentences
    arch = text_architecture_for(cfg)
    s = setup(cfg, arch)
    model = build_model(arch, s.data, 0).eval()
    tokens = s.images[0]
    with torch.no_grad():
        target = model(tokens).argmax(1)
    methods = [build_method(k, v, "text") for k, v in SETTINGS.items()]

    def sd_of(e):  # the suite's SmoothGrad noise: 0.15 x the sentence's scored embedding values' sd
        return 0.15 * float(e.std())
    times = {"suite": [], "captum": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours = suite(model, tokens, target, methods)
        times["suite"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs = captum_loop(model, tokens, target, sd_of)
        times["captum"].append(time.perf_counter() - t0)
    agree = {}
    for k in ("gradient", "gradient_x_input", "integrated_gradients", "token_leave_one_out"):
        diffs = []
        for b, ref in enumerate(theirs[k]):
            ref = ref.detach().float()
            mine = ours[k][b, : len(ref)] * (tokens[b, : len(ref), 2] > 0 if k == "token_leave_one_out" else 1)
            diffs.append(float((mine - ref).abs().max() / ref.abs().max().clamp(min=1e-30)))
        agree[k] = max(diffs)
    a, b = min(times["suite"]), min(times["captum"])
    result = {"n_sentences": args.n_sentences, "threads": args.threads, "suite_s": round(a, 2),
              "captum_s": round(b, 2), "ratio": round(b / a, 2), "max_rel_diff": agree}
    print(f"| way | seconds |\n|---|--:|\n| this suite | {a:.1f} |\n| Captum loop | {b:.1f} |\n"
          f"ratio {b / a:.2f}x; max relative difference {agree}")
    if args.roofline:
        for p in model.parameters():
            p.requires_grad_(False)
        result["roofline"] = roofline(model)
        r = result["roofline"]
        print(f"float32 matrix product {r['sgemm_gflops']} GFLOP/s; the model forward + input gradient "
              f"{r['model_gflops']} GFLOP/s ({r['model_over_sgemm']:.0%} of it)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
