"""duplicates@<dataset>: python stages/duplicates.py <dataset>

Hashes every prepared sample's original file (data/raw/<dataset>/) and groups exact and near
duplicates: reports/duplicates/<dataset>.json and .png (the largest groups), data/hashes/<dataset>.csv.
"""

import sys

from tumorbench.core.errors import run_stage
from tumorbench.core.fileio import atomic_open, atomic_write_json, atomic_write_text, csv_text
from tumorbench.core.parallel import parallel_map
from tumorbench.core.params import check_dataset_arg, load_params
from tumorbench.core.variants import duplicates_report, hashes_path, prepared_dir, raw_dir
from tumorbench.data.duplicates import HASH_COLUMNS, audit, contact_sheet, hash_rows, image_hashes, loader_of
from tumorbench.data.prepared import DataError, read_index


def main(dataset: str) -> None:
    params = load_params()
    check_dataset_arg(params, dataset)
    settings = params["duplicates"]
    index = read_index(prepared_dir(dataset) / "index.csv")
    raw = raw_dir(dataset)
    jobs = [(str(raw / row["source_path"]), loader_of(row["source_path"])) for row in index]
    hashes = list(parallel_map(image_hashes, jobs, f"hash {dataset}"))
    broken = [(row["source_path"], found["error"]) for row, found in zip(index, hashes) if found["error"]]
    if broken:
        raise DataError(f"{raw}: files prepare decoded no longer decode ({broken[:3]}); rerun `dvc repro`")
    rows = hash_rows([row["sample_id"] for row in index], hashes)
    result = {"dataset": dataset, **audit(index, rows, settings["threshold"], settings["flips"])}

    atomic_write_text(hashes_path(dataset), csv_text(rows, HASH_COLUMNS))
    report = duplicates_report(dataset)
    title = (
        f"{dataset}: the largest of {len(result['near'])} duplicate groups "
        f"(pHash distance <= {settings['threshold']}{', rotations and flips' if settings['flips'] else ''})"
    )
    with atomic_open(report.with_suffix(".png"), "wb") as f:
        contact_sheet(result["near"], index, raw, title).save(f, "PNG")
    atomic_write_json(report, result)  # last: it marks a complete run
    print(
        f"duplicates@{dataset}: {result['in_exact_groups']} images in {len(result['exact'])} exact groups, "
        f"{result['in_near_groups']} of {result['n_images']} in {len(result['near'])} groups with near copies "
        f"(largest {result['largest_group']}), {result['label_conflicts']} groups with two classes -> {report}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/duplicates.py <dataset>   (one of params.yaml datasets)")
    run_stage(main)
