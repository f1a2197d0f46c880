"""aggregate: python stages/aggregate.py -> reports/, reports/summary.json, plots/curves/"""

import json

from tumorbench.errors import run_stage
from tumorbench.fileio import atomic_write_json, atomic_write_text
from tumorbench.params import load_params
from tumorbench.report import aggregate
from tumorbench.variants import REPORTS, SUMMARY, all_variants, grouped_variants


def note_missing(params: dict, summary: dict) -> list[str]:
    """Name the variants of the grid that have no results, at the top of reports/README.md and as
    `missing_variants` in reports/summary.json. `dvc repro` runs every variant before this stage, so only a
    run of this stage alone has any: the aggregate of `tumorbench slurm submit --allow-failed`, which trains
    nothing itself. Without missing variants both files stay exactly as the report wrote them."""
    missing = [v.name for v in all_variants(params) + grouped_variants(params) if not v.metrics.exists()]
    if missing:
        readme = (REPORTS / "README.md").read_text()
        title, _, rest = readme.partition("\n")
        variants = (
            "1 variant of params.yaml's grid has"
            if len(missing) == 1
            else f"{len(missing)} variants of params.yaml's grid have"
        )
        note = (
            f"\n**Missing variants**: {variants} no results here and show as \u201c\u2014\u201d: "
            f"{', '.join(missing)}. Their Slurm tasks failed or were not submitted; "
            "`tumorbench slurm resubmit JOBID` runs them (docs/SCALING.md).\n"
        )
        atomic_write_text(REPORTS / "README.md", f"{title}\n{note}{rest}")
        atomic_write_json(SUMMARY, {**summary, "missing_variants": missing})
    return missing


def main() -> None:
    params = load_params()
    summary = aggregate(params)
    missing = note_missing(params, summary)
    print(json.dumps(summary["tables"], indent=1))
    if missing:
        print(f"missing variants: {' '.join(missing)}")
    print("report: reports/README.md")


if __name__ == "__main__":
    run_stage(main)
