"""external@<name>: python stages/external.py <name>

Tests every variant of external.<name>.dataset (the paper's grid and the grouped split's) on the set at
external.<name>.path: metrics/external/<name>/<variant>.json and .csv (all images, the clean ones that
match nothing in the dataset, and the overlap).
"""

import csv
import json
import sys

from tumorbench.core.errors import run_stage
from tumorbench.core.fileio import atomic_directory, to_json
from tumorbench.core.params import ParamsError, load_params
from tumorbench.core.variants import EXTERNAL, all_variants, grouped_variants, hashes_path, prepared_dir
from tumorbench.data.prepared import class_names_of, read_index
from tumorbench.models.inference import load_checkpoint
from tumorbench.models.runtime import configure_runtime, pick_device
from tumorbench.validity.external import ExternalSet


def main(name: str) -> None:
    params = load_params()
    if name not in params["external"]:
        raise ParamsError(f"params.yaml external has no entry {name!r} (it has {list(params['external'])})")
    spec = params["external"][name]
    dataset = spec["dataset"]
    class_names = class_names_of(read_index(prepared_dir(dataset) / "index.csv"))
    with open(hashes_path(dataset), newline="") as f:
        dataset_hashes = list(csv.DictReader(f))
    external = ExternalSet(name, spec, class_names, dataset_hashes, params["duplicates"], params["data"]["image_size"])
    device = pick_device(params["train"]["device"])
    configure_runtime(device)
    variants = [v for v in all_variants(params) + grouped_variants(params) if v.dataset == dataset]
    untrained = [v.name for v in variants if not v.checkpoint.exists()]
    if untrained:  # only a run of this stage alone, as `tumorbench slurm submit --allow-failed` runs it
        print(f"external@{name}: left out, no checkpoint (not trained here): {', '.join(untrained)}")
    result = None
    with atomic_directory(EXTERNAL / name) as out:  # all variants or none: a failed run keeps the last results
        for variant in (v for v in variants if v.name not in untrained):
            split = json.loads(variant.split.read_text())
            result, predictions = external.evaluate(
                load_checkpoint(variant.checkpoint, variant.stage("train")), split, device, params
            )
            (out / f"{variant.name}.json").write_text(to_json(result))
            (out / f"{variant.name}.csv").write_text(predictions)
            print(
                f"external@{name} {variant.name}: accuracy {result['all']['accuracy']:.4f} on all "
                f"{result['all']['n']}, {result['clean'].get('accuracy', float('nan')):.4f} on the "
                f"{result['clean']['n']} clean"
            )
    if result is None:
        print(f"external@{name}: no variant of {dataset} is trained, nothing tested -> {EXTERNAL / name}")
        return
    overlap = result["overlap"]
    print(
        f"external@{name}: {len(external.records)} readable images, {overlap['exact']} exact and "
        f"{overlap['near']} near copies of {dataset} images, {len(external.unreadable)} unreadable "
        f"-> {EXTERNAL / name}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/external.py <name>   (a key of params.yaml external)")
    run_stage(main)
