"""aggregate: python stages/aggregate.py -> reports/, reports/summary.json, plots/curves/"""

import json

from tumorbench.core.errors import run_stage
from tumorbench.core.params import load_params
from tumorbench.report.aggregate import aggregate


def main() -> None:
    summary = aggregate(load_params())
    print(json.dumps(summary["tables"], indent=1))
    if summary.get("missing_variants"):
        print(f"missing variants: {' '.join(summary['missing_variants'])}")
    print("report: reports/README.md")


if __name__ == "__main__":
    run_stage(main)
