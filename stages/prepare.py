"""prepare@<dataset>: python stages/prepare.py <dataset>

Decodes data/raw/<dataset>/ into data/prepared/<dataset>/ (images.npy, index.csv, report.json).
"""

import sys
import time

from tumorbench.core.errors import run_stage
from tumorbench.core.params import check_dataset_arg, load_params
from tumorbench.core.variants import prepared_dir, raw_dir
from tumorbench.data.prepare import prepare


def main(dataset: str) -> None:
    params = load_params()
    check_dataset_arg(params, dataset)
    start = time.time()
    report = prepare(
        raw_dir(dataset),
        prepared_dir(dataset),
        image_size=params["data"]["image_size"],
        max_unreadable=params["data"]["max_unreadable"],
        dataset_name=dataset,
    )
    counts = ", ".join(f"{name} {n}" for name, n in report["counts"].items())
    patients = f"{report['n_patients']} patients" if report["n_patients"] else "no patient ids"
    groups = len(report["duplicates"])
    print(
        f"prepare@{dataset}: {report['n_samples']} samples ({counts}) via the {report['reader']} reader, "
        f"{patients}, {len(report['unreadable'])} unreadable, "
        f"{groups} group{'s' * (groups != 1)} of byte-identical files, {time.time() - start:.1f} s "
        f"-> {prepared_dir(dataset)}"
    )
    for item in report["unreadable"][:10]:
        print(f"  unreadable {item['path']}: {item['reason']}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/prepare.py <dataset>   (one of params.yaml datasets)")
    run_stage(main)
