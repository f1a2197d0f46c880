"""split@<dataset>: python stages/split.py <dataset>

Reads data/prepared/<dataset>/ and writes data/splits/<dataset>.json.
"""

import sys
from pathlib import Path

from tumorbench import DATASETS
from tumorbench.errors import run_stage
from tumorbench.params import load_params
from tumorbench.splits import make_split, write_split


def main(dataset: str) -> None:
    params = load_params()
    prepared = Path("data/prepared") / dataset
    out = Path("data/splits") / f"{dataset}.json"
    split = make_split(
        prepared / "index.csv",
        prepared / "images.npy",
        dataset=dataset,
        val_fraction=params["split"]["val_fraction"],
        seed=params["split"]["seed"],
        group_by=params["split"]["group_by"],
    )
    write_split(split, out)
    for side in ("train", "val"):
        counts = ", ".join(f"{name} {n}" for name, n in split["counts"][side].items())
        print(f"split@{dataset}: {side} {len(split[side])} ({counts})")
    print(f"-> {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in DATASETS:
        sys.exit(f"usage: python stages/split.py <dataset>, dataset one of {list(DATASETS)}")
    run_stage(main)
