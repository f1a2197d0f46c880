"""Make .gpu/: what bench/gpu.sh needs on a GPU machine that has torch but none of
this project's other packages, within the device's 64 MiB transfer limit:

- .gpu/br35h224/{yes,no}/*.jpg: Br35H decoded as the prepare stage does, resized
  to 224 px, re-encoded as JPEG quality 90 (about 48 MB; the originals are 73 MB);
- .gpu/efficientnet_pytorch-0.7.1-py3-none-any.whl (the package ships as source only).

    python bench/gpu_pack.py [--data ../shared/data/br35h] [--out .gpu]

Then, on the GPU machine (carry .gpu):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/efficientnet_pytorch-0.7.1-py3-none-any.whl
    PYTHONPATH=/tmp/site:$PWD/src bash bench/gpu.sh .gpu/br35h224 --out $OUT
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from tumorbench.core.fileio import atomic_open
from tumorbench.data.readers import UnreadableImage, decode_image, read_samples

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "br35h")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args(argv)

    records, class_names, reader = read_samples(args.data)
    if reader != "br35h":
        sys.exit(
            f"{args.data} is not a Br35H folder (found the {reader} layout): pass --data <folder with yes/ and no/>"
        )
    images = args.out / f"br35h{args.size}"
    written = 0
    for record in tqdm(records, desc="pack", unit="image"):
        target = images / class_names[record["label"]] / Path(record["source_path"]).name
        if target.exists():
            written += 1
            continue  # a rerun after an interruption continues where it stopped
        try:
            pixels = decode_image(args.data / record["source_path"], args.size)
        except UnreadableImage as error:
            print(f"skipping {record['source_path']}: {error}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(target, "wb") as f:
            Image.fromarray(pixels.transpose(1, 2, 0)).save(f, format="JPEG", quality=args.quality)
        written += 1
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "efficientnet-pytorch==0.7.1", "-w", str(args.out)],
        check=True,
    )
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{written} images in {images}; {args.out} holds {size / 2**20:.1f} MiB (the device carries 64 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
