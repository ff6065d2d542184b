"""Occlusion, leave-one-out and LIME through the cascading test, run four ways in one process and timed side by side.

    python experiments/speed.py --perturbation                                   # MNIST CNN, 16 images, LIME 1000 samples
    python experiments/speed.py --perturbation --n-images 4 --lime-samples 100 --stages 2 --skip quantus  # a quick look
    python experiments/speed.py --perturbation --profile                         # + where the suite's time goes
    python experiments/speed_perturbation.py ...                                 # the same, directly

The methods, with the same settings every way: ``occlusion`` (4 x 4 windows, stride 2, zero fill), ``leave_one_out``
(the suite's default SLIC superpixels, zero fill) and ``lime`` (the same superpixels, ``--lime-samples`` on/off draws,
Captum Lime's cosine kernel of width 1, ridge alpha 1, zero fill); the MNIST CNN and the stages of experiments/speed.py's
``prepare`` (the same trained model, the same randomized weights).

(a)  this suite: ``score_model_stages`` (``benchmark.schedule.score_stages``, the stages explained together as a run
     does it): once per method, and once with the three methods together (they share one stream of masked images);
(b)  a Captum loop as a user writes it: stage by stage, method by method, ``Occlusion``, ``FeatureAblation``
     (``feature_mask`` = the suite's SLIC labels) and ``Lime`` (``SkLearnRidge``, Captum's exponential cosine kernel,
     a ``perturb_func`` that hands out the suite's draws ``LimeScores.draws``) with Captum's default
     ``perturbations_per_eval=1``; the segmentation and draws made once per image for all stages; maps post-processed
     (ABS, no-ABS) and scored with ``scipy.stats.spearmanr`` as experiments/speed.py's Captum loop does;
(b') the same, tuned: ``perturbations_per_eval`` = every perturbation of a call in one forward pass (169 windows,
     the superpixels, the LIME samples), at most ``--max-eval-items`` items per pass. Occlusion and FeatureAblation
     take the whole batch of images per call; Lime one image per call (Captum's Lime fits one model per example, and
     its batch mode is a loop over the examples);
(c)  Quantus' MPRT (top-down, its own layer resets: the original model twice, then its 4 layers) driving the (b')
     explainers, one method at a time. Its ``explain_func`` gets the whole batch, so the superpixels and draws of
     each image are the suite's too.

Agreement, untimed where it costs extra: the maps of (a) and (b') on the first and the last stage (max |difference|,
also relative to the largest |value|), and the Spearman scores of (a) against (b) and (b') on every stage.
``--profile``: the suite with the three methods together once more with timers on its phases (regions and draws,
forward passes, ridge fits, ...), and once under ``torch.profiler`` (speed.py's ``profile_suite``).
Every way runs channels-last (weights and inputs), as experiments/speed.py's Captum loop does, on ``--threads``
threads (2, as speed.py). On cores that other processes load, two threads make every small call wait for a
descheduled thread (a batch-1 forward pass measured at 20-70 ms instead of 1.5 ms), which (b) pays most: ``--threads 1``
measures the work rather than the scheduler. Prints a table and one JSON line (``ratios``: (b') over (a), per method).
Needs the ``bench`` extra (captum, quantus).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
import time
import types
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from torch import nn  # noqa: E402

import speed  # noqa: E402
from benchmark.config import ExperimentConfig  # noqa: E402
from benchmark.engine import channels_last  # noqa: E402
from benchmark.experiment import Setup, validate  # noqa: E402
from benchmark.methods.masks import fill_image, window_masks  # noqa: E402
from benchmark.model_randomization import score_model_stages  # noqa: E402
from benchmark.postprocess import abs_map, signed_map  # noqa: E402
from benchmark.randomization import Stage, randomized, stages  # noqa: E402
from benchmark.schedule import engine_for  # noqa: E402

NAMES = ("occlusion", "leave_one_out", "lime")
Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (model, x, target) -> (B, C, H, W) maps


def method_settings(lime_samples: int) -> dict[str, dict[str, Any]]:
    return {"occlusion": {"window": 4, "stride": 2, "fill": "zero"},
            "leave_one_out": {"regions": "slic", "fill": "zero"},
            "lime": {"regions": "slic", "fill": "zero", "n_samples": lime_samples}}


# -- (b), (b') and (c): Captum ---------------------------------------------------------------------------------------
def captum_explainer(name: str, prim: Any, x: torch.Tensor, ids: list[int], seed: int, tuned: bool,
                     max_items: int) -> tuple[Explainer, int]:
    """One method's Captum call over a batch and its ``perturbations_per_eval``; the regions and draws of the
    images are made here, once for every stage."""
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import FeatureAblation, Lime, Occlusion
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    n_images, channels, height, width = x.shape
    fills = torch.stack([fill_image(img, prim.fill, prim.blur_sigma) for img in x])

    def per_eval(n_perturbations: int, batch: int) -> int:
        return min(n_perturbations, max(1, max_items // batch)) if tuned else 1

    if name == "occlusion":
        (wh, ww), (sh, sw) = prim.sizes(height, width)
        ppe = per_eval(len(window_masks(height, width, (wh, ww), (sh, sw))), n_images)

        def occlusion(model, xb, t):
            return Occlusion(model).attribute(xb, sliding_window_shapes=(channels, wh, ww), strides=(channels, sh, sw),
                                              baselines=fills, target=t, perturbations_per_eval=ppe)
        return occlusion, ppe

    labels = torch.stack([torch.from_numpy(prim.labels(img)) for img in x])[:, None]  # (B, 1, H, W)
    if name == "leave_one_out":
        ppe = per_eval(int(labels.max()) + 1, n_images)

        def ablation(model, xb, t):
            return FeatureAblation(model).attribute(xb, target=t, feature_mask=labels, baselines=fills,
                                                    perturbations_per_eval=ppe)
        return ablation, ppe

    draws = [prim.draws(int(labels[i].max()) + 1, ids[i], seed) for i in range(n_images)]
    ppe = per_eval(prim.n_samples, 1)
    kernel = get_exp_kernel_similarity_function("cosine", prim.kernel_width)

    def lime(model, xb, t):
        out = []
        for i in range(len(xb)):
            samples = iter(draws[i])

            def perturb(_inp, **_kwargs):
                return next(samples)[None]

            explainer = Lime(model, interpretable_model=SkLearnRidge(alpha=prim.alpha), similarity_func=kernel,
                             perturb_func=perturb)
            out.append(explainer.attribute(xb[i : i + 1], target=t[i : i + 1], feature_mask=labels[i : i + 1],
                                           baselines=fills[i : i + 1], n_samples=len(draws[i]),
                                           perturbations_per_eval=ppe))
        return torch.cat(out)
    return lime, ppe


def processed(m: torch.Tensor, percentile: float) -> dict[str, np.ndarray]:
    return {"spearman_abs": abs_map(m, percentile).astype(np.float32),
            "spearman": signed_map(m, percentile).astype(np.float32)}


def run_captum_loop(cfg: ExperimentConfig, arch, model: nn.Module, prim: Any, name: str, x: torch.Tensor,
                    ids: torch.Tensor, stage_list: list[Stage], tuned: bool, max_items: int,
                    keep: tuple[int, ...] = ()) -> tuple[speed.Scores, dict[int, torch.Tensor], int]:
    """(b) or (b') for one method: its scores per (stage, method, metric), the raw maps of the stages ``keep``, and the
    ``perturbations_per_eval`` used. The memory layout of experiments/speed.py's Captum loop (channels-last)."""
    ids_l = [int(i) for i in ids]
    x = x.to(memory_format=torch.channels_last)
    scores: speed.Scores = {}
    maps: dict[int, torch.Tensor] = {}
    reference: dict[str, np.ndarray] = {}
    explain, ppe = captum_explainer(name, prim, x, ids_l, cfg.seed, tuned, max_items)
    for stage in stage_list:
        with randomized(model, arch, stage, cfg.randomization, cfg.seed), channels_last(model):
            with torch.no_grad():
                target = model(x).argmax(1)
            m = explain(model, x, target).detach().float()
        if stage.index in keep:
            maps[stage.index] = m.contiguous()
        cur = processed(m, cfg.similarity.percentile)
        if stage.index == stage_list[0].index:
            reference = cur
        for metric, values in cur.items():
            ref = reference[metric]
            scores[(stage.index, name, metric)] = np.array(
                [spearmanr(ref[i].ravel(), values[i].ravel()).statistic for i in range(len(x))])
    return scores, maps, ppe


def run_quantus(cfg: ExperimentConfig, model: nn.Module, prim: Any, name: str, x: torch.Tensor, ids: torch.Tensor,
                max_items: int) -> dict[str, float]:
    """(c) for one method: Quantus' MPRT (top-down) with the (b') explainer; its mean score per layer."""
    import quantus

    xc = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(xc).argmax(1).numpy()
    explain, _ = captum_explainer(name, prim, x, [int(i) for i in ids], cfg.seed, True, max_items)

    def explain_func(model, inputs, targets, **kwargs):
        xi = torch.as_tensor(inputs).contiguous(memory_format=torch.channels_last)
        assert len(xi) == len(x), "one batch: the regions and draws are those of the images in order"
        with channels_last(model):
            return explain(model, xi, torch.as_tensor(targets)).detach().numpy()

    metric = quantus.MPRT(similarity_func=quantus.similarity_func.correlation_spearman, layer_order="top_down",
                          disable_warnings=True, display_progressbar=False)
    scores = metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=None, explain_func=explain_func,
                    device="cpu", batch_size=len(x))
    return {k: float(np.nanmean(v)) for k, v in scores.items()}


# -- (a): the suite and where its time goes --------------------------------------------------------------------------
def run_suite(cfg: ExperimentConfig, arch, model: nn.Module, names: list[str], stage_list: list[Stage], s: Setup):
    """(a) once, as a run does it: seconds and the ``Scored`` result."""
    run = dataclasses.replace(cfg, method={n: cfg.method[n] for n in names})
    _, methods = validate(run)
    start = time.perf_counter()
    out = score_model_stages(run, arch, methods, model, stage_list, s)
    return time.perf_counter() - start, out


# (label, defining module, attribute, parent label); nested phases are part of their parent's time.
PHASES = [
    ("regions, draws, masks (streams_for)", "benchmark.engine.forward", "streams_for", None),
    ("SLIC (slic_labels)", "benchmark.methods.masks", "slic_labels", "regions, draws, masks (streams_for)"),
    ("forward chunks (_chunk)", "benchmark.engine.forward", "_chunk", None),
    ("masked copies built (Stream.make)", "benchmark.engine.forward", "Stream.make", "forward chunks (_chunk)"),
    ("maps from scores (finish_streams)", "benchmark.engine.forward", "finish_streams", None),
    ("LIME kernel weights (LimeScores.weights)", "benchmark.methods.perturbation", "LimeScores.weights",
     "maps from scores (finish_streams)"),
    ("ridge fits (sklearn Ridge.fit)", "sklearn.linear_model", "Ridge.fit", "maps from scores (finish_streams)"),
    ("scores spread to pixels (_spread)", "benchmark.methods.masks", "_spread",
     "maps from scores (finish_streams)"),
    ("post-processing + Spearman (StageScorer.score)", "benchmark.scoring", "StageScorer.score", None),
    ("stage outputs, targets (StageScorer.observe)", "benchmark.scoring", "StageScorer.observe", None),
]


@contextmanager
def timed(owner: Any, attr: str, totals: dict[str, list[float]], label: str) -> Iterator[None]:
    """``owner.attr`` wrapped with a clock adding to ``totals[label]`` (seconds, calls) for the block; a module
    function also wherever a loaded ``benchmark`` module imported it by name."""
    fn = getattr(owner, attr)
    row = totals.setdefault(label, [0.0, 0])

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            row[0] += time.perf_counter() - start
            row[1] += 1

    owners = [owner]
    if isinstance(owner, types.ModuleType):
        owners += [m for name, m in list(sys.modules.items())
                   if name.startswith("benchmark") and m is not owner and vars(m).get(attr) is fn]
    saved = [(o, attr in vars(o), vars(o).get(attr)) for o in owners]
    for o in owners:
        setattr(o, attr, wrapper)
    try:
        yield
    finally:
        for o, had, original in saved:
            if had:
                setattr(o, attr, original)
            else:
                delattr(o, attr)


def profile_phases(run: Callable[[], Any]) -> dict[str, Any]:
    """``run`` (the suite) once with clocks on its phases; prints and returns seconds and calls per phase."""
    totals: dict[str, list[float]] = {}
    missing = []
    with ExitStack() as stack:
        for label, module, attr, _ in PHASES:
            try:
                owner: Any = importlib.import_module(module)
                *path, last = attr.split(".")
                for part in path:
                    owner = getattr(owner, part)
                getattr(owner, last)
            except (ImportError, AttributeError):
                missing.append(label)
                continue
            stack.enter_context(timed(owner, last, totals, label))
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
    top = sum(totals[label][0] for label, *_, parent in PHASES if parent is None and label in totals)
    print(f"\n(a), the three methods together, with clocks on its phases: {wall:.2f} s wall")
    rows = {}
    for label, *_, parent in PHASES:
        if label not in totals:
            continue
        seconds, calls = totals[label]
        rows[label] = {"s": round(seconds, 3), "calls": calls, "share": round(seconds / wall, 3), "within": parent}
        indent = "    " if parent else "  "
        print(f"{indent}{label:<52} {seconds:7.2f} s {100 * seconds / wall:5.1f} %  {calls:7d} calls")
    other = wall - top
    print(f"  {'the rest (model set-up, stage states, engine, glue)':<52} {other:7.2f} s {100 * other / wall:5.1f} %")
    for label in missing:
        print(f"  (no clock on {label}: not found)")
    return {"wall_s": round(wall, 2), "phases": rows, "rest_s": round(other, 3), "missing": missing}


# -- agreement -------------------------------------------------------------------------------------------------------
def suite_maps(cfg: ExperimentConfig, arch, methods: list, model: nn.Module, stage: Stage, x: torch.Tensor,
               ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The suite's engine on one stage's model alone (untimed), the stage's predicted targets."""
    with randomized(model, arch, stage, cfg.randomization, cfg.seed) as m:
        with torch.no_grad():
            target = m(x).argmax(1)
        return engine_for(cfg, arch, methods, m).explain(x, target, ids)


def map_diffs(ours: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    d = float((ours - ref).abs().max())
    scale = float(ref.abs().max())
    return {"max_abs": d, "max_abs_over_max_value": d / scale if scale > 0 else d}


# -- the comparison --------------------------------------------------------------------------------------------------
def parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--root", default="../shared/data")
    ap.add_argument("--n-images", type=int, default=16)
    ap.add_argument("--lime-samples", type=int, default=1000, help="LIME's draws per image (at least the regions, 49)")
    ap.add_argument("--stages", type=int, default=0, help="the first N stages of the cascade (stage 0 included); 0: all")
    ap.add_argument("--methods", type=lambda v: v.split(","), default=list(NAMES), help="a subset of " + ",".join(NAMES))
    ap.add_argument("--threads", type=int, default=2, help="2, as speed.py; 1 where other processes load the cores")
    ap.add_argument("--results-root", default="results")
    ap.add_argument("--memory-budget-mb", type=int, default=1024)
    ap.add_argument("--max-eval-items", type=int, default=4096,
                    help="(b'): perturbations_per_eval x images per Captum forward pass, at most")
    ap.add_argument("--skip", default="", help="comma-separated ways to skip: default ((b), perturbations_per_eval=1), "
                    "tuned ((b')), quantus ((c)), together ((a) with the methods together)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of (a) and (b'), alternately; the median counts")
    ap.add_argument("--profile", action="store_true", help="also where the suite's time goes: its phases, its operators")
    ap.add_argument("--malloc", choices=["keep", "default"], default="keep", help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=None, help=argparse.SUPPRESS)  # training epochs (tests: 1)
    args = ap.parse_args(argv)
    unknown = [m for m in args.methods if m not in NAMES]
    if unknown:
        ap.error(f"--methods has {unknown}; use some of {list(NAMES)}")
    return args


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    skip = set(filter(None, args.skip.split(",")))
    names = list(args.methods)
    args.methods = names  # prepare builds cfg.method from these
    cfg, arch, model, s = speed.prepare(args, epochs=args.epochs)
    settings = method_settings(args.lime_samples)
    cfg.method = {n: dict(settings[n]) for n in names}
    _, methods = validate(cfg)
    prims = {m.name: m.primitives()[0] for m in methods}
    x, _, ids = s.images
    stage_list = stages(arch, cfg.randomization.order, None)
    if args.stages:
        stage_list = stage_list[: args.stages]
    keep = tuple(sorted({stage_list[0].index, stage_list[-1].index}))
    result: dict[str, Any] = {
        "perturbation": {"model": arch.name, "data": s.data.name, "images": len(x), "stages": len(stage_list),
                         "methods": cfg.method, "threads": s.threads, "max_eval_items": args.max_eval_items,
                         # the machine's load (1, 5, 15 minutes) at the start; timings on shared cores move with it
                         "load_average_start": [round(v, 2) for v in os.getloadavg()]}}
    times: dict[tuple[str, str], float] = {}
    # Warm-up, untimed: the first passes of a process pay for memory and oneDNN set-up, whichever way runs first
    run_suite(cfg, arch, model, names, stage_list[:2], dataclasses.replace(s, images=tuple(t[:2] for t in s.images)))
    for name in names:
        run_captum_loop(cfg, arch, model, prims[name], name, x[:1], ids[:1], stage_list[:1], True, args.max_eval_items)

    # --repeats: (a) and (b') alternately, each figure the median (the cores are shared and noisy); (b) once
    scored: dict[str, Any] = {}
    captum: dict[str, dict[str, Any]] = {"b": {}, "b_tuned": {}}
    ppe: dict[str, dict[str, int]] = {"b": {}, "b_tuned": {}}
    runs: dict[tuple[str, str], list[float]] = {}

    def captum_way(way: str, name: str) -> None:
        tuned = way == "b_tuned"
        start = time.perf_counter()
        scores, maps, used = run_captum_loop(cfg, arch, model, prims[name], name, x, ids, stage_list, tuned,
                                             args.max_eval_items, keep)
        runs.setdefault((way, name), []).append(time.perf_counter() - start)
        captum[way][name], ppe[way][name] = (scores, maps), used
        tag = "(b')" if tuned else "(b)"
        print(f"{tag} Captum loop, {name}, perturbations_per_eval={used}: "
              f"{runs[(way, name)][-1]:.2f} s", flush=True)

    for _ in range(args.repeats):
        for name in names:
            seconds, scored[name] = run_suite(cfg, arch, model, [name], stage_list, s)
            runs.setdefault(("a", name), []).append(seconds)
            print(f"(a) suite, {name}: {seconds:.2f} s", flush=True)
        if "together" not in skip and len(names) > 1:
            seconds, scored["all"] = run_suite(cfg, arch, model, names, stage_list, s)
            runs.setdefault(("a", "all"), []).append(seconds)
            print(f"(a) suite, {' + '.join(names)} together: {seconds:.2f} s", flush=True)
        if "tuned" not in skip:
            for name in names:
                captum_way("b_tuned", name)
    if "default" not in skip:
        for name in names:
            captum_way("b", name)
    times.update({k: float(np.median(v)) for k, v in runs.items()})
    result["runs_s"] = {f"{way}/{name}": [round(v, 3) for v in vs] for (way, name), vs in runs.items()}
    result["suite_items_per_image"] = {n: engine_for(cfg, arch, [m], model).items_per_image(x[:1], ids[:1])
                                       for n, m in zip(names, methods)}
    result["perturbations_per_eval"] = {k: v for k, v in ppe.items() if v}

    if "quantus" not in skip:
        result["quantus_mprt_mean"] = {}
        for name in names:
            start = time.perf_counter()
            result["quantus_mprt_mean"][name] = run_quantus(cfg, model, prims[name], name, x, ids, args.max_eval_items)
            times[("c", name)] = time.perf_counter() - start
            print(f"(c) Quantus MPRT + Captum, {name}: {times[('c', name)]:.2f} s", flush=True)

    # Agreement: the same work? Maps of the suite's engine and of Captum on the first and last stage; scores everywhere.
    agreement: dict[str, Any] = {}
    by_stage = {st.index: st for st in stage_list}
    ref_maps = {k: suite_maps(cfg, arch, methods, model, by_stage[k], x, ids) for k in keep}
    for name in names:
        row: dict[str, Any] = {}
        for way in ("b", "b_tuned"):
            if name not in captum[way]:
                continue
            scores, maps = captum[way][name]
            row[f"spearman_max_abs_diff_{way}"] = speed.spearman_diffs(scored[name].scores, scores)[name]
            if "all" in scored:
                row[f"spearman_max_abs_diff_{way}_vs_together"] = speed.spearman_diffs(scored["all"].scores, scores)[name]
            row[f"maps_{way}"] = {f"stage{k}": map_diffs(ref_maps[k][name], maps[k]) for k in keep}
        agreement[name] = row
    result["agreement"] = agreement

    if args.profile:
        result["profile"] = profile_phases(lambda: run_suite(cfg, arch, model, names, stage_list, s))
        result["profile_operators"] = speed.profile_suite(lambda: run_suite(cfg, arch, model, names, stage_list, s))

    result["seconds"] = {f"{way}/{name}": round(v, 3) for (way, name), v in times.items()}
    ratios = {n: times[("b_tuned", n)] / times[("a", n)] for n in names if ("b_tuned", n) in times}
    result["ratios"] = {k: round(v, 2) for k, v in ratios.items()}
    for way, key in (("b", "ratios_captum_default"), ("c", "ratios_quantus")):
        got = {n: round(times[(way, n)] / times[("a", n)], 2) for n in names if (way, n) in times}
        if got:
            result[key] = got
    if ("a", "all") in times:
        result["ratios_all_together"] = {way: round(sum(times[(way, n)] for n in names) / times[("a", "all")], 2)
                                         for way in ("b", "b_tuned", "c") if all((way, n) in times for n in names)}
    result["peak_rss_mb"] = round(speed.peak_rss_mb(), 1)
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]

    labels = {"a": "(a) this suite", "b": "(b) Captum loop, perturbations_per_eval", "b_tuned": "(b') Captum loop, "
              "perturbations_per_eval", "c": "(c) Quantus MPRT + Captum (b')"}
    print()
    print("| way | method | seconds | vs suite |")
    print("|---|---|--:|--:|")
    for way in ("a", "b", "b_tuned", "c"):
        for name in names:
            if (way, name) in times:
                extra = f"={ppe[way][name]}" if way in ppe and name in ppe[way] else ""
                print(f"| {labels[way]}{extra} | {name} | {times[(way, name)]:.2f} | "
                      f"{times[(way, name)] / times[('a', name)]:.2f}x |")
        if ("a", "all") in times and all((way, n) in times for n in names):
            total = sum(times[(way, n)] for n in names) if way != "a" else times[("a", "all")]
            what = "all three together" if way == "a" else "all three (sum)"
            extra = ""
            if way in ppe:
                extra = "=" + ", ".join(str(ppe[way][n]) for n in names)
            print(f"| {labels[way]}{extra} | {what} | {total:.2f} | {total / times[('a', 'all')]:.2f}x |")
    if agreement:
        print("\nagreement of (a) with Captum: largest |Spearman difference| over stages, images, ABS and no-ABS; "
              "largest |map difference| (relative to the largest |value|) on stages " + ", ".join(map(str, keep)))
        for name, row in agreement.items():
            parts = []
            for way in ("b", "b_tuned"):
                if f"maps_{way}" in row:
                    worst = max(v["max_abs_over_max_value"] for v in row[f"maps_{way}"].values())
                    parts.append(f"{labels[way][:4].strip()} Spearman {row[f'spearman_max_abs_diff_{way}']:.1e}, "
                                 f"maps {worst:.1e}")
            print(f"  {name}: " + "; ".join(parts))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
