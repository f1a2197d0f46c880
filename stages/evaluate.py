"""evaluate@<dataset>-<model>-<init>: python stages/evaluate.py <dataset> <model> <init>"""

import sys

from tumorbench.core.errors import run_stage
from tumorbench.core.params import load_params
from tumorbench.core.variants import Variant
from tumorbench.models.evaluation import evaluate_variant


def main(dataset: str, model_name: str, init: str, protocol: str = "paper") -> None:
    variant = Variant(dataset, model_name, init, protocol)
    metrics = evaluate_variant(variant, load_params())
    scores = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("accuracy", "f1", "precision", "recall", "loss"))
    print(f"{variant.name}: {scores}")


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit("usage: python stages/evaluate.py <dataset> <model> <init> [grouped|cv<fold>]")
    run_stage(main)
