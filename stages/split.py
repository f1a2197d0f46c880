"""split@<dataset>: python stages/split.py <dataset>

Reads data/prepared/<dataset>/ and writes data/splits/<dataset>.json.
"""

import sys

from tumorbench.errors import run_stage
from tumorbench.params import check_dataset_arg, load_params
from tumorbench.splits import make_split, write_split
from tumorbench.variants import prepared_dir, split_path


def main(dataset: str) -> None:
    params = load_params()
    check_dataset_arg(params, dataset)
    prepared = prepared_dir(dataset)
    out = split_path(dataset)
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
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/split.py <dataset>   (one of params.yaml datasets)")
    run_stage(main)
