"""evaluate@<dataset>-<model>-<init>: python stages/evaluate.py <dataset> <model> <init>"""

import sys

from tumorbench.evaluation import CheckpointError, evaluate_variant
from tumorbench.params import load_params
from tumorbench.variants import Variant


def main(dataset: str, model_name: str, init: str) -> None:
    variant = Variant(dataset, model_name, init)
    try:
        metrics = evaluate_variant(variant, load_params())
    except CheckpointError as error:
        sys.exit(f"evaluate@{variant.name}: {error}")
    print(f"{variant.name}: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in ("accuracy", "f1", "precision", "recall", "loss")))


if __name__ == "__main__":
    main(*sys.argv[1:])
