"""download@<dataset>: fetch and unpack a dataset into data/raw/<dataset>/ (see tumorbench.data.download)."""

import sys

from tumorbench.core.errors import run_stage
from tumorbench.core.params import check_dataset_arg, load_params
from tumorbench.core.variants import DOWNLOADS, raw_dir
from tumorbench.data.download import download


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
