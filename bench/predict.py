"""tumorbench predict's speed against the evaluate stage's, on the same images.

    python bench/predict.py [--data ../shared/data/br35h] [--model resnet18] [--size 224]
    python bench/predict.py --scale [--size 64]


Both apply one checkpoint (an untrained one: speed does not depend on the weights) to the 3,000
labelled Br35H images. The evaluate stage predicts from the prepared arrays (decoded and resized once,
by prepare); `tumorbench predict` reads the original files, decodes them in parallel and batches the
model. The two run alternately, --rounds times each; prints the median rate of each in images/s, the
ratio, and how long prepare's decoding took for comparison.

--scale: `tumorbench predict`'s memory at 3,000 and at 30,000 inputs (folders of symbolic links to the
Br35H images, ten links to each for 30,000), each in a fresh process: the peak resident memory of that
process (it holds the model and writes the CSV; the decoding workers it forks stay small) and images/s,
with the ratio of the peaks. Streaming keeps it near 1 (target <= 1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tumorbench.data.prepare import prepare
from tumorbench.models.architectures import build_model
from tumorbench.models.inference import predict, trained_model
from tumorbench.models.runtime import configure_runtime, pick_device
from tumorbench.predict import run

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "br35h"


def untrained_checkpoint(model_name: str, size: int, path: Path) -> Path:
    """A checkpoint as the train stage writes one, never trained: speed and memory do not depend on the weights."""
    torch.manual_seed(0)
    model, _ = build_model(model_name, 2, "scratch", size)
    checkpoint = {
        "model": model.state_dict(),
        "model_name": model_name,
        "init": "scratch",
        "epoch": 0,
        "class_names": ["no", "yes"],
        "image_size": size,
        "normalize": {"mean": [0.0] * 3, "std": [1.0] * 3},
    }
    torch.save(checkpoint, path)
    return path


def linked_folder(data: Path, dest: Path, copies: int) -> Path:
    """dest/copy<k>/{yes,no}/<file>: `copies` symbolic links to each labelled image."""
    for k in range(copies):
        for label in ("yes", "no"):
            folder = dest / f"copy{k}" / label
            folder.mkdir(parents=True)
            for name in sorted(os.listdir(data / label)):
                (folder / name).symlink_to((data / label / name).resolve())
    return dest


MEASURE = """
import json, resource, sys, time
from pathlib import Path
from tumorbench.predict import run
began = time.perf_counter()
status = run(Path(sys.argv[1]), [Path(sys.argv[2])], Path(sys.argv[3]), None)
seconds = time.perf_counter() - began
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"status": status, "seconds": seconds, "peak_kib": peak_kib}))
"""


def scale(args, work: Path) -> None:
    model = untrained_checkpoint(args.model, args.size, work / "model.pt")
    found = {}
    for copies in (1, 10):
        folder = linked_folder(args.data, work / f"links{copies}", copies)
        out = work / f"predictions{copies}.csv"
        result = subprocess.run(
            [sys.executable, "-c", MEASURE, str(model), str(folder), str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(result.stdout.splitlines()[-1])
        rows = out.read_bytes().count(b"\n") - 1
        assert measured["status"] == 0 and rows == copies * 3000, (rows, result.stderr[-2000:])
        found[rows] = measured
        print(
            f"{rows:>6} inputs: peak RSS {measured['peak_kib'] / 1024:.0f} MiB, "
            f"{rows / measured['seconds']:.0f} images/s ({measured['seconds']:.1f} s)",
            flush=True,
        )
    small, large = found[3000], found[30000]
    print(
        f"{args.model} at {args.size} px on the CPU; peak RSS ratio 30,000/3,000: "
        f"{large['peak_kib'] / small['peak_kib']:.2f} (target <= 1.2)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=None, help="image size (default: 224, or 64 with --scale)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", action="store_true", help="peak memory at 3,000 and 30,000 inputs")
    args = parser.parse_args()
    args.size = args.size or (64 if args.scale else 224)
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    if args.scale:
        scale(args, work)
        return
    model_path = untrained_checkpoint(args.model, args.size, work / "model.pt")
    checkpoint = torch.load(model_path, weights_only=True)
    device = pick_device("auto")
    configure_runtime(device)

    began = time.perf_counter()
    prepare(args.data, work / "prepared", args.size, 0.01, "br35h")
    decoding = time.perf_counter() - began
    images = torch.from_numpy(np.load(work / "prepared" / "images.npy")).to(device)
    network = trained_model(checkpoint, device, "auto")
    predict(network, images[:256], [0.0] * 3, [1.0] * 3)  # warm-up
    folders = [args.data / "yes", args.data / "no"]
    evaluate_rates, predict_rates = [], []
    for _ in range(args.rounds):  # alternately, so that both see the same machine
        began = time.perf_counter()
        predict(network, images, [0.0] * 3, [1.0] * 3)
        evaluate_rates.append(len(images) / (time.perf_counter() - began))
        began = time.perf_counter()
        status = run(model_path, folders, work / "predictions.csv", None)
        predict_rates.append(len(images) / (time.perf_counter() - began))
        assert status == 0
    evaluate_rate, predict_rate = statistics.median(evaluate_rates), statistics.median(predict_rates)
    print(f"{len(images)} images, {args.model} at {args.size} px on {device.type}")
    print(
        f"evaluate stage (prepared arrays): {evaluate_rate:.0f} images/s, median of {args.rounds} "
        f"(prepare decoded them first, in {decoding:.1f} s: {len(images) / decoding:.0f} images/s)"
    )
    print(
        f"tumorbench predict (original files, decoded on the fly): {predict_rate:.0f} images/s, median of "
        f"{args.rounds}; "
        f"ratio predict/evaluate {predict_rate / evaluate_rate:.2f}"
    )


if __name__ == "__main__":
    main()
