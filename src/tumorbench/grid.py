"""Share the variant grid among workers: each gets every N-th `evaluate@<variant>` of params.yaml's grid
(datasets x models x inits, in that order), so the shares are disjoint and together cover the grid.
`dvc repro` of an evaluate stage also runs its train stage and the data stages above it.
See docs/SCALING.md.
"""

from __future__ import annotations

from tumorbench.variants import all_variants


def grid_targets(params: dict) -> list[str]:
    return [f"evaluate@{v.name}" for v in all_variants(params)]


def share(worker: int, workers: int, params: dict) -> list[str]:
    return grid_targets(params)[worker::workers]
