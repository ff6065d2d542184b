"""What each method costs: model passes per image per stage, and seconds per image per stage on the default model.

    python experiments/costs.py                    # every registered method at its default settings, 8 images
    python experiments/costs.py --methods occlusion,lime --n-images 16

The model is the default run's MNIST CNN (random weights: the time does not depend on them) on 28 x 28 inputs;
one stage is explained, as in a run whose stages go one at a time. Items are what the engine counts (one forward
pass with its backward for a gradient item, a forward pass alone for a perturbation item); methods that compute
their maps themselves are counted by a forward hook on the model (every input row it sees; each has its backward).
The best of ``--repeats`` calls counts, after a warm-up. Prints a Markdown table (docs/methods.md has one).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.engine import Engine  # noqa: E402
from benchmark.methods import METHODS, ExternalMethod, build_method  # noqa: E402
from benchmark.models.cnn import MnistCNN  # noqa: E402

SKIP = ("captum", "custom")  # adapters: their cost is the wrapped method's


def forward_rows(model: torch.nn.Module, run) -> int:
    """Input rows the model's forward sees during ``run()``."""
    seen = [0]
    handle = model.register_forward_pre_hook(lambda _m, args: seen.__setitem__(0, seen[0] + len(args[0])))
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


def measure(name: str, x: torch.Tensor, repeats: int) -> dict:
    torch.manual_seed(0)
    model = MnistCNN().eval()
    target = model(x).argmax(1)
    ids = torch.arange(len(x))
    method = build_method(name)
    engine = Engine(model, [method], target_layer=model.conv2)
    if isinstance(method, ExternalMethod):
        items = forward_rows(model, lambda: engine.explain(x, target, ids)) / len(x)
        kind = "forward + backward, its own passes"
    else:
        items = engine.items_per_image(x, ids)
        kind = "forward only" if all(p.forward_only for p in engine.primitives) else "forward + backward"
        if not method.uses_model:
            kind, items = "none (control)", 0
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        engine.explain(x, target, ids)
        best = min(best, time.perf_counter() - start)
    return {"method": name, "passes": items, "kind": kind, "ms_per_image": 1000 * best / len(x)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", type=lambda s: s.split(","), default=None)
    ap.add_argument("--n-images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="the best of this many calls counts")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sklearn.datasets import load_digits

    from benchmark.data.digits import digits_as_mnist

    x = digits_as_mnist(load_digits().images[: args.n_images])
    names = args.methods or [n for n in METHODS if n not in SKIP]
    measure("gradient", x, 2)  # warm-up: the first passes of a process pay for kernel selection
    print(f"| method | model passes per image per stage | kind | ms per image per stage ({args.n_images} images, "
          f"{args.threads} threads) |")
    print("|---|--:|---|--:|")
    for name in names:
        row = measure(name, x, args.repeats)
        print(f"| {row['method']} | {row['passes']:.0f} | {row['kind']} | {row['ms_per_image']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
