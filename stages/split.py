"""split@<dataset>: python stages/split.py <dataset> [grouped|cv]

Reads data/prepared/<dataset>/ and writes data/splits/<dataset>.json, the paper's split (split.group_by).
With `grouped` (stage split_grouped@<dataset>): data/splits/<dataset>-grouped.json, whole groups of
grouped.group_by on one side, the duplicate groups read from reports/duplicates/<dataset>.json.
With `cv` (stage split_cv@<dataset>): data/splits/<dataset>-cv.json, the cv.folds folds (the author's
where the dataset has cvind.mat, else stratified folds of grouped.group_by's groups).
"""

import json
import sys

from tumorbench.core.errors import run_stage
from tumorbench.core.params import ParamsError, check_dataset_arg, grouped_by, load_params
from tumorbench.core.variants import PROTOCOLS, duplicates_report, prepared_dir, split_path, stage_name
from tumorbench.data.prepared import read_index
from tumorbench.data.splits import leaks, make_cv_folds, make_split, write_split


def main(dataset: str, protocol: str = "paper") -> None:
    params = load_params()
    check_dataset_arg(params, dataset)
    if protocol not in PROTOCOLS:
        raise ParamsError(f"split protocol {protocol!r}: one of {list(PROTOCOLS)}")
    prepared = prepared_dir(dataset)
    out = split_path(dataset, protocol)
    if protocol == "cv":
        return write_cv_folds(params, dataset)
    group_by, duplicates = params["split"]["group_by"], None
    if protocol == "grouped":
        group_by = grouped_by(params, dataset)
        duplicates = json.loads(duplicates_report(dataset).read_text())
    split = make_split(
        prepared / "index.csv",
        prepared / "images.npy",
        dataset=dataset,
        val_fraction=params["split"]["val_fraction"],
        seed=params["split"]["seed"],
        group_by=group_by,
        duplicates=duplicates if "duplicates" in group_by else None,
    )
    if protocol == "grouped":  # what the paper's split leaks, for the report
        paper = json.loads(split_path(dataset).read_text())
        split["paper_split_leaks"] = leaks(paper, read_index(prepared / "index.csv"), duplicates["near"])
    write_split(split, out)
    name = stage_name("split", protocol, dataset)
    for side in ("train", "val"):
        counts = ", ".join(f"{label} {n}" for label, n in split["counts"][side].items())
        print(f"{name}: {side} {len(split[side])} ({counts})")
    if "groups" in split:
        groups = split["groups"]
        print(
            f"{name}: {split['group_by_applied']}: {groups['count']} groups of 2 or more (largest "
            f"{groups['largest']}), {groups['crossing']} on both sides"
        )
    print(f"-> {out}")


def write_cv_folds(params: dict, dataset: str) -> None:
    prepared, out = prepared_dir(dataset), split_path(dataset, "cv")
    cv = make_cv_folds(
        prepared / "index.csv",
        prepared / "images.npy",
        folds=len(params["cv"]["folds"]),
        seed=params["cv"]["seed"],
        group_by=grouped_by(params, dataset),
        dataset=dataset,
        duplicates=json.loads(duplicates_report(dataset).read_text()),
    )
    write_split(cv, out)
    name = stage_name("split", "cv", dataset)
    for k, counts in enumerate(cv["counts"], 1):
        print(f"{name}: fold {k}: {len(cv['folds'][k - 1])} ({', '.join(f'{c} {n}' for c, n in counts.items())})")
    groups = cv["groups"]
    print(
        f"{name}: {cv['source']}, {cv['group_by_applied']}: {groups['count']} groups, {groups['crossing']} in 2 folds"
    )
    print(f"-> {out}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python stages/split.py <dataset> [grouped|cv]   (dataset: one of params.yaml datasets)")
    run_stage(main)
