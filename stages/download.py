"""download@<dataset>: fetch and unpack a dataset into data/raw/<dataset>/ (see tumorbench.download)."""

import sys
from pathlib import Path

from tumorbench import DATASETS
from tumorbench.download import download
from tumorbench.errors import run_stage
from tumorbench.params import load_params


def main(dataset: str) -> None:
    params = load_params()
    manifest = download(
        dataset,
        params["data"][dataset],
        params["data"]["synthetic"],
        out_dir=Path("data/raw") / dataset,
        cache_dir=Path(".cache/downloads"),
    )
    files = manifest["files"]
    print(
        f"download@{dataset}: {manifest['source']}: {len(files)} files, "
        f"{sum(f['size'] for f in files)} bytes, archive sha256 {manifest['archive_sha256'] or '-'}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in DATASETS:
        sys.exit(f"usage: python stages/download.py <dataset>, dataset one of {list(DATASETS)}")
    run_stage(main)
