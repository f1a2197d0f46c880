"""download@<dataset>: fetch and unpack a dataset into data/raw/<dataset>/ (see tumorbench.download)."""

import sys
from pathlib import Path

from tumorbench import DATASETS
from tumorbench.download import DownloadError, download
from tumorbench.params import ParamsError, load_params


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in DATASETS:
        print(f"usage: python stages/download.py {{{'|'.join(DATASETS)}}}", file=sys.stderr)
        return 2
    dataset = argv[0]
    try:
        params = load_params()
        manifest = download(dataset, params["data"][dataset], params["data"]["synthetic"],
                            out_dir=Path("data/raw") / dataset, cache_dir=Path(".cache/downloads"))
    except (DownloadError, ParamsError) as error:
        print(f"download@{dataset}: {error}", file=sys.stderr)
        return 1
    files = manifest["files"]
    print(f"download@{dataset}: {manifest['source']}: {len(files)} files, "
          f"{sum(f['size'] for f in files)} bytes, archive sha256 {manifest['archive_sha256'] or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
