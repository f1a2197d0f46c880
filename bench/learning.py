"""How fast one model learns the embedded default's generated data: validation accuracy per epoch.

    python bench/learning.py --model efficientnet-b0 --dataset figshare [--bn-momentum 0.01]
                             [--epochs 12] [--per-class 160 240 200] [--size 64]

Generates the dataset as params.yaml's data.synthetic says (--per-class overrides the sizes), prepares
it at --size px, splits it as the split stage does, and runs Algorithm 1 with params.yaml's train
settings; prints each epoch's validation accuracy and the accuracy of the kept checkpoint (the epoch
with the lowest validation loss), as the evaluate stage would report it. This is how the levers of
the embedded default (docs/PERFORMANCE.md) were chosen.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tumorbench.core.params import load_params
from tumorbench.data.download import download
from tumorbench.data.prepare import prepare
from tumorbench.data.prepared import read_index
from tumorbench.data.splits import make_split
from tumorbench.models.architectures import build_model
from tumorbench.models.training import TrainConfig, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet-b0")
    parser.add_argument("--dataset", default="br35h", choices=["br35h", "figshare"])
    parser.add_argument("--bn-momentum", type=float, help="EfficientNet's (default: params.yaml's)")
    parser.add_argument("--epochs", type=int, help="default: params.yaml's train.epochs")
    parser.add_argument("--per-class", type=int, nargs="+", help="images per class (default: params.yaml's)")
    parser.add_argument("--size", type=int, help="default: params.yaml's data.image_size")
    args = parser.parse_args()

    params = load_params()
    synthetic = dict(params["data"]["synthetic"])
    if args.per_class:
        key = "br35h_per_class" if args.dataset == "br35h" else "figshare_per_class"
        synthetic[key] = args.per_class[0] if args.dataset == "br35h" else args.per_class
    size = args.size or params["data"]["image_size"]
    work = Path(tempfile.mkdtemp(prefix="learning-"))
    download(args.dataset, {"source": "synthetic"}, synthetic, out_dir=work / "raw", cache_dir=work / "cache")
    prepare(work / "raw", work / "prepared", size, 0.01, args.dataset)
    split = params["split"]
    split = make_split(
        work / "prepared/index.csv", work / "prepared/images.npy", split["val_fraction"], split["seed"], "none"
    )
    rows = read_index(work / "prepared/index.csv")
    images = np.load(work / "prepared/images.npy")
    labels = np.array([int(r["label"]) for r in rows])
    position = {r["sample_id"]: i for i, r in enumerate(rows)}
    train = np.array([position[s] for s in split["train"]])
    val = np.array([position[s] for s in split["val"]])

    cfg = TrainConfig.from_params(params, "scratch")
    cfg.epochs = args.epochs or cfg.epochs
    torch.manual_seed(cfg.seed)
    momentum = args.bn_momentum or params["efficientnet"]["bn_momentum"]
    model, _ = build_model(args.model, int(labels.max()) + 1, "scratch", size, efficientnet_bn_momentum=momentum)
    began = time.time()
    summary = fit(
        model,
        images[train],
        labels[train],
        images[val],
        labels[val],
        cfg,
        checkpoint_path=work / "best.pt",
        live_dir=None,
        fingerprint="learning",
        checkpoint_meta={},
        resume_dir=work / "resume",
        progress=False,
    )
    accuracies = [round(row["val_accuracy"], 3) for row in summary["history"]]
    kept = summary["history"][summary["best_epoch"]]["val_accuracy"]
    print(
        f"{args.model} on generated {args.dataset} ({len(train)} train, {len(val)} val, {size} px), "
        f"EfficientNet BN momentum {momentum}: validation accuracy per epoch {accuracies}"
    )
    print(f"kept checkpoint: epoch {summary['best_epoch']}, accuracy {kept:.4f} ({time.time() - began:.0f} s)")


if __name__ == "__main__":
    main()
