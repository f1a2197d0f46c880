"""explain@<dataset>-<model>-<init>: python stages/explain.py <dataset> <model> <init>

Grad-CAM of the variant's best checkpoint on its validation images: metrics/explain/<variant>.json
(pointing game and energy in the tumour outline, with 95% CIs, and a centre prior's) and
reports/explain/<variant>/*.png (overlays).
"""

import sys

from tumorbench.core.errors import run_stage
from tumorbench.core.params import load_params
from tumorbench.core.variants import Variant, explain_metrics
from tumorbench.validity.explain import explain_variant


def main(dataset: str, model_name: str, init: str) -> None:
    variant = Variant(dataset, model_name, init)
    result = explain_variant(variant, load_params())
    pointing, energy = result["pointing_game"]["mean"], result["energy_in_mask"]["mean"]
    prior = result["centre_prior"]
    scores = (
        f"pointing game {pointing:.3f} (centre prior {prior['pointing_game']['mean']:.3f}), energy in the outline "
        f"{energy:.3f} ({prior['energy_in_mask']['mean']:.3f}) on {result['scored']} images"
        if result["scored"]
        else f"no validation image with a tumour outline ({result['skipped_without_mask']} without)"
    )
    print(
        f"{variant.name}: Grad-CAM at {result['layer']} ({result['native_resolution']} cells): {scores} "
        f"-> {explain_metrics(variant)}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python stages/explain.py <dataset> <model> <init>")
    run_stage(main)
