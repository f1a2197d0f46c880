"""plots_template: python stages/plots_template.py -> plots/offline_template.html

The page `dvc plots show` renders into (.dvc/config plots.html_template), with the Vega libraries
inlined from the installed vl-convert-python, so the plots draw without internet.
"""

from tumorbench.core.errors import run_stage
from tumorbench.core.fileio import atomic_write_text
from tumorbench.core.variants import PLOTS_TEMPLATE
from tumorbench.report.figures import offline_plots_page


def main() -> None:
    page = offline_plots_page()
    atomic_write_text(PLOTS_TEMPLATE, page)
    print(f"plots_template: {len(page) >> 10} KiB, no CDN -> {PLOTS_TEMPLATE}")


if __name__ == "__main__":
    run_stage(main)
