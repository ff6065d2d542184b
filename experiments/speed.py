"""The cascading test run four ways in one process, timed side by side.

    python experiments/speed.py --root ../shared/data             # the headline: MNIST CNN, 64 images
    python experiments/speed.py --n-images 8 --skip quantus       # a quick look
    python experiments/speed.py --memory                          # + peak RSS against images and stages
    python experiments/speed.py --memory-only                     # only the peak RSS table
    python experiments/speed.py --perturbation                    # occlusion, leave-one-out, LIME: speed_perturbation.py

(a) this suite: ``score_stages`` (engine, post-processing, Spearman ABS / no-ABS), as a run does it:
    the stages explained together, the layers a stage leaves unchanged computed once for all stages;
    and again with every stage's model run whole (``share_unchanged_layers=false``), the bound's kind of pass;
(b) a Captum loop: one Captum explainer per method, batched over the images, the same post-processing,
    scored with ``scipy.stats.spearmanr``; same model, same randomized weights, same noise draws;
(c) Quantus' MPRT (top-down) driven by the same Captum explainers, one method at a time;
(d) the bound: the forward+backward passes the method set strictly needs, times the fastest measured
    time of one such pass over batch sizes and memory layouts (plain, channels-last). Passes through the
    whole model: sharing the unchanged layers does less work than that, so (a) can come in under it.

Prints a table and one JSON line. Spearman values of (a) and (b) are compared where the settings
are identical (all methods here: Captum runs on a twin of the CNN with nn.ReLU modules, since its
Guided Backprop misses F.relu, and gets the suite's noise and IG points).
Needs the ``bench`` extra (captum, quantus).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from torch import nn  # noqa: E402

from benchmark.config import DataConfig, ExperimentConfig, ModelConfig, SimilarityConfig  # noqa: E402
from benchmark.experiment import Setup, score_stages, select_images, validate  # noqa: E402
from benchmark.model_randomization import score_model_stages  # noqa: E402
from benchmark.data import load_dataset  # noqa: E402
from benchmark.engine import (Engine, channels_last, few_channel_convs, noise_scale, path_alphas,  # noqa: E402
                                      prepared, standard_noise)
from benchmark.postprocess import abs_map, signed_map  # noqa: E402
from benchmark.randomization import randomized, stages  # noqa: E402
from benchmark.runtime import keep_freed_memory, select_device, set_threads  # noqa: E402
from benchmark.training import train_model  # noqa: E402

log = logging.getLogger("benchmark.speed")

PAPER_METHODS = ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "vargrad",
                 "guided_backprop", "gradcam", "guided_gradcam"]
METRICS = ["spearman_abs", "spearman"]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    Linux: VmHWM of /proc/self/status, which starts afresh in a new program (``ru_maxrss`` keeps
    the parent's peak across fork and exec, so a child would report the parent's).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


# -- (b) and (c): Captum ------------------------------------------------------------------------
class ReLUBlock(nn.Module):
    """The CNN's conv block with an nn.ReLU module (what Captum's Guided Backprop hooks)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class ModuleReLUCNN(nn.Module):
    """A twin of ``MnistCNN`` sharing its parameter tensors, with nn.ReLU modules instead of F.relu."""

    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.conv1 = ReLUBlock(cnn.conv1.conv)
        self.conv2 = ReLUBlock(cnn.conv2.conv)
        self.fc1 = cnn.fc1
        self.relu3 = nn.ReLU()
        self.logits = cnn.logits
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv1(x))
        x = self.pool(self.conv2(x))
        return self.logits(self.relu3(self.fc1(x.flatten(1))))


class SuiteNoise:
    """Captum's NoiseTunnel drawing the suite's noise: sample j of image i is the engine's draw (seed, i, j).

    Patches ``NoiseTunnel._add_noise_to_input`` for the block; ``ids`` are the image ids of the
    batch being attributed, ``level`` the noise level (sd = level * (max x - min x) per image).
    """

    def __init__(self, seed: int, level: float) -> None:
        self.seed, self.level = seed, level
        self.ids: list[int] = []
        self.next_sample = 0

    @contextmanager
    def patched(self) -> Iterator["SuiteNoise"]:
        from captum.attr import NoiseTunnel

        original = NoiseTunnel.__dict__["_add_noise_to_input"]

        def add_noise(inp: torch.Tensor, stdev: float, n_part: int) -> torch.Tensor:
            return self.noisy(inp, n_part)

        NoiseTunnel._add_noise_to_input = staticmethod(add_noise)
        try:
            yield self
        finally:
            NoiseTunnel._add_noise_to_input = original

    def start(self, ids: list[int]) -> None:
        self.ids, self.next_sample = list(ids), 0

    def noisy(self, inp: torch.Tensor, n_part: int) -> torch.Tensor:
        """The next ``n_part`` noisy copies of each image, image-major: (B * n_part, ...)."""
        j0 = self.next_sample
        self.next_sample += n_part
        sd = noise_scale(inp, self.level)
        z = torch.stack([torch.stack([standard_noise(self.seed, i, j, inp.shape[1:]) for j in range(j0, j0 + n_part)])
                         for i in self.ids]).to(inp.device)  # (B, n, ...)
        shape = (-1,) + (1,) * (inp.dim())
        return (inp[:, None] + sd.view(shape) * z).flatten(0, 1)


def captum_explainers(model: nn.Module, methods: dict[str, dict[str, Any]], seed: int, chunk_items: int,
                      float64_sums: bool = False) -> dict[str, Callable[[torch.Tensor, torch.Tensor, list[int]],
                                                                        torch.Tensor]]:
    """method name -> f(x, target, image_ids) -> (B, C, H, W) map, each one Captum call (per image chunk).

    ``float64_sums``: SmoothGrad and VarGrad from Captum's per-sample gradients (``Saliency`` on the
    same noisy inputs) with the mean and the variance E[g^2] - E[g]^2 taken in float64, where
    ``NoiseTunnel`` takes them in float32.
    """
    from captum.attr import (GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, LayerAttribution,
                             LayerGradCam, NoiseTunnel, Saliency)

    layer = model.conv2

    def chunked(fn: Callable, per_image: int) -> Callable:
        def run(x, t, ids):
            step = len(x) if chunk_items <= 0 else max(1, chunk_items // per_image)
            return torch.cat([fn(x[i : i + step], t[i : i + step], ids[i : i + step]) for i in range(0, len(x), step)])
        return run

    def noise_tunnel(nt_type: str, settings: dict[str, Any]) -> Callable:
        noise = SuiteNoise(seed, settings["noise_level"])
        n = settings["n_samples"]

        def fn(x, t, ids):
            noise.start(ids)
            if float64_sums:
                g = Saliency(model).attribute(noise.noisy(x, n), target=t.repeat_interleave(n), abs=False)
                g = g.double().view((len(x), n) + tuple(x.shape[1:]))
                mean = g.mean(1)
                return mean if nt_type == "smoothgrad" else (g * g).mean(1) - mean * mean
            with noise.patched():
                return NoiseTunnel(Saliency(model)).attribute(x, nt_type=nt_type, nt_samples=n, target=t, abs=False,
                                                              nt_samples_batch_size=n)
        return chunked(fn, n)

    def ig(settings: dict[str, Any]) -> Callable:
        alphas, weights = path_alphas(settings["n_steps"], settings["rule"])
        explainer = IntegratedGradients(model)

        def fn(x, t, ids):
            # The paper code's points (linspace, equal weights) through Captum's step_sizes_and_alphas.
            (attr,) = explainer._attribute((x,), (torch.full_like(x, settings["baseline"]),), target=t,
                                           n_steps=settings["n_steps"],
                                           step_sizes_and_alphas=(weights.tolist(), alphas.tolist()))
            return attr
        return chunked(fn, settings["n_steps"])

    def gradcam(x, t, ids):
        cam = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")

    table: dict[str, Callable] = {
        "gradient": lambda x, t, ids: Saliency(model).attribute(x, target=t, abs=False),
        "gradient_x_input": lambda x, t, ids: InputXGradient(model).attribute(x, target=t),
        "guided_backprop": lambda x, t, ids: GuidedBackprop(model).attribute(x, target=t),
        "gradcam": gradcam,
        "guided_gradcam": lambda x, t, ids: GuidedGradCam(model, layer).attribute(x, target=t,
                                                                                   interpolate_mode="bilinear"),
    }
    out = {}
    for name, settings in methods.items():
        if name in ("smoothgrad", "vargrad"):
            out[name] = noise_tunnel(name, settings)
        elif name == "integrated_gradients":
            out[name] = ig(settings)
        else:
            out[name] = table[name]
    return out


def run_captum_loop(cfg: ExperimentConfig, arch, model: nn.Module, x: torch.Tensor, ids: torch.Tensor,
                    chunk_items: int, float64_sums: bool = False,
                    only: Optional[list[str]] = None) -> dict[tuple[int, str, str], np.ndarray]:
    """(b): stage by stage, method by method, one Captum call each; scipy spearmanr per image.

    ``float64_sums``: see ``captum_explainers``; ``only``: these methods alone.
    """
    twin = ModuleReLUCNN(model).eval()
    settings = {k: v for k, v in cfg.method.items() if only is None or k in only}
    explain = captum_explainers(twin, settings, cfg.seed, chunk_items, float64_sums)
    ids_l = [int(i) for i in ids]
    # The suite's memory layout for Captum too (same speed-up, same arithmetic, same maps)
    x = x.to(memory_format=torch.channels_last)
    reference: dict[str, dict[str, np.ndarray]] = {}
    scores: dict[tuple[int, str, str], np.ndarray] = {}
    for stage in stages(arch, cfg.randomization.order, cfg.randomization.units):
        with randomized(model, arch, stage, cfg.randomization, cfg.seed), channels_last(twin):
            for p in twin.parameters():
                p.requires_grad_(False)
            with torch.no_grad():
                target = twin(x).argmax(1)
            for name, fn in explain.items():
                m = fn(x, target, ids_l).detach().float()
                processed = {"spearman_abs": abs_map(m, cfg.similarity.percentile).astype(np.float32),
                             "spearman": signed_map(m, cfg.similarity.percentile).astype(np.float32)}
                if stage.index == 0:
                    reference[name] = processed
                for metric, cur in processed.items():
                    ref = reference[name][metric]
                    scores[(stage.index, name, metric)] = np.array(
                        [spearmanr(ref[i].ravel(), cur[i].ravel()).statistic for i in range(len(x))])
    return scores


def run_quantus(cfg: ExperimentConfig, model: nn.Module, x: torch.Tensor, ids: torch.Tensor,
                chunk_items: int) -> dict[str, Any]:
    """(c): Quantus' MPRT (top-down, its own layer resets) per method, with the same Captum explainers."""
    import quantus

    twin = ModuleReLUCNN(model).eval()
    with torch.no_grad():
        y = twin(x).argmax(1).numpy()
    explainers = captum_explainers(twin, cfg.method, cfg.seed, chunk_items)
    out = {}
    for name in cfg.method:
        def explain_func(model, inputs, targets, name=name, **kwargs):
            local = captum_explainers(model, {name: cfg.method[name]}, cfg.seed, chunk_items)[name]
            xi = torch.as_tensor(inputs).contiguous(memory_format=torch.channels_last)
            with channels_last(model):
                return local(xi, torch.as_tensor(targets), [int(i) for i in ids[: len(xi)]]).detach().numpy()

        metric = quantus.MPRT(similarity_func=quantus.similarity_func.correlation_spearman, layer_order="top_down",
                              disable_warnings=True, display_progressbar=False)
        scores = metric(model=twin, x_batch=x.numpy(), y_batch=y, a_batch=None, explain_func=explain_func,
                        device="cpu", batch_size=len(x))
        out[name] = {k: float(np.nanmean(v)) for k, v in scores.items()}
    del explainers
    return out


# -- (d): the bound -----------------------------------------------------------------------------
def time_pass(model: nn.Module, shape: tuple[int, ...], batch: int, layout: bool, convs: bool = False,
              repeats: int = 5) -> tuple[float, float]:
    """Best and median seconds per item of one forward+backward pass (gradient w.r.t. the input).

    ``layout``: channels-last weights and inputs, converted exactly as the engine does it.
    ``convs``: the engine's input gradient of few-channel convolutions (``few_channel_convs``); else PyTorch's.
    """
    x = torch.rand((batch,) + tuple(shape))
    if layout:
        x = x.to(memory_format=torch.channels_last)
    t = torch.zeros(batch, dtype=torch.long)
    times = []
    with channels_last(model, layout), (few_channel_convs() if convs else nullcontext()):
        for i in range(repeats + 1):  # the first one warms up
            start = time.perf_counter()
            xi = x.detach().requires_grad_(True)
            out = model(xi).gather(1, t[:, None]).sum()
            torch.autograd.grad(out, xi)
            if i:
                times.append((time.perf_counter() - start) / batch)
    return min(times), float(np.median(times))


def measure_bound(model: nn.Module, shape: tuple[int, ...], batches: list[int], convs: bool = False) -> dict[str, Any]:
    """Per-item pass time over batch sizes and layouts; the bound uses the best (fastest) of all.

    Also the floating-point work of one pass (``torch.utils.flop_counter``) and the rate the best pass reaches.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with prepared(model):
        grid = {f"{'channels_last' if cl else 'plain'}@{b}": time_pass(model, shape, b, cl, convs)
                for b in batches for cl in (False, True)}
        xi = torch.rand((1,) + tuple(shape), requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            model(xi)[:, 0].sum().backward()  # (autograd.grad on a leaf is not supported under the counter)
        flops = counter.get_total_flops()
    best = min(grid, key=lambda k: grid[k][0])
    return {"per_item_s": {k: v[0] for k, v in grid.items()}, "median_per_item_s": {k: v[1] for k, v in grid.items()},
            "best": best, "best_per_item_s": grid[best][0], "best_median_per_item_s": grid[best][1],
            "flop_per_pass": flops, "best_gflop_per_s": flops / grid[best][0] / 1e9}


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The best float32 matrix-product rate of this machine (n x n by n x n), GFLOP/s."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


Scores = dict[tuple[str, str, str], np.ndarray]  # (stage, method, metric) -> values over the images


def max_diffs(ours: Scores, ref: Scores) -> dict[str, float]:
    """Largest |ours - ref| per method over the keys of ``ref`` (stages, metrics, images)."""
    diffs: dict[str, float] = {}
    for (stage, name, metric), values in ref.items():
        d = np.abs(ours[(stage, name, metric)] - values)
        diffs[name] = max(diffs.get(name, 0.0), float(np.nanmax(d)) if np.isfinite(d).any() else 0.0)
    return diffs


def spearman_diffs(df, ref: Scores) -> dict[str, float]:
    """Largest |Spearman of the suite's scores (a table) - ``ref``'s| per method."""
    ours = {(stage, name, metric): df[(df.stage == stage) & (df.method == name) & (df.metric == metric)]
            .sort_values("image").value.to_numpy() for stage, name, metric in ref}
    return max_diffs(ours, ref)


def profile_suite(run: Callable[[], Any], top: int = 14) -> dict[str, Any]:
    """(a) once under ``torch.profiler``: seconds per operator (self time, the operators' own work), largest first."""
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    wall = time.perf_counter() - start
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    ops = {e.key: {"s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count} for e in rows[:top]}
    total = sum(e.self_cpu_time_total for e in rows) / 1e6
    print(f"\n(a) under torch.profiler: {wall:.2f} s wall, {total:.2f} s in operators; the largest by self time:")
    for key, row in ops.items():
        print(f"  {key:<50} {row['s']:7.3f} s  {row['calls']:7d} calls")
    return {"wall_s": round(wall, 2), "operators_s": round(total, 2), "top": ops}


def float64_check(cfg, arch, methods, model: nn.Module, stage_list, s: Setup, scores) -> dict[str, Any]:
    """Largest |Spearman in float32 - in float64| per method: each stage's randomized model copied to float64.

    Differences come from rounding in the forward pass too: where max-pool inputs nearly tie, float32 and
    float64 can route the gradient to different pixels.
    """

    @contextmanager
    def float64(stage_model):
        with stage_model as m:
            yield copy.deepcopy(m).double()

    x, y, ids = s.images
    contexts = ((st, float64(randomized(model, arch, st, cfg.randomization, cfg.seed))) for st in stage_list)
    ref = score_stages(cfg, arch, methods, contexts, dataclasses.replace(s, images=(x.double(), y, ids)),
                       n_stages=len(stage_list)).scores
    key = ["stage", "method", "metric", "image"]
    ref, ours = ref.sort_values(key).reset_index(drop=True), scores.sort_values(key).reset_index(drop=True)
    diff = (ours.value - ref.value).abs()
    per_method = {m: float(v) for m, v in ours.assign(diff=diff).groupby("method")["diff"].max().items()}
    moved = diff > 1e-4
    return {"per_method": per_method, "scores_moved_over_1e-4": int(moved.sum()), "scores": len(diff),
            "images_moved_over_1e-4": sorted(int(i) for i in ours.image[moved].unique()),
            "targets_differ": int((ours.target != ref.target).sum())}


# -- memory probe -------------------------------------------------------------------------------
def memory_probe(args: argparse.Namespace) -> None:
    """One child process: the suite's run on n images x n stages; prints its peak RSS as JSON."""
    cfg, arch, model, s = prepare(args)
    stage_list = stages(arch, cfg.randomization.order, None)
    # Stages beyond the model's own: the cascade's stages again (same work per stage, more stages).
    chosen = [stage_list[0]] + [stage_list[1 + (i % (len(stage_list) - 1))] for i in range(args.probe_stages - 1)]
    before = peak_rss_mb()
    scored = score_model_stages(cfg, arch, list(validate(cfg)[1]), model, chosen, s)
    print(json.dumps({"images": args.n_images, "stages": len(chosen), "peak_rss_mb": round(peak_rss_mb(), 1),
                      "rss_before_mb": round(before, 1), "seconds": round(scored.seconds, 2)}))


def inception_probe(args: argparse.Namespace) -> None:
    """One child process: SmoothGrad, 50 samples, one 299x299 image through Inception v3 (random
    weights) within ``--memory-budget-mb``; prints its peak RSS as JSON."""
    from benchmark.methods import build_method
    from benchmark.models import get_architecture
    from benchmark.training import build_model
    from benchmark.data import Dataset

    set_threads(args.threads)
    arch = get_architecture("inception_v3")
    x = torch.rand(1, 3, 299, 299) * 2 - 1
    data = Dataset("probe", x[:0], torch.zeros(0, dtype=torch.long), x, torch.zeros(1, dtype=torch.long), 1000)
    model = build_model(arch, data, 0).eval()
    before = peak_rss_mb()
    engine = Engine(model, [build_method("smoothgrad", {"n_samples": 50})], target_layer=model.Mixed_7c,
                    memory_budget_mb=args.memory_budget_mb)
    start = time.perf_counter()
    with torch.no_grad():
        t = model(x).argmax(1)
    engine.explain(x, t, torch.arange(1))
    print(json.dumps({"model": "inception_v3", "method": "smoothgrad (50 samples)", "images": 1,
                      "memory_budget_mb": args.memory_budget_mb, "chunk": engine._chunk_size(x),
                      "rss_before_mb": round(before, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
                      "seconds": round(time.perf_counter() - start, 1)}))


def memory_table(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    base = [sys.executable, __file__, "--probe", "--data", args.data, "--threads", str(args.threads),
            "--methods", ",".join(args.methods)] + (["--root", args.root] if args.root else [])
    for n_images, n_stages in [(8, 5), (8, 10), (8, 20), (16, 5), (32, 5)]:
        cmd = base + ["--n-images", str(n_images), "--probe-stages", str(n_stages)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(
            Path(__file__).resolve().parents[1])})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"memory: {rows[-1]}", flush=True)
    out = subprocess.run([sys.executable, __file__, "--inception-probe", "--threads", str(args.threads),
                          "--memory-budget-mb", str(args.memory_budget_mb)], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"memory: {rows[-1]}", flush=True)
    return rows


# -- shared set-up ------------------------------------------------------------------------------
def prepare(args: argparse.Namespace, epochs: Optional[int] = None, model: str = "cnn"):
    cfg = ExperimentConfig(model=ModelConfig(name=model), data=DataConfig(name=args.data, root=args.root),
                           method={m: {} for m in args.methods}, n_images=args.n_images,
                           similarity=SimilarityConfig(metrics=list(METRICS)), progress=False,
                           num_threads=args.threads, results_root=args.results_root, n_saved_images=8,
                           memory_budget_mb=args.memory_budget_mb,
                           # (b) and (c) do not measure the accuracy of every stage's model: neither does (a) here
                           stage_accuracy=False)
    if epochs is not None:
        cfg.training.epochs = epochs
    arch, _ = validate(cfg)
    threads = set_threads(cfg.num_threads)
    if getattr(args, "malloc", "keep") == "keep":
        keep_freed_memory()  # as a run does (benchmark.experiment.setup), for every way alike
    device = select_device("cpu")
    t0 = time.time()
    data = load_dataset(cfg.data)
    images = select_images(data, cfg.n_images)
    cache = Path(cfg.results_root) / ".cache"
    s = Setup(device, threads, data, images, cache, time.time() - t0)
    trained = train_model(arch, data, cfg.training, cfg.seed, device, cache, False, None)
    return cfg, arch, trained.model.eval(), s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--root", default="../shared/data")
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--methods", type=lambda s: s.split(","), default=PAPER_METHODS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results-root", default="results")
    ap.add_argument("--memory-budget-mb", type=int, default=1024)
    ap.add_argument("--captum-chunk", type=int, default=256, help="items per Captum call (images x samples)")
    ap.add_argument("--skip", default="", help="comma-separated ways to skip: stagewise, captum, quantus, bound, precision "
                    "(SmoothGrad and VarGrad from Captum's gradients summed in float64)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of (a), both ways alternately; the median counts")
    ap.add_argument("--malloc", choices=["keep", "default"], default="keep",
                    help="keep: glibc keeps freed memory for reuse, as a run sets it (benchmark.runtime."
                    "keep_freed_memory); default: glibc's own behaviour")
    ap.add_argument("--profile", action="store_true",
                    help="also run (a) once under torch.profiler and print where its time goes, operator by operator")
    ap.add_argument("--float64", action="store_true",
                    help="also score every stage's model in float64 (stages one at a time) and report how far the "
                         "float32 scores are from those")
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS against images and stages")
    ap.add_argument("--memory-only", action="store_true", help="only the peak RSS table")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--probe-stages", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--inception-probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--perturbation", action="store_true", help="occlusion, leave-one-out and LIME against Captum and "
                    "Quantus instead (experiments/speed_perturbation.py, with options of its own: --perturbation --help)")
    if "--perturbation" in sys.argv[1:]:
        import speed_perturbation

        speed_perturbation.main([a for a in sys.argv[1:] if a != "--perturbation"])
        return
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.probe:
        memory_probe(args)
        return
    if args.inception_probe:
        inception_probe(args)
        return
    if args.memory_only:
        print(json.dumps({"memory": memory_table(args)}))
        return
    skip = set(filter(None, args.skip.split(",")))
    cfg, arch, model, s = prepare(args)
    _, methods = validate(cfg)
    x, _, ids = s.images
    stage_list = stages(arch, cfg.randomization.order, None)
    n_stages = len(stage_list)
    engine = Engine(model, methods, target_layer=model.get_submodule(arch.gradcam_layer), seed=cfg.seed)
    passes = engine.passes_per_image * len(x) * n_stages
    result: dict[str, Any] = {"model": arch.name, "data": s.data.name, "images": len(x), "stages": n_stages,
                              "methods": list(cfg.method), "threads": s.threads,
                              "passes_needed": passes, "passes_per_image_per_stage": engine.passes_per_image}
    times: dict[str, float] = {}

    def suite(share: bool, conv_input_grad: str = "auto", setup: Setup = s):
        """(a) once, as a run does it; with share=False every stage's model runs whole (the bound's kind of pass)."""
        run = dataclasses.replace(cfg, share_unchanged_layers=share, conv_input_grad=conv_input_grad)
        start = time.perf_counter()
        out = score_model_stages(run, arch, methods, model, stage_list, setup)
        return time.perf_counter() - start, out

    # Warm-up, untimed: the first passes of a process pay for memory and oneDNN set-up, whichever way runs
    # first. The suite's own path on 8 images: its chunks are as large as with 64, so its memory is set up too.
    suite(True, setup=dataclasses.replace(s, images=tuple(t[:8] for t in s.images)))

    # --repeats: the two suite ways alternately, each figure the median (the cores are noisy)
    runs: dict[str, list[float]] = {"a_suite": [], "a_suite_stagewise": []}
    for _ in range(args.repeats):
        seconds, scored = suite(True)
        runs["a_suite"].append(seconds)
        print(f"(a) suite: {seconds:.2f} s", flush=True)
        if "stagewise" not in skip:
            seconds, stagewise = suite(False)
            runs["a_suite_stagewise"].append(seconds)
            print(f"(a) suite, stages one at a time: {seconds:.2f} s", flush=True)
            result["stagewise_scores_identical"] = bool(stagewise.scores.equals(scored.scores))
    result["suite_runs_s"] = {k: [round(v, 2) for v in vs] for k, vs in runs.items() if vs}
    if args.profile:
        result["profile"] = profile_suite(lambda: suite(True))
    times.update({k: float(np.median(vs)) for k, vs in runs.items() if vs})

    if "captum" not in skip:
        start = time.perf_counter()
        run_captum_loop(cfg, arch, model, x, ids, 0)
        times["b_captum_loop_default"] = time.perf_counter() - start
        print(f"(b) Captum loop, Captum's default batching: {times['b_captum_loop_default']:.2f} s", flush=True)
        start = time.perf_counter()
        ref = run_captum_loop(cfg, arch, model, x, ids, args.captum_chunk)
        times["b_captum_loop"] = time.perf_counter() - start
        print(f"(b) Captum loop, {args.captum_chunk}-item calls: {times['b_captum_loop']:.2f} s", flush=True)
        df = scored.scores
        result["max_abs_spearman_diff_vs_captum"] = spearman_diffs(df, ref)
        # The same with PyTorch's own kernel for conv1's input gradient, as Captum computes it
        _, aten = suite(True, "aten")
        result["max_abs_spearman_diff_vs_captum_aten_kernel"] = spearman_diffs(aten.scores, ref)
        # Where (a) and (b) differ most (the noisy-sample methods: the suite sums the 50 samples in float64,
        # NoiseTunnel in float32, VarGrad's E[g^2] - E[g]^2 above all), which is off: both against Captum's
        # per-sample gradients summed in float64.
        noisy = [m for m in ("smoothgrad", "vargrad") if m in cfg.method]
        if noisy and "precision" not in skip:
            exact = run_captum_loop(cfg, arch, model, x, ids, args.captum_chunk, float64_sums=True, only=noisy)
            suite_off, captum_off = spearman_diffs(df, exact), max_diffs(ref, exact)
            result["max_abs_spearman_diff_vs_captum_float64"] = {
                name: {"suite_vs_float64": suite_off[name], "captum_vs_float64": captum_off[name]} for name in suite_off}
    if args.float64:
        # How precise float32 scores are at all: the same work on a float64 copy of every stage's model
        result["max_abs_spearman_diff_vs_float64_model"] = float64_check(cfg, arch, methods, model, stage_list, s,
                                                                          scored.scores)
    if "quantus" not in skip:
        start = time.perf_counter()
        result["quantus_mprt_mean"] = run_quantus(cfg, model, x, ids, args.captum_chunk)
        times["c_quantus_mprt"] = time.perf_counter() - start
        print(f"(c) Quantus MPRT: {times['c_quantus_mprt']:.2f} s", flush=True)
    if "bound" not in skip:
        batches = [64, 128, 256, 512, 1024]
        bound = measure_bound(model, tuple(x.shape[1:]), batches)
        times["d_bound"] = passes * bound["best_per_item_s"]
        # The same configuration at its median pass time: how much of the gap is the fastest repeat's luck
        times["d_bound_median"] = passes * bound["best_median_per_item_s"]
        # The engine's own kind of pass: conv1's input gradient from few_channel_convs
        ours = measure_bound(model, tuple(x.shape[1:]), batches, convs=True)
        times["d_bound_engine_pass"] = passes * ours["best_per_item_s"]
        result["pass_timing"] = bound
        result["pass_timing_engine"] = ours
        result["matmul_gflop_per_s"] = round(matmul_gflops(), 1)
    result["seconds"] = {k: round(v, 2) for k, v in times.items()}
    ratios = {}
    if "b_captum_loop" in times:
        ratios["captum_loop_over_suite"] = times["b_captum_loop"] / times["a_suite"]
        ratios["captum_loop_default_batching_over_suite"] = times["b_captum_loop_default"] / times["a_suite"]
    if "c_quantus_mprt" in times:
        ratios["quantus_over_suite"] = times["c_quantus_mprt"] / times["a_suite"]
    if "d_bound" in times:
        ratios["suite_over_bound"] = times["a_suite"] / times["d_bound"]
        ratios["suite_over_bound_median_pass"] = times["a_suite"] / times["d_bound_median"]
        ratios["suite_over_bound_engine_pass"] = times["a_suite"] / times["d_bound_engine_pass"]
        if "a_suite_stagewise" in times:
            ratios["suite_stagewise_over_bound"] = times["a_suite_stagewise"] / times["d_bound"]
            ratios["suite_stagewise_over_bound_engine_pass"] = times["a_suite_stagewise"] / times["d_bound_engine_pass"]
    if "a_suite_stagewise" in times and "b_captum_loop" in times:
        ratios["captum_loop_over_suite_stagewise"] = times["b_captum_loop"] / times["a_suite_stagewise"]
    result["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if args.memory:
        result["memory"] = memory_table(args)

    print()
    print("| way | seconds | vs suite |")
    print("|---|--:|--:|")
    labels = {"a_suite": "(a) this suite", "a_suite_stagewise": "(a) this suite, stages one at a time",
              "b_captum_loop_default": "(b) Captum loop + scipy spearmanr, Captum's default batching",
              "b_captum_loop": f"(b) Captum loop + scipy spearmanr, calls of {args.captum_chunk} items",
              "c_quantus_mprt": "(c) Quantus MPRT + Captum", "d_bound": "(d) bound: passes x best pass time",
              "d_bound_median": "(d) the same at the median pass time of that batch size and layout",
              "d_bound_engine_pass": "(d) passes x best time of the engine's kind of pass (conv1's input gradient "
                                     "from few_channel_convs)"}
    for k, v in times.items():
        print(f"| {labels[k]} | {v:.2f} | {v / times['a_suite']:.2f}x |")
    if "pass_timing" in result:
        stock, ours = result["pass_timing"], result["pass_timing_engine"]
        print(f"\none pass: {stock['flop_per_pass'] / 1e6:.1f} MFLOP; the best pass reaches {stock['best_gflop_per_s']:.0f} "
              f"GFLOP/s ({stock['best']}), the engine's kind {ours['best_gflop_per_s']:.0f} GFLOP/s ({ours['best']}); "
              f"a 2048 x 2048 float32 matrix product: {result['matmul_gflop_per_s']:.0f} GFLOP/s")
    if "max_abs_spearman_diff_vs_captum" in result:
        worst = max(result["max_abs_spearman_diff_vs_captum"].values())
        print(f"\nlargest |Spearman (a) - (b)| over methods, stages, images, ABS and no-ABS: {worst:.2e}")
        worst = max(result["max_abs_spearman_diff_vs_captum_aten_kernel"].values())
        print(f"the same with (a) on PyTorch's conv input-gradient kernel (conv_input_grad=aten): {worst:.2e}")
        for name, row in result.get("max_abs_spearman_diff_vs_captum_float64", {}).items():
            print(f"{name}: largest |Spearman - Captum's gradients summed in float64|: (a) {row['suite_vs_float64']:.1e}, "
                  f"(b) {row['captum_vs_float64']:.1e}")
    if "max_abs_spearman_diff_vs_float64_model" in result:
        f64 = result["max_abs_spearman_diff_vs_float64_model"]
        print(f"float32 against float64 models: largest |Spearman difference| {max(f64['per_method'].values()):.1e}; "
              f"{f64['scores_moved_over_1e-4']} of {f64['scores']} scores moved by more than 1e-4, on images "
              f"{f64['images_moved_over_1e-4']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
