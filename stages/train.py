"""train@<dataset>-<model>-<init>: python stages/train.py <dataset> <model> <init>"""

import sys
import time

import torch

from tumorbench.core.errors import run_stage
from tumorbench.core.fileio import sha256_bytes
from tumorbench.core.params import load_params
from tumorbench.core.variants import Variant, input_hashes, train_params_hash
from tumorbench.data.prepared import load_split_data
from tumorbench.models.architectures import build_model
from tumorbench.models.training import TrainConfig, fit


def main(dataset: str, model_name: str, init: str, protocol: str = "paper") -> None:
    params = load_params()
    variant = Variant(dataset, model_name, init, protocol)
    cfg = TrainConfig.from_params(params, init)
    data = load_split_data(dataset, protocol=protocol)

    torch.manual_seed(cfg.seed)
    model, weights = build_model(
        model_name,
        len(data.class_names),
        init,
        params["data"]["image_size"],
        efficientnet_bn_momentum=params["efficientnet"]["bn_momentum"],
    )
    provenance = {
        **input_hashes(variant),
        "params_hash": train_params_hash(params, init),
        "weights_md5": weights["md5"] if weights else None,
    }
    fingerprint = sha256_bytes(repr(sorted(provenance.items())).encode() + variant.name.encode())
    meta = {
        "dataset": dataset,
        "model_name": model_name,
        "init": init,
        "class_names": data.class_names,
        "image_size": params["data"]["image_size"],
        "normalize": params["normalize"][init],
        "provenance": provenance,
    }

    start = time.time()
    summary = fit(
        model,
        data.train_images,
        data.train_labels,
        data.val_images,
        data.val_labels,
        cfg,
        checkpoint_path=variant.checkpoint,
        live_dir=variant.live_dir,
        fingerprint=fingerprint,
        checkpoint_meta=meta,
        resume_dir=variant.resume_dir,
    )
    print(
        f"{variant.name}: best epoch {summary['best_epoch']} val loss {summary['best_val_loss']:.4f} "
        f"({time.time() - start:.0f} s) -> {variant.checkpoint}"
    )


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit("usage: python stages/train.py <dataset> <model> <init> [grouped|cv<fold>]")
    run_stage(main)
