"""Share the variant grid among workers: each gets every N-th evaluate stage of every variant that trains
(the paper's grid, then the leakage table's, then the cross-validation folds: `variant_targets`), so the
shares are disjoint and together cover every training. `dvc repro` of an evaluate stage also runs its
train stage and the data stages above it.
See docs/SCALING.md.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from tumorbench.core.errors import UserError
from tumorbench.core.variants import Variant, all_variants, cv_variants, grouped_variants


class UnknownTargetError(UserError):
    """A pattern that names no variant of the grid; the message lists the grid."""


def share(worker: int, workers: int, params: dict) -> list[str]:
    return list(variant_targets(params))[worker::workers]


def variant_targets(params: dict) -> dict[str, Variant]:
    """Every variant that trains, by the stage that evaluates it: the paper's grid (`evaluate@<variant>`),
    the variants of the leakage table (`evaluate_grouped@<dataset>-<model>-<init>`), then the folds of the
    cross-validation (`evaluate_cv@<dataset>-<model>-<init>-<fold>`)."""
    return {v.stage("evaluate"): v for v in all_variants(params) + grouped_variants(params) + cv_variants(params)}


def select_targets(targets: list[str], patterns: list[str]) -> list[str]:
    """The targets matching any of the shell-style patterns (as `dvc repro --glob` matches), in grid order."""
    for pattern in patterns:
        if not any(fnmatchcase(target, pattern) for target in targets):
            listing = "\n  ".join(targets)
            raise UnknownTargetError(
                f"'{pattern}' matches no variant of params.yaml's grid (datasets x models x inits, "
                f"grouped.datasets x grouped.models x grouped.inits, and cv's folds); the grid is:\n  {listing}"
            )
    return [target for target in targets if any(fnmatchcase(target, pattern) for pattern in patterns)]
