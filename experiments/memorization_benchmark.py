"""Time to reach the memorization gate: random-label training of the paper's models.

    python experiments/memorization_benchmark.py                       # digits, CNN and MLP
    python experiments/memorization_benchmark.py --data mnist --root ../shared/data

Prints a table and one JSON line: per model, epochs and seconds until the training accuracy on
the permuted labels reached the gate (or the accuracy reached when max_epochs ran out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmark.config import DataConfig, TrainingConfig  # noqa: E402
from benchmark.data import load_dataset  # noqa: E402
from benchmark.models import get_architecture  # noqa: E402
from benchmark.training import MemorizationError, train_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--root", default=None)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--lr", type=float, default=TrainingConfig.random_lr or 3e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--gate", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = load_dataset(DataConfig(name=args.data, root=args.root, n_train=args.n_train))
    training = TrainingConfig(random_lr=args.lr, random_batch_size=args.batch_size, max_epochs=args.max_epochs,
                              memorization_gate=args.gate)
    rows = []
    for name in args.models.split(","):
        start = time.time()
        try:
            t = train_model(get_architecture(name), data, training, args.seed, torch.device("cpu"), None,
                            progress=False, labels="random")
            rows.append({"model": name, "data": args.data, "n_train": len(data.train_images), "reached": True,
                         "epochs": t.epochs, "train_accuracy": round(t.train_accuracy, 4),
                         "eval_accuracy": round(t.eval_accuracy, 4), "seconds": round(time.time() - start, 1)})
        except MemorizationError as err:
            rows.append({"model": name, "data": args.data, "n_train": len(data.train_images), "reached": False,
                         "epochs": args.max_epochs, "message": str(err), "seconds": round(time.time() - start, 1)})
        print(" | ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    print(json.dumps({"lr": args.lr, "batch_size": args.batch_size, "gate": args.gate,
                      "threads": torch.get_num_threads(), "results": rows}))


if __name__ == "__main__":
    main()
