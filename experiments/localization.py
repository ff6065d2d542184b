"""Localization of a run's saved maps on a task with a known ground truth (``data=planted``).

    python experiments/model_randomization.py data=planted n_saved_images=32      # the cascade, maps saved
    python experiments/localization.py results/model_randomization/<run_id>      # mass, pointing game, AUC

Rebuilds the run's data from its config.yaml, takes the planted squares of the saved images
(``Dataset.eval_regions``), scores every method's ABS maps of every stage (``benchmark.localization``), prints
the mean per method and stage and writes ``localization.csv`` into the run folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.config import DataConfig  # noqa: E402
from benchmark.data import load_dataset  # noqa: E402
from benchmark.localization import localization_table  # noqa: E402
from benchmark.store import atomic_write  # noqa: E402


def run_localization(run_dir: Path):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    known = {k: v for k, v in cfg["data"].items() if k in DataConfig.__dataclass_fields__}
    data = load_dataset(DataConfig(**known), None, None)
    if data.eval_regions is None:
        raise ValueError(f"{run_dir}: data {data.name!r} has no known regions; run with data=planted")
    with np.load(run_dir / "maps.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    table = localization_table(arrays, data.eval_regions[arrays["image_ids"]].numpy())
    atomic_write(run_dir / "localization.csv", lambda p: table.to_csv(p, index=False))
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args()
    table = run_localization(args.run_dir)
    summary = table.groupby(["method", "score", "stage", "layer"], sort=False)["value"].mean().unstack(["stage", "layer"])
    print(summary.round(3).to_string())
    print(f"\nwrote {args.run_dir / 'localization.csv'}")


if __name__ == "__main__":
    main()
