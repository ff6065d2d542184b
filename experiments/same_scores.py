"""Whether two results roots hold the same scores, value for value and bit for bit.

    python experiments/same_scores.py ROOT_A ROOT_B

Runs are paired by what they ran (test, model, data, profile, seed), not by run id, so a root written before a
change of the run-id scheme pairs with one written after it. Within a pair, every score row is matched on (stage,
layer, method, metric, image, target) and its value compared as 64 bits (NaN equal to NaN), with its nan_reason
and tie_fraction. Prints one line per pair and exits 1 when any pair differs or has no partner.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

RUN = ["test", "model", "data", "profile", "seed"]
ROW = ["stage", "layer", "method", "metric", "image", "target"]


def runs(root: Path) -> dict[tuple, pd.DataFrame]:
    """Every finished run's scores under ``root`` (a ``scores.parquet`` beside its ``meta.json``), by ``RUN``."""
    out: dict[tuple, pd.DataFrame] = {}
    for path in sorted(Path(root).glob("*/*/scores.parquet")):
        if not (path.parent / "meta.json").exists() or path.parent.name.startswith("."):
            continue
        df = pd.read_parquet(path)
        key = tuple(df[c].iloc[0] for c in RUN)
        if key in out:
            raise SystemExit(f"{root}: two runs of {dict(zip(RUN, key))}; compare roots with one run each")
        out[key] = df
    return out


def _same(x: pd.Series, y: pd.Series) -> np.ndarray:
    if x.dtype.kind == "f" and y.dtype.kind == "f":
        a, b = x.to_numpy(np.float64), y.to_numpy(np.float64)
        return (a.view(np.int64) == b.view(np.int64)) | (np.isnan(a) & np.isnan(b))
    return ((x.isna() & y.isna()) | (x.astype(object) == y.astype(object))).fillna(False).to_numpy(bool)


def compare(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """'' when ``a`` and ``b`` hold the same rows and values bit for bit, else what differs first."""
    keys = [c for c in ROW if c in a.columns and c in b.columns]
    m = a.merge(b, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    if (m["_merge"] != "both").any():
        return f"{int((m['_merge'] != 'both').sum())} rows in only one root"
    for col in ("value", "nan_reason", "tie_fraction"):
        if f"{col}_a" not in m:
            continue
        same = _same(m[f"{col}_a"], m[f"{col}_b"])
        if not same.all():
            r = m[~same].iloc[0]
            where = ", ".join(f"{k}={r[k]}" for k in keys)
            return f"{int((~same).sum())} of {len(m)} {col}s differ, first at {where}: {r[col + '_a']!r} != {r[col + '_b']!r}"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root_a", type=Path)
    parser.add_argument("root_b", type=Path)
    args = parser.parse_args(argv)
    for root in (args.root_a, args.root_b):
        if not root.is_dir():
            parser.error(f"{root} is not a folder; give two results roots (results_root= of the runs)")
    a, b = runs(args.root_a), runs(args.root_b)
    if not a and not b:
        print(f"no finished runs under {args.root_a} or {args.root_b}")
        return 1
    bad = 0
    for key in sorted(set(a) | set(b), key=str):
        name = " ".join(f"{k}={v}" for k, v in zip(RUN, key))
        if key not in a or key not in b:
            print(f"{name}: only under {args.root_a if key in a else args.root_b}")
            bad += 1
            continue
        why = compare(a[key], b[key])
        print(f"{name}: {why or f'{len(a[key])} values bitwise equal'}")
        bad += bool(why)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
