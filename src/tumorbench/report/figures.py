"""The report's figures as PNG files (matplotlib, no display), so reports/README.md reads offline.

reports/figures/learning_rate.png              the paper's Figure 7
reports/figures/val_loss_<table>.png           Figures 8-9: one chart per table, a line per model run
reports/figures/confusion_<table>.png          a confusion matrix per model run
reports/figures/roc_<table>.png                ROC curves (binary: the positive class; else one-vs-rest)
reports/figures/gradcam_<dataset>.png          Grad-CAM overlays of each variant (reports/explain/)
reports/figures/reliability_<table>.png        reliability diagrams: accuracy against confidence per model
reports/figures/cv_<dataset>-<init>.png        cross-validated accuracy per fold and its t-interval, per model
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tumorbench.core.catalog import MODELS  # noqa: E402
from tumorbench.core.fileio import atomic_write_bytes  # noqa: E402
from tumorbench.models.calibration import expected_calibration_error, reliability_bins  # noqa: E402
from tumorbench.models.metrics import confusion, roc_curve  # noqa: E402


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def learning_rate(lr: dict[int, float], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(5, 3))
    epochs = sorted(lr)
    axes.plot(epochs, [lr[e] for e in epochs], drawstyle="steps-post")
    axes.set(xlabel="epoch", ylabel="learning rate", yscale="log", title="Learning rate per epoch (Fig. 7)")
    _save(figure, path)


def validation_loss(curves: dict[str, dict[int, float]], title: str, path: Path) -> None:
    """curves: model -> epoch -> validation loss."""
    figure, axes = plt.subplots(figsize=(6, 4))
    colours = plt.get_cmap("tab20")
    for k, (model, loss) in enumerate(curves.items()):
        epochs = sorted(loss)
        axes.plot(epochs, [loss[e] for e in epochs], label=MODELS.get(model, model), color=colours(k % 20))
    axes.set(xlabel="epoch", ylabel="validation loss", title=title)
    axes.legend(fontsize=7, ncol=2)
    _save(figure, path)


def reliability_diagram(predictions: dict[str, dict], title: str, path: Path) -> None:
    """predictions: model -> {"label", "probs"}; a line per model of accuracy against mean confidence
    in 15 equal-width confidence bins (empty bins left out), the diagonal a calibrated model."""
    figure, axes = plt.subplots(figsize=(5, 5))
    colours = plt.get_cmap("tab20")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
    for k, (model, found) in enumerate(predictions.items()):
        bins = [b for b in reliability_bins(found["label"], found["probs"]) if b["count"]]
        ece = expected_calibration_error(found["label"], found["probs"])
        axes.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            marker="o",
            markersize=3,
            color=colours(k % 20),
            label=f"{MODELS.get(model, model)} (ECE {ece:.3f})",
        )
    axes.set(xlabel="confidence (top class)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    axes.legend(fontsize=7)
    _save(figure, path)


def cv_scores(results: dict[str, dict], title: str, path: Path) -> None:
    """results: model title -> summary.json's cv entry; each fold's accuracy as a dot, the mean and its
    95% t-interval as a bar."""
    figure, axes = plt.subplots(figsize=(max(4, 1.2 * len(results) + 2), 4))
    for x, r in enumerate(results.values()):
        folds = r["fold_accuracy"]
        axes.scatter([x] * len(folds), folds, color="tab:blue", s=12, zorder=3)
        low, high = r["accuracy_ci"]
        axes.errorbar(
            x,
            r["accuracy_mean"],
            yerr=[[r["accuracy_mean"] - low], [high - r["accuracy_mean"]]],
            color="black",
            capsize=6,
            marker="_",
            markersize=20,
        )
    axes.set_xticks(range(len(results)), list(results), rotation=20)
    axes.set(ylabel="validation accuracy per fold", title=f"{title}: {len(folds)} folds, mean and 95% t-interval")
    _save(figure, path)


def confusion_matrices(predictions: dict[str, dict], class_names: list[str], title: str, path: Path) -> None:
    """predictions: model -> {"label", "pred"} arrays."""
    n = len(predictions)
    columns = min(n, 4)
    rows = (n + columns - 1) // columns
    figure, grid = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for axes, (model, found) in zip(grid.ravel(), predictions.items()):
        matrix = confusion(found["label"], found["pred"], len(class_names))
        axes.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            axes.text(j, i, str(count), ha="center", va="center", fontsize=8)
        axes.set(
            title=MODELS.get(model, model),
            xlabel="predicted",
            ylabel="actual",
            xticks=range(len(class_names)),
            yticks=range(len(class_names)),
        )
        axes.set_xticklabels(class_names, fontsize=7)
        axes.set_yticklabels(class_names, fontsize=7)
    for axes in grid.ravel()[n:]:
        axes.axis("off")
    figure.suptitle(title)
    _save(figure, path)


def roc_curves(predictions: dict[str, dict], class_names: list[str], title: str, path: Path) -> None:
    """predictions: model -> {"label", "probs"}; a panel per class (binary: the positive class only)."""
    classes = [1] if len(class_names) == 2 else list(range(len(class_names)))
    figure, grid = plt.subplots(1, len(classes), figsize=(4 * len(classes), 4), squeeze=False)
    colours = plt.get_cmap("tab20")
    for axes, k in zip(grid[0], classes):
        for m, (model, found) in enumerate(predictions.items()):
            fpr, tpr, _ = roc_curve(found["label"] == k, found["probs"][:, k])
            axes.plot(fpr, tpr, label=MODELS.get(model, model), color=colours(m % 20))
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":")
        axes.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title=f"{class_names[k]} vs the rest" if len(classes) > 1 else class_names[k],
        )
        axes.legend(fontsize=7)
    figure.suptitle(title)
    _save(figure, path)


def gradcam_grid(overlays: dict[str, list[Path]], title: str, path: Path, most: int = 6) -> None:
    """overlays: variant -> its overlay PNGs; a row per variant, at most `most` images each."""
    rows = len(overlays)
    figure, grid = plt.subplots(rows, most, figsize=(1.8 * most, 2.0 * rows), squeeze=False)
    for row, (variant, files) in zip(grid, overlays.items()):
        for axes, file in zip(row, files[:most]):
            axes.imshow(Image.open(file))
            sample, _, rest = file.stem.partition("_true-")
            axes.set_title(f"{sample}\n{rest.replace('_predicted-', ' -> ')}", fontsize=6)
        for axes in row:
            axes.axis("off")
        row[0].text(-0.1, 0.5, variant, transform=row[0].transAxes, rotation=90, ha="right", va="center", fontsize=7)
    figure.suptitle(f"{title}: Grad-CAM for the predicted class (true -> predicted; green: tumour outline)")
    _save(figure, path)


OFFLINE_PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vega %(vega)s, vega-lite %(vega_lite)s, vega-embed %(embed)s, from vl-convert-python %(package)s:
         no CDN, so the page draws offline. DVC fills in the plots; its own script tags are not asked for. -->
    <script type="text/javascript">
%(bundle)s
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""
VEGA_LITE = "5.21"  # DVC's templates are Vega-Lite 5 specs


def offline_plots_page() -> str:
    """An HTML template for `dvc plots show` (plots.html_template in .dvc/config) with vega, vega-lite and
    vega-embed inlined from the installed vl-convert-python instead of loaded from a CDN."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    for placeholder in ("</script", "{plot_divs}", "{scripts}", "{refresh_tag}"):
        if placeholder in bundle:  # would end the script or be taken for DVC's placeholders
            raise ValueError(f"vl-convert's bundle holds {placeholder!r}: this vl-convert version cannot be inlined")
    from importlib.metadata import version

    return OFFLINE_PAGE % {
        "bundle": bundle,
        "vega": vl_convert.get_vega_version(),
        "vega_lite": VEGA_LITE,
        "embed": vl_convert.get_vega_embed_version(),
        "package": version("vl-convert-python"),
    }
