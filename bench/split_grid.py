"""Print one worker's share of the variant grid as DVC targets, for `dvc repro`.

    dvc repro $(python bench/split_grid.py 0 4)    # worker 0 of 4
    dvc push --run-cache

Worker K of N gets every N-th evaluate@<variant> of params.yaml's grid
(datasets x models x inits, in that order), so the shares are disjoint and
together cover the grid; `dvc repro` of an evaluate stage also runs its train
stage and the data stages above it. See docs/SCALING.md.
"""

import sys

from tumorbench.params import load_params
from tumorbench.variants import all_variants


def share(worker: int, workers: int, params: dict) -> list[str]:
    return [f"evaluate@{v.name}" for v in all_variants(params)][worker::workers]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not all(a.isdigit() for a in argv) or not 0 <= int(argv[0]) < int(argv[1]):
        print("usage: python bench/split_grid.py WORKER WORKERS   (0 <= WORKER < WORKERS)", file=sys.stderr)
        return 2
    worker, workers = int(argv[0]), int(argv[1])
    targets = share(worker, workers, load_params())
    if not targets:  # an empty list would make `dvc repro $(...)` run the whole pipeline
        print(f"worker {worker} of {workers} has no variant: the grid is smaller than {workers}", file=sys.stderr)
        return 1
    print(" ".join(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
