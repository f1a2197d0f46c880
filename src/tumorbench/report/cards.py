"""A model card per variant (reports/models/<variant>.md), in the spirit of MONAI bundle metadata: what
the model is, what it was trained and validated on (with hashes), how well it does, where it looks,
what the validity checks found, and what it is for."""

from __future__ import annotations

import json
from pathlib import Path

from tumorbench.core.catalog import INITS, MODELS, dataset_title
from tumorbench.core.variants import Variant, explain_metrics
from tumorbench.models.metrics import METRICS

INTENDED_USE = "research only, not for diagnostic use"
TITLES = {
    "accuracy": "accuracy",
    "f1": "macro F1",
    "precision": "macro precision",
    "recall": "macro recall",
    "loss": "cross-entropy",
}


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def model_card(row: dict, table: dict, params: dict, validity: dict, root: Path) -> str:
    """The card of one run variant; row and table as report.build_table makes them."""
    variant = Variant(table["dataset"], row["model"], table["init"])
    metrics, provenance = row["ours"], row["ours"]["provenance"]
    train = params["train"]
    compute = (metrics.get("compute") or {}).get("train") or {}
    start = f"ImageNet weights, md5 `{provenance['weights_md5']}`" if provenance.get("weights_md5") else "random"
    lines = [
        f"# Model card: {variant.name}",
        "",
        f"{MODELS[variant.model]}, {INITS[variant.init]}, classifying {dataset_title(variant.dataset)} slices, "
        f"trained by the method of Ahamed & Sadia (2022) as this project reproduces it (README.md).",
        "",
        "## Intended use",
        "",
        f"**Intended use: {INTENDED_USE}.** A model of a reproduction study: it shows how the published method "
        f"behaves on this data, not how a clinical tool would. It has not been validated on patients outside "
        f"this dataset, and its validation images share patients or near copies with its training images "
        f"where the Validity section below says so.",
        "",
        "## Data and split",
        "",
        f"- Dataset `{variant.dataset}`, prepared at {params['data']['image_size']} px: images md5 "
        f"`{provenance['prepared_images_md5']}`, index md5 `{provenance['prepared_index_md5']}`.",
        f"- Split `{variant.split}` (md5 `{provenance['split_md5']}`): the paper's random "
        f"{1 - params['split']['val_fraction']:.0%}/{params['split']['val_fraction']:.0%} split, seed "
        f"{params['split']['seed']}; {metrics.get('num_val', '?')} validation images.",
        "",
        "## Training",
        "",
        f"- Checkpoint `{variant.checkpoint}` (md5 `{provenance['checkpoint_md5']}`), best epoch "
        f"{metrics.get('best_epoch')} of {metrics.get('epochs')} by validation loss.",
        f"- Adam, lr {train['lr']}, StepLR step {train['step_size']} gamma {train['gamma']}, batch "
        f"{train['batch_size']}, seed {train['seed']}; params hash `{provenance['params_hash']}`.",
        f"- Start: {start}; trained on {compute.get('device', '?')} in {compute.get('precision', '?')}.",
        "",
        "## Validation metrics",
        "",
        "| metric | value | 95% CI | paper |",
        "|---|---|---|---|",
    ]
    for name in METRICS:
        low, high = row["ci"][name]
        paper = row["paper"][name] if row["paper"] else "—"
        lines.append(f"| {TITLES[name]} | {metrics[name]:.4f} | [{low:.4f}, {high:.4f}] | {paper} |")
    if "ece" in metrics:
        lines += [
            "",
            f"Calibration: expected calibration error {metrics['ece']:.4f} (15 bins), Brier score "
            f"{metrics['brier']:.4f}, NLL {metrics['nll']:.4f}; the reliability diagram of its table is in "
            f"`reports/figures/`.",
        ]
    lines += ["", "## Where it looks (Grad-CAM)", ""]
    explained = _read(root / explain_metrics(variant))
    if explained and explained["scored"]:
        prior = explained["centre_prior"]

        def score(part: dict) -> str:
            return f"{part['mean']:.3f} [{part['ci'][0]:.3f}, {part['ci'][1]:.3f}]"

        lines += [
            f"Grad-CAM at `{explained['layer']}` ({explained['native_resolution'][0]}x"
            f"{explained['native_resolution'][1]} cells), for the true class, on {explained['scored']} validation "
            f"images with a tumour outline ({explained['masks']}):",
            "",
            f"- pointing game (the map's maximum inside the tumour): {score(explained['pointing_game'])}; "
            f"a centre prior, no model: {score(prior['pointing_game'])}",
            f"- energy inside the tumour: {score(explained['energy_in_mask'])}; centre prior: "
            f"{score(prior['energy_in_mask'])}",
            f"- overlays: `reports/explain/{variant.name}/`",
        ]
    else:
        lines.append("No Grad-CAM scores: no validation image has a tumour outline, or explain did not run.")
    lines += ["", "## Validity", ""]
    duplicates = (validity.get("duplicates") or {}).get(variant.dataset)
    leak = (duplicates or {}).get("paper_split") or {}
    if leak:
        patients = f", {leak['patient_in_train']} a patient" if leak.get("patient_in_train") is not None else ""
        lines.append(
            f"- Of the {leak['val']} validation images, {leak['copy_in_train']} have a copy in training"
            f"{patients} (reports/duplicates/{variant.dataset}.json)."
        )
    for entry in validity.get("leakage") or []:
        if entry["variant"] == variant.name:
            acc = entry["accuracy"]
            lines.append(
                f"- On a split that keeps duplicates and patients together: accuracy {acc['grouped']:.4f} "
                f"against {acc['paper']:.4f} here (difference {acc['difference']:+.4f}, p = "
                f"{acc['p_value']:.3g})."
            )
    for name, results in (validity.get("external") or {}).items():
        found = results.get(variant.name)
        if found:
            clean = found["clean"]
            lines.append(
                f"- External set `{name}`: accuracy {found['all']['accuracy']:.4f} on all "
                f"{found['all']['n']} images, {clean['accuracy'] if clean['n'] else float('nan'):.4f} on the "
                f"{clean['n']} that match nothing in {variant.dataset}."
            )
    if lines[-1] == "":
        lines.append("No validity check has run for this variant.")
    return "\n".join(lines) + "\n"
