"""tumorbench predict's speed against the evaluate stage's, on the same images.

    python bench/predict.py [--data ../shared/data/br35h] [--model resnet18] [--size 224]

Both apply one checkpoint (an untrained one: speed does not depend on the weights) to the 3,000
labelled Br35H images. The evaluate stage predicts from the prepared arrays (decoded and resized once,
by prepare); `tumorbench predict` reads the original files, decodes them in parallel and batches the
model. The two run alternately, --rounds times each; prints the median rate of each in images/s, the
ratio, and how long prepare's decoding took for comparison.
"""

from __future__ import annotations

import argparse
import statistics
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    torch.manual_seed(0)
    model, _ = build_model(args.model, 2, "scratch", args.size)
    checkpoint = {
        "model": model.state_dict(),
        "model_name": args.model,
        "init": "scratch",
        "epoch": 0,
        "class_names": ["no", "yes"],
        "image_size": args.size,
        "normalize": {"mean": [0.0] * 3, "std": [1.0] * 3},
    }
    torch.save(checkpoint, work / "model.pt")
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
        status = run(work / "model.pt", folders, work / "predictions.csv", None)
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
