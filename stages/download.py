"""download@<dataset>: fetch and unpack a dataset into data/raw/<dataset>/ (see tumorbench.download)."""

import sys

from tumorbench.download import download
from tumorbench.errors import run_stage
from tumorbench.params import check_dataset_arg, load_params
from tumorbench.variants import DOWNLOADS, raw_dir


def main(dataset: str) -> None:
    params = load_params()
    check_dataset_arg(params, dataset)
    manifest = download(
        dataset,
        params["data"][dataset],
        params["data"]["synthetic"],
        out_dir=raw_dir(dataset),
        cache_dir=DOWNLOADS,
    )
    files = manifest["files"]
    print(
        f"download@{dataset}: {manifest['source']}: {len(files)} files, "
        f"{sum(f['size'] for f in files)} bytes, archive sha256 {manifest['archive_sha256'] or '-'}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/download.py <dataset>   (one of params.yaml datasets)")
    run_stage(main)
