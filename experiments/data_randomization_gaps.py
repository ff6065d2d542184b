"""Two computations behind docs/reproducing.md, "The two gaps, investigated", that the runner cannot do.

``gradcam``: GradCAM of the data randomization test on every tensor of the MNIST CNN's two conv blocks, and what
ties do to its rank correlation. ``mlp``: the MLP's Gradient maps compared across models the runner never pairs
(true-label and random-label models of different seeds, and the untrained models they start from).

gradcam
-------

The suite's GradCAM reads a module's output (``model.gradcam_layer``): for the CNN ``conv2`` (the block's output,
after its functional ReLU, before the pooling) or ``conv2.conv`` (before the ReLU). The pooled outputs are no
module's output, so this script computes GradCAM itself, with plain autograd on the two cached checkpoints of a
finished run, on six tensors per block pair:

    conv1.conv (pre-ReLU, 28x28), conv1 (after ReLU, 28x28), pool1 (14x14),
    conv2.conv (pre-ReLU, 14x14), conv2 (after ReLU, 14x14), pool2 (7x7)

GradCAM: weights = spatial mean of d logit_c / d A (c the argmax of the model explained), ReLU(sum_k w_k A_k),
bilinear upsampling to 28x28 (align_corners=False), as the suite and the paper's code. ABS maps: (m - min) /
(p99 - min) clipped to [0, 1] (PROTOCOL.md). Per tensor, over the run's first n held-out images, the mean of:

    spearman     scipy Spearman of the two ABS maps (average ranks for ties), the suite's ABS Spearman
    tied         share of pixels tied within a map (mean of the two maps)
    both_tied    share of pixels tied in both maps (zero in both, or saturated at 1 in both)
    untied       Spearman over the pixels not tied in both maps
    random_ties  Spearman with ties broken at random (ordinal ranks of a random permutation; mean of 5 draws)
    no_relu      Spearman of the upsampled maps without GradCAM's final ReLU (signed; no zero ties)
    ones         ABS Spearman of ReLU(1 + sum_k w_k A_k), PAIR saliency's GradCam until 2018-08-18
    ones_tf1     the same, upsampled as TF1's resize_bilinear (no half-pixel centres)
    ones_clipped share of pixels where 1 + sum_k w_k A_k < 0 (the only pixels that ReLU(1 + ...) sets to zero)
    n_scored     images whose two ReLU maps are both non-constant (a constant map has no rank correlation:
                 NaN, left out of the means, as in the suite); constant_true / constant_random: constant maps

Usage (after a CNN data randomization run, whose meta.json names both checkpoints):

    .venv/bin/python experiments/data_randomization_gaps.py gradcam \\
        --run /tmp/gaps/cnn_gradcam/data_randomization/<run_id> --root /work/shared/data --n-images 100

Prints a table and writes gradcam_tensors.csv next to the run's scores (or to --out).

mlp
---
Gradient maps (d logit_c / d x, c the argmax of the model explained; ABS as above) of the models of one or more
finished MLP data randomization runs (``--runs``, each with its own seed): per run the true-label model
(``true_s<seed>``), the random-label model (``random_s<seed>``) and the untrained model both start from
(``init_s<seed>``, drawn as the suite draws it: ``benchmark.training.build_model``). Prints the mean ABS and no-ABS
Spearman over the first n held-out images for every pair:

    .venv/bin/python experiments/data_randomization_gaps.py mlp --root /work/shared/data --n-images 100 \\
        --runs /tmp/gaps/mlp_default/data_randomization/<run_id> /tmp/gaps/mlp_seed1/data_randomization/<run_id>
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import yaml
import torch
import torch.nn.functional as F
from scipy.stats import rankdata, spearmanr

from benchmark.config import DataConfig
from benchmark.data import load_dataset
from benchmark.models import get_architecture
from benchmark.models.cnn import MnistCNN
from benchmark.training import build_model

TENSORS = ["conv1.conv", "conv1", "pool1", "conv2.conv", "conv2", "pool2"]
SIDES = {"conv1.conv": 28, "conv1": 28, "pool1": 14, "conv2.conv": 14, "conv2": 14, "pool2": 7}


def forward_keep(model: MnistCNN, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The CNN's forward pass written out, every candidate tensor kept with its gradient."""
    t = {}
    t["conv1.conv"] = model.conv1.conv(x)
    t["conv1"] = F.relu(t["conv1.conv"])
    t["pool1"] = F.max_pool2d(t["conv1"], 2)
    t["conv2.conv"] = model.conv2.conv(t["pool1"])
    t["conv2"] = F.relu(t["conv2.conv"])
    t["pool2"] = F.max_pool2d(t["conv2"], 2)
    h = F.relu(model.fc1(t["pool2"].flatten(1)))
    logits = model.logits(h)
    for v in t.values():
        v.retain_grad()
    return logits, t


def resize_tf1(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1's ``tf.image.resize_bilinear`` (align_corners=False, no half-pixel centres): output pixel i reads the
    input at i * in / out, the last row and column clamped."""
    def weights(n_in: int, n_out: int) -> torch.Tensor:
        src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = (src - lo).clamp(0, 1)
        w = torch.zeros(n_out, n_in, dtype=torch.float64)
        w[torch.arange(n_out), lo] += 1 - frac
        w[torch.arange(n_out), hi] += frac
        return w
    wy, wx = weights(m.shape[-2], size[0]), weights(m.shape[-1], size[1])
    return torch.einsum("yh,bchw,xw->bcyx", wy, m.double(), wx).float()


def gradcams(model: MnistCNN, x: torch.Tensor) -> dict[str, dict[str, np.ndarray]]:
    """{tensor: {variant: (B, 28, 28) map}} for the model's predicted class. Variants:

    relu     ReLU(sum_k w_k A_k), bilinear upsampling (PyTorch, half-pixel centres): the suite's GradCAM
    no_relu  sum_k w_k A_k without the ReLU, same upsampling
    ones     ReLU(1 + sum_k w_k A_k), same upsampling: PAIR saliency's GradCam before 2018-08-18
             (grad_cam initialized with np.ones, changed to np.zeros in commit 1f6fc55)
    ones_tf1 the same map divided by its maximum and upsampled as TF1's resize_bilinear (PAIR's should_resize)
    """
    logits, t = forward_keep(model, x)
    target = logits.argmax(1)
    logits.gather(1, target[:, None]).sum().backward()
    size = tuple(x.shape[-2:])
    up = lambda m: F.interpolate(m, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
    out = {}
    for name, a in t.items():
        w = a.grad.mean(dim=(2, 3), keepdim=True)
        cam = (w * a).sum(dim=1, keepdim=True).detach()
        ones = F.relu(1 + cam)
        peak = ones.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None, None]
        out[name] = {"relu": up(F.relu(cam)), "no_relu": up(cam), "ones": up(ones),
                     "ones_tf1": resize_tf1(ones / peak, size)[:, 0].numpy()}
    return out


def abs_norm(m: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """(B, H, W) -> rows (B, N): |m|, (m - min) / (p-th percentile - min) clipped to [0, 1]."""
    flat = np.abs(m.reshape(len(m), -1)).astype(np.float64)
    lo = flat.min(1, keepdims=True)
    hi = np.percentile(flat, percentile, axis=1, keepdims=True)
    hi = np.where(hi > lo, hi, flat.max(1, keepdims=True))
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.clip((flat - lo) / span, 0.0, 1.0)


def tied_mask(row: np.ndarray) -> np.ndarray:
    """True where the value occurs more than once in the row."""
    _, inv, counts = np.unique(row, return_inverse=True, return_counts=True)
    return counts[inv] > 1


def rho(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def random_tie_rho(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, draws: int = 5) -> float:
    vals = []
    for _ in range(draws):
        p = rng.permutation(len(a))
        ra, rb = np.empty(len(a)), np.empty(len(b))
        ra[p] = rankdata(a[p], method="ordinal")
        rb[p] = rankdata(b[p], method="ordinal")
        vals.append(np.corrcoef(ra, rb)[0, 1])
    return float(np.mean(vals))


def signed_norm(m: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """(B, H, W) -> rows (B, N): m / p-th percentile of |m|, clipped to [-1, 1] (no-ABS)."""
    flat = m.reshape(len(m), -1).astype(np.float64)
    span = np.percentile(np.abs(flat), percentile, axis=1, keepdims=True)
    return np.clip(flat / np.where(span > 0, span, 1.0), -1.0, 1.0)


def gradient_maps(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """d logit_c / d x for c = the model's argmax, (B, 28, 28)."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    logits.gather(1, logits.argmax(1)[:, None]).sum().backward()
    return x.grad.detach().sum(1).numpy()


def main_mlp(args: argparse.Namespace) -> None:
    data = load_dataset(DataConfig(name="mnist", root=args.root))
    x = data.eval_images[: args.n_images].float()
    arch = get_architecture("mlp")
    maps = {}
    for run in map(Path, args.runs):
        meta = json.loads((run / "meta.json").read_text())
        seed = int(yaml.safe_load((run / "config.yaml").read_text())["seed"])
        for name, path in (("true", meta["model"]["checkpoint"]), ("random", meta["random_label_model"]["checkpoint"]),
                           ("init", None)):
            model = build_model(arch, data, seed)
            if path is not None:
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            model.eval()
            acc = float((model(data.eval_images.float()).argmax(1) == data.eval_labels).float().mean())
            key = f"{name}_s{seed}"
            print(f"{key}: {Path(path).name if path else 'untrained (build_model)'}, held-out accuracy {acc:.4f}")
            maps[key] = gradient_maps(model, x)
    names = list(maps)
    print("| model A | model B | ABS Spearman | no-ABS Spearman |")
    print("|---|---|---|---|")
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            abs_a, abs_b = abs_norm(maps[a], args.percentile), abs_norm(maps[b], args.percentile)
            sg_a, sg_b = signed_norm(maps[a], args.percentile), signed_norm(maps[b], args.percentile)
            r_abs = np.nanmean([rho(abs_a[k], abs_b[k]) for k in range(len(x))])
            r_sg = np.nanmean([rho(sg_a[k], sg_b[k]) for k in range(len(x))])
            print(f"| {a} | {b} | {r_abs:.3f} | {r_sg:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    gc = sub.add_parser("gradcam", help="GradCAM on every conv tensor of the CNN")
    gc.add_argument("--run", required=True, help="a finished CNN data randomization run folder (its meta.json)")
    gc.add_argument("--out", default=None, help="CSV path (default: <run>/gradcam_tensors.csv)")
    mlp = sub.add_parser("mlp", help="the MLP's Gradient maps across runs and untrained models")
    mlp.add_argument("--runs", nargs="+", required=True, help="finished MLP data randomization run folders")
    for p in (gc, mlp):
        p.add_argument("--root", required=True, help="data.root of the run (the folder holding MNIST/raw)")
        p.add_argument("--n-images", type=int, default=100)
        p.add_argument("--percentile", type=float, default=99.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.command == "mlp":
        main_mlp(args)
    else:
        main_gradcam(args)


def main_gradcam(args: argparse.Namespace) -> None:
    run = Path(args.run)
    meta = json.loads((run / "meta.json").read_text())
    ckpts = {"true": meta["model"]["checkpoint"], "random": meta["random_label_model"]["checkpoint"]}
    data = load_dataset(DataConfig(name="mnist", root=args.root))
    x = data.eval_images[: args.n_images].float()

    maps = {}
    for labels, path in ckpts.items():
        model = MnistCNN(in_channels=x.shape[1], num_classes=10)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
        acc = float((model(data.eval_images.float()).argmax(1) == data.eval_labels).float().mean())
        print(f"{labels}-label model {Path(path).name}: held-out accuracy {acc:.4f}")
        maps[labels] = gradcams(model, x)

    rng = np.random.default_rng(0)
    rows = []
    for name in TENSORS:
        a, b = (abs_norm(maps[k][name]["relu"], args.percentile) for k in ("true", "random"))
        per = {k: [] for k in ("spearman", "tied", "both_tied", "zero_both", "untied", "random_ties", "no_relu",
                               "ones", "ones_tied", "ones_clipped", "ones_tf1")}
        const = {k: int(sum(np.all(m == m[0]) for m in abs_norm(maps[k][name]["relu"]))) for k in maps}
        for i in range(len(x)):
            ta, tb = tied_mask(a[i]), tied_mask(b[i])
            both = ta & tb
            per["spearman"].append(rho(a[i], b[i]))
            per["tied"].append((ta.mean() + tb.mean()) / 2)
            per["both_tied"].append(both.mean())
            per["zero_both"].append(((a[i] == 0) & (b[i] == 0)).mean())
            per["untied"].append(rho(a[i][~both], b[i][~both]))
            per["random_ties"].append(random_tie_rho(a[i], b[i], rng) if not np.isnan(per["spearman"][-1])
                                      else np.nan)
            na, nb = (maps[k][name]["no_relu"][i].ravel() for k in ("true", "random"))
            per["no_relu"].append(rho(na, nb))
            oa, ob = (abs_norm(maps[k][name]["ones"][i : i + 1], args.percentile)[0] for k in ("true", "random"))
            per["ones"].append(rho(oa, ob))
            per["ones_tied"].append((tied_mask(oa).mean() + tied_mask(ob).mean()) / 2)
            per["ones_clipped"].append(np.mean([(maps[k][name]["no_relu"][i] < -1).mean() for k in ("true", "random")]))
            fa, fb = (abs_norm(maps[k][name]["ones_tf1"][i : i + 1], args.percentile)[0] for k in ("true", "random"))
            per["ones_tf1"].append(rho(fa, fb))
        rows.append({"tensor": name, "grid": SIDES[name], "n_scored": int(np.isfinite(per["spearman"]).sum()),
                     "constant_true": const["true"], "constant_random": const["random"],
                     **{k: float(np.nanmean(v)) for k, v in per.items()},
                     "spearman_sd": float(np.nanstd(per["spearman"])),
                     "n_scored_ones": int(np.isfinite(per["ones"]).sum())})

    cols = ["n_scored", "constant_true", "constant_random", "spearman", "spearman_sd", "tied", "both_tied",
            "zero_both", "untied", "random_ties", "no_relu", "ones", "ones_tied", "ones_clipped", "n_scored_ones", "ones_tf1"]
    print("| tensor | grid | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 2))
    for r in rows:
        cells = [str(r[k]) if isinstance(r[k], int) else f"{r[k]:.3f}" for k in cols]
        print(f"| {r['tensor']} | {r['grid']}x{r['grid']} | " + " | ".join(cells) + " |")
    out = Path(args.out) if args.out else run / "gradcam_tensors.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
