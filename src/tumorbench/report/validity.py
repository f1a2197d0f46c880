"""The report's Validity section: how much of each number is real.

It reads what the validity stages wrote (all optional: a part with nothing to read says so):

    reports/duplicates/<dataset>.json           duplicate groups (the duplicates stage)
    data/splits/<dataset>-grouped.json          (paper_split_leaks) what the paper's split leaks
    metrics/<variant>.json and -grouped.json,   the leakage table: each variant of grouped.datasets
    plots/predictions/<variant>[-grouped].csv   x grouped.models x grouped.inits under both splits
    metrics/external/<name>/<variant>.json      external test sets: all images vs the clean ones
"""

from __future__ import annotations

import json
from pathlib import Path

from tumorbench.core.catalog import MODELS
from tumorbench.core.variants import EXTERNAL, Variant, duplicates_report, grouped_variants, split_path
from tumorbench.models.metrics import dataset_metrics
from tumorbench.report.results import read_predictions
from tumorbench.validity.stats import bootstrap_ci, bootstrap_difference

ALPHA = 0.05


def _markdown(header: list[str], lines: list[list[str]]) -> str:
    text = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(text + ["| " + " | ".join(line) + " |" for line in lines]) + "\n"


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def duplicates_part(params: dict, root: Path) -> tuple[str, dict]:
    lines, found = [], {}
    for dataset in params["datasets"]:
        report = _read_json(root / duplicates_report(dataset))
        if report is None:
            continue
        grouped = _read_json(root / split_path(dataset, "grouped")) or {}
        leak = grouped.get("paper_split_leaks")
        found[dataset] = {
            k: report[k] for k in ("n_images", "in_exact_groups", "in_near_groups", "largest_group", "label_conflicts")
        } | {"paper_split": leak}
        patients = "—"
        if leak and leak["patient_in_train"] is not None:
            patients = f"{leak['patient_in_train']} of {leak['val']}"
        lines.append(
            [
                dataset,
                str(report["n_images"]),
                f"{report['in_exact_groups']} in {len(report['exact'])}",
                f"{report['in_near_groups']} in {len(report['near'])}",
                str(report["largest_group"]),
                str(report["label_conflicts"]),
                f"{leak['copy_in_train']} of {leak['val']}" if leak else "—",
                patients,
            ]
        )
    if not lines:
        return "No duplicate audit was run.\n", found
    settings = params["duplicates"]
    flips = ", any rotation or flip" if settings["flips"] else ""
    header = [
        "Dataset",
        "images",
        "exact copies (groups)",
        "with near copies (groups)",
        "largest group",
        "groups with two classes",
        "val images with a copy in train",
        "val images whose patient is in train",
    ]
    text = (
        f"### Duplicates\n\nExact: same file bytes or decoded pixels. Near: pHash within "
        f"{settings['threshold']} bits{flips} (`duplicates` in params.yaml); a group links both. The last two "
        f"columns count the paper's random split. Contact sheets of the largest groups: "
        f"`reports/duplicates/<dataset>.png`.\n\n" + _markdown(header, lines) + "\n"
    )
    leaking = []
    for dataset, counts in found.items():
        leak = counts["paper_split"] or {}
        what = [w for w, n in (("copies", leak.get("copy_in_train")), ("patients", leak.get("patient_in_train"))) if n]
        if what:
            leaking.append(f"{dataset} ({' and '.join(what)})")
    if leaking:
        text += (
            f"**Act on it:** the paper's split puts copies or patients of validation images in training in "
            f"{', '.join(leaking)}, so its validation accuracy partly measures recall of training images; quote "
            f"the grouped split's numbers below as the estimate for new patients and scans.\n"
        )
    else:
        text += "No validation image of the paper's split has a copy or a patient in training.\n"
    return text, found


def _predictions(root: Path, variant: Variant) -> tuple | None:
    path = root / variant.predictions
    if not path.exists():
        return None
    found = read_predictions(path)
    return found["label"], found["pred"], found["probs"]


def leakage_part(params: dict, root: Path) -> tuple[str, list[dict]]:
    lines, found = [], []
    for grouped in grouped_variants(params):
        paper = Variant(grouped.dataset, grouped.model, grouped.init)
        a, b = _predictions(root, paper), _predictions(root, grouped)
        if a is None or b is None:
            continue
        k, boot, seed = a[2].shape[1], params["eval"]["bootstrap"], params["eval"]["seed"]
        test = bootstrap_difference(a, b, k, boot, seed)
        scores = [dataset_metrics(*x, k) for x in (a, b)]
        ci = [bootstrap_ci(*x, k, boot, seed) for x in (a, b)]
        row = {"variant": paper.name, "n_val": [int(len(a[0])), int(len(b[0]))]}
        cells = [f"{grouped.dataset} {MODELS[grouped.model]} {grouped.init}"]
        for metric in ("accuracy", "f1"):
            row[metric] = {"paper": scores[0][metric], "grouped": scores[1][metric], **test[metric]}
            low, high = test[metric]["ci"]
            cells += [
                f"{scores[0][metric]:.4f} [{ci[0][metric][0]:.4f}, {ci[0][metric][1]:.4f}]",
                f"{scores[1][metric]:.4f} [{ci[1][metric][0]:.4f}, {ci[1][metric][1]:.4f}]",
                f"{test[metric]['difference']:+.4f} [{low:+.4f}, {high:+.4f}] p={test[metric]['p_value']:.3g}",
            ]
        found.append(row)
        lines.append(cells)
    if not lines:
        return "No variant was trained on the grouped split (`grouped` in params.yaml).\n", found
    header = [
        "Variant",
        "accuracy, paper's split",
        "accuracy, grouped split",
        "Δ accuracy (paper − grouped)",
        "macro F1, paper's split",
        "macro F1, grouped split",
        "Δ F1",
    ]
    group_by = params["grouped"]["group_by"]
    text = (
        f"### Leakage: the paper's random split against a grouped one\n\nThe same method on two splits of the same "
        f"data: the paper's random 60/40 split, and one that keeps each group of `grouped.group_by` = "
        f"{group_by} on one side (`data/splits/<dataset>-grouped.json`). 95% CIs by bootstrap. The two "
        f"validation sets hold different images, so a paired test (McNemar) does not apply: the difference's "
        f"CI and p-value come from resampling each validation set on its own (`tumorbench.validity.stats."
        f"bootstrap_difference`).\n\n" + _markdown(header, lines) + "\n"
    )
    inflated = [r["variant"] for r in found if r["accuracy"]["p_value"] < ALPHA and r["accuracy"]["difference"] > 0]
    text += (
        f"**Act on it:** the random split inflates accuracy significantly (p < {ALPHA}) for "
        f"{', '.join(inflated)}; report the grouped split's accuracy as the estimate for unseen patients.\n"
        if inflated
        else f"**Act on it:** no accuracy differs significantly (p < {ALPHA}) between the splits here; with these "
        f"validation sizes a gap smaller than the CIs' width cannot be told from noise.\n"
    )
    return text, found


def external_part(params: dict, root: Path) -> tuple[str, dict]:
    lines, found = [], {}
    for name in params["external"]:
        for path in sorted((root / EXTERNAL / name).glob("*.json"), key=lambda p: p.stem):
            result = json.loads(path.read_text())
            found.setdefault(name, {})[path.stem] = {k: result[k] for k in ("overlap",)} | {
                part: {k: result[part].get(k) for k in ("n", "accuracy", "f1")} for part in ("all", "clean")
            }
            every, clean, overlap = result["all"], result["clean"], result["overlap"]

            def cell(part):
                if not part.get("n"):
                    return "— (none)"
                return f"{part['accuracy']:.4f} [{part['ci']['accuracy'][0]:.4f}, {part['ci']['accuracy'][1]:.4f}]"

            lines.append(
                [
                    name,
                    path.stem,
                    f"{every['n']}",
                    cell(every),
                    f"{clean['n']}",
                    cell(clean),
                    f"{overlap['exact']} / {overlap['near']}",
                    f"{overlap['train']} / {overlap['val']}",
                ]
            )
    if not lines:
        return "No external test set is configured (`external` in params.yaml).\n", found
    header = [
        "Set",
        "Variant",
        "images",
        "accuracy, all",
        "clean images",
        "accuracy, clean",
        "exact / near copies of the dataset",
        "matches in train / val",
    ]
    text = (
        "### External test sets\n\n`all`: every readable image of the set; `clean`: those that match no image of "
        "the dataset, exactly or near (`duplicates` settings). Matches in train: copies of images the variant "
        "trained on.\n\n" + _markdown(header, lines) + "\n"
    )
    overlapping = sorted({line[0] for line in lines if line[6] != "0 / 0"})
    text += (
        f"**Act on it:** {', '.join(overlapping)} overlap(s) the training data; quote the clean accuracy as "
        f"the external result.\n"
        if overlapping
        else "**Act on it:** no external image matches the dataset: `all` is a clean external result.\n"
    )
    return text, found


def validity_section(params: dict, root: Path) -> tuple[str, dict]:
    """The README's Validity section and its numbers for reports/summary.json."""
    duplicates_text, duplicates = duplicates_part(params, root)
    leakage_text, leakage = leakage_part(params, root)
    external_text, external = external_part(params, root)
    text = "\n".join(["## Validity\n", duplicates_text, leakage_text, external_text])
    return text, {"duplicates": duplicates, "leakage": leakage, "external": external}
