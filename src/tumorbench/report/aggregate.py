"""The aggregate report: our tables beside the paper's, with noise and audit.

`aggregate(params, root)` reads what the evaluate stages wrote for each
variant `<dataset>-<model>-<init>` (variants not run are simply absent; the
paths are tumorbench.core.variants.Variant's):

    metrics/<variant>.json                        scores, per-batch scores, provenance
    plots/predictions/<variant>.csv               sample_id,label,pred,prob_0..prob_{K-1}
    dvclive/<variant>/plots/metrics/val/loss.tsv  step, loss per epoch
    dvclive/<variant>/plots/metrics/lr.tsv        step, lr per epoch

and writes (atomically):

    reports/tables/<dataset>-<init>.md, .csv   one table per paper table (1-4, all 12 models), and one
                                               per dataset of the user's own and init (the models run)
    reports/README.md                          compact tables, summary, the full tables, the validity
                                               section (tumorbench.report.validity), the audit
    reports/summary.json                       best model per table, mean accuracy per init
    plots/curves/val_loss/<dataset>-<init>.csv epoch,model,val_loss of every model run (Figures 8-9)
    plots/curves/lr.csv                        epoch,lr (Figure 7)
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from tumorbench.core.catalog import (
    INITS,
    MODELS,
    PAPER_DATASETS,
    TABLES,
    dataset_title,
    load_paper_results,
    paper_table,
    table_name,
)
from tumorbench.core.fileio import atomic_directory, atomic_write_json, atomic_write_text
from tumorbench.core.variants import (
    CURVES,
    FIGURES,
    MODEL_CARDS,
    REPORTS,
    SUMMARY,
    TABLES_DIR,
    Variant,
    all_variants,
    cv_variants,
    explain_dir,
    grouped_variants,
)
from tumorbench.models.metrics import METRICS
from tumorbench.report import figures
from tumorbench.report.cards import INTENDED_USE, model_card
from tumorbench.report.rankings import rankings_section
from tumorbench.report.results import ReportInputError, read_dvclive_series, read_metrics, read_predictions
from tumorbench.report.validity import validity_section
from tumorbench.validity.audit import audit_rows
from tumorbench.validity.stats import bootstrap_ci, mcnemar_exact

METRIC_TITLES = {"accuracy": "Accuracy", "f1": "F1-Score", "precision": "Precision", "recall": "Recall", "loss": "Loss"}
PROVENANCE = ("prepared_images_md5", "prepared_index_md5", "split_md5", "checkpoint_md5", "weights_md5", "params_hash")
PROVENANCE_TITLES = ("images", "index", "split", "checkpoint", "weights", "params")
ALPHA = 0.05
MISSING = "—"
COMPACT_WIDTH = 100  # the compact tables at the top of the README fit this many characters a line
LEGEND = (
    "Best = highest accuracy, ties broken by lowest loss. Δ = ours − paper. 95% CI: percentile "
    "bootstrap over validation images. McNemar: exact test against our best model of the same "
    "table. Per-batch: macro scores per training-size batch, averaged (see the audit). "
    "Hashes: first 8 characters (full in the CSV). “—”: variant not run.\n"
)


# ---------------------------------------------------------------- computing one table


def _best(rows: list[dict], values) -> str | None:
    """Model with the highest accuracy, ties by lowest loss, then by paper order."""
    scored = [
        (-values(row)["accuracy"], values(row)["loss"], i, row["model"])
        for i, row in enumerate(rows)
        if values(row) is not None
    ]
    return min(scored)[3] if scored else None


def report_tables(params: dict) -> list[tuple[str, int]]:
    """(dataset, init) of every table: the paper's four, then each dataset of the user's own x init run."""
    own = [d for d in params["datasets"] if d not in PAPER_DATASETS]
    return [(d, i) for d in PAPER_DATASETS for i in INITS] + [(d, i) for d in own for i in params["inits"]]


def build_table(params: dict, dataset: str, init: str, root: Path) -> dict:
    """The rows of one table (all 12 models for a paper table, the models run otherwise): ours (where
    run), the paper's, difference, CI, McNemar, provenance."""
    number = TABLES.get((dataset, init))
    paper_rows = paper_table(dataset, init)
    selected = set(params["models"]) if dataset in params["datasets"] and init in params["inits"] else set()
    rows, order = [], None
    for model in MODELS if number else params["models"]:
        variant = Variant(dataset, model, init)
        row = {"model": model, "variant": variant.name, "paper": paper_rows.get(model), "ours": None}
        metrics_path = root / variant.metrics
        if model in selected and metrics_path.exists():
            metrics = read_metrics(metrics_path)
            predictions = read_predictions(root / variant.predictions)
            if order is None:
                order = predictions["sample_id"]
            elif not np.array_equal(order, predictions["sample_id"]):
                raise ReportInputError(
                    f"{variant.predictions} lists validation images in another "
                    f"order than the other {dataset} variants; rerun its evaluate stage"
                )
            correct = predictions["label"] == predictions["pred"]
            if abs(correct.mean() - metrics["accuracy"]) > 1e-9:
                raise ReportInputError(
                    f"{metrics_path} accuracy {metrics['accuracy']} disagrees with "
                    f"{variant.predictions} ({correct.mean()}); rerun evaluate"
                )
            row.update(
                ours=metrics,
                correct=correct,
                ci=bootstrap_ci(
                    predictions["label"],
                    predictions["pred"],
                    predictions["probs"],
                    predictions["probs"].shape[1],
                    n_resamples=params["eval"]["bootstrap"],
                    seed=params["eval"]["seed"],
                ),
            )
        rows.append(row)
    best = _best(rows, lambda row: row["ours"])
    paper_best = _best(rows, lambda row: {k: float(row["paper"][k]) for k in ("accuracy", "loss")} if number else None)
    best_correct = next((row["correct"] for row in rows if row["model"] == best), None)
    for row in rows:
        row["best_ours"] = row["model"] == best
        row["best_paper"] = row["model"] == paper_best
        if row["ours"] is not None:
            row["mcnemar"] = mcnemar_exact(best_correct, row["correct"])
    run = [row for row in rows if row["ours"] is not None]
    indistinguishable = sum(1 for row in run if not row["best_ours"] and row["mcnemar"]["p_value"] >= ALPHA)
    return {
        "name": table_name(dataset, init),
        "number": number,
        "dataset": dataset,
        "init": init,
        "rows": rows,
        "best": best,
        "paper_best": paper_best,
        "models_run": len(run),
        "indistinguishable": indistinguishable if run else None,
        "num_val": int(run[0]["ours"].get("num_val", run[0]["correct"].size)) if run else None,
    }


# ---------------------------------------------------------------- writing one table


def _csv_record(table: dict, row: dict) -> dict:
    ours, paper = row["ours"], row["paper"]
    record = {
        "table": table["number"] or "",
        "dataset": table["dataset"],
        "init": table["init"],
        "model": row["model"],
        "run": int(ours is not None),
        "best_ours": int(row["best_ours"]),
        "best_paper": int(row["best_paper"]),
    }
    for name in METRICS:
        record[name] = ours[name] if ours else ""
        record[f"{name}_ci_low"] = row["ci"][name][0] if ours else ""
        record[f"{name}_ci_high"] = row["ci"][name][1] if ours else ""
        record[f"{name}_paper"] = paper[name] if paper else ""
        record[f"{name}_diff"] = ours[name] - float(paper[name]) if ours and paper else ""
    test = row.get("mcnemar")
    record.update(
        mcnemar_b=test["b"] if test else "",
        mcnemar_c=test["c"] if test else "",
        mcnemar_p=test["p_value"] if test else "",
        significant=("yes" if test["p_value"] < ALPHA else "no") if test else "",
    )
    for name in METRICS:
        record[f"batch_{name}"] = ours["batch"][name] if ours else ""
    for key in ("best_epoch", "epochs", "num_val"):
        record[key] = ours.get(key, "") if ours else ""
    for key in PROVENANCE:
        record[key] = (ours["provenance"].get(key) or "") if ours else ""
    return record


def table_csv(table: dict) -> str:
    records = [_csv_record(table, row) for row in table["rows"]]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def _f(value, digits=6, sign=False) -> str:
    if value is None or value == "":
        return MISSING
    return f"{float(value):+.{digits}f}" if sign else f"{float(value):.{digits}f}"


def _markdown(header: list[str], lines: list[list[str]]) -> str:
    text = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    text += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(text) + "\n"


def table_markdown(table: dict) -> str:
    """Two markdown tables with the same rows: the scores (beside the paper's, for a paper table), then
    noise and provenance."""
    with_paper = table["number"] is not None
    header = ["Model", "Best"]
    for name in METRICS:
        header += [METRIC_TITLES[name], "95% CI"] + (["paper", "Δ"] if with_paper else [])
    scores, details = [], []
    for row in table["rows"]:
        ours, paper = row["ours"], row["paper"]
        best = [who for who, flag in (("ours", row["best_ours"]), ("paper", row["best_paper"])) if flag]
        line = [MODELS[row["model"]], ", ".join(best)]
        for name in METRICS:
            ci = row["ci"][name] if ours else None
            line += [_f(ours[name]) if ours else MISSING, f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else MISSING]
            if with_paper:
                line += [paper[name], _f(ours[name] - float(paper[name]), 4, sign=True) if ours else MISSING]
        scores.append(line)
        test = row.get("mcnemar")
        if ours is None:
            p_text = significant = MISSING
        elif row["best_ours"]:
            p_text = significant = "best"
        else:
            p_text = f"{test['p_value']:.3g} (b={test['b']}, c={test['c']})"
            significant = "yes" if test["p_value"] < ALPHA else "no"
        hashes = [(ours["provenance"].get(key) or "none")[:8] if ours else MISSING for key in PROVENANCE]
        details.append(
            [
                MODELS[row["model"]],
                p_text,
                significant,
                _f(ours["batch"]["accuracy"]) if ours else MISSING,
                _f(ours["batch"]["f1"]) if ours else MISSING,
                str(ours.get("best_epoch", MISSING)) if ours else MISSING,
                *hashes,
            ]
        )
    detail_header = [
        "Model",
        "McNemar p vs our best",
        f"significant at {ALPHA}",
        "per-batch accuracy",
        "per-batch F1",
        "best epoch",
        *PROVENANCE_TITLES,
    ]
    return _markdown(header, scores) + "\n" + _markdown(detail_header, details)


def compact_markdown(table: dict) -> str:
    """The models run: our accuracy with its 95% CI, the paper's, the difference, macro F1; our best in bold."""
    with_paper = table["number"] is not None
    header = ["Model", "Accuracy [95% CI]"] + (["Paper", "Δ"] if with_paper else []) + ["Macro F1"]
    lines = []
    for row in table["rows"]:
        ours, paper = row["ours"], row["paper"]
        if ours is None:
            continue
        low, high = row["ci"]["accuracy"]
        line = [f"**{MODELS[row['model']]}**" if row["best_ours"] else MODELS[row["model"]]]
        line.append(f"{ours['accuracy']:.4f} [{low:.4f}, {high:.4f}]")
        if with_paper:
            line += [f"{float(paper['accuracy']):.4f}", _f(ours["accuracy"] - float(paper["accuracy"]), 4, sign=True)]
        line.append(f"{ours['f1']:.4f}")
        lines.append(line)
    return _markdown(header, lines)


def table_title(table: dict) -> str:
    title = f"{dataset_title(table['dataset'])}, {INITS[table['init']]}"
    return f"Table {table['number']}: {title}" if table["number"] else title


# ---------------------------------------------------------------- audit and README


def audit_section(tables: list[dict], batch_size: int) -> tuple[str, list[dict]]:
    binary = [row for row in load_paper_results() if row["dataset"] == "br35h"]
    results = audit_rows(binary)
    lines = []
    for result in results:
        internal, closest = result["internal"], result["closest"]
        lines.append(
            [
                result["table"],
                MODELS[result["model"]],
                "yes" if internal["checks"]["accuracy_is_multiple_of_1_over_n"] else "no",
                f"{internal['recall_minus_accuracy']:+.6f}",
                f"{internal['f1_gap']:.6f}",
                f"{internal['f1_gap_bound']:.6f}",
                f"{internal['smallest_class_at_most']:.0f}",
                "yes" if result["consistent"] else "no",
                f"{result['matches']} ({result['balanced_matches']} at 600/600)",
                f"{closest['n_pos']}: tp {closest['tp']}, fn {closest['fn']}, tn {closest['tn']}, fp {closest['fp']}",
                f"{result['closest_error']:.2e}",
            ]
        )
    consistent = sum(result["consistent"] for result in results)
    on_grid = sum(result["internal"]["checks"]["accuracy_is_multiple_of_1_over_n"] for result in results)
    largest_class = max(result["internal"]["smallest_class_at_most"] for result in results)
    text = [
        "## Audit of the paper's metrics\n",
        "Br35H has 1500 + 1500 images; a stratified 60/40 split leaves 600 + 600 for validation, where "
        "macro recall equals accuracy, and for any confusion matrix the macro F1 lies below the mean "
        "of macro precision and recall by at most max_c (E/n_c)² / (4 (1 − E/n_c)) for E errors and "
        "n_c images of class c (`tumorbench.validity.audit.check_row_internal` gives the proof). For each binary "
        "row we also searched every 2×2 confusion matrix of 1200 images with 560 to 640 positives for "
        "one whose accuracy, macro F1, precision and recall all round to the published six digits.\n",
        f"**{consistent} of {len(results)}** binary rows (Tables 1-2) are consistent with dataset-level "
        f"macro metrics. {on_grid} of {len(results)} accuracies are multiples of 1/1200, as a count of "
        "correct images over the whole validation set is. The gap between F1 and the mean of "
        "precision and recall alone rules out every split, stratified or not, whose smaller "
        f"validation class has more than {largest_class:.0f} images.\n",
        _markdown(
            [
                "Table",
                "Model",
                "accuracy × 1200 integer",
                "recall − accuracy",
                "(P+R)/2 − F1",
                "bound at 600/600",
                "gap needs a class ≤",
                "consistent",
                "matching matrices",
                "closest matrix (positives: cells)",
                "max error",
            ],
            lines,
        ),
    ]
    ours = [row for table in tables for row in table["rows"] if row["ours"] is not None]
    text.append("\n### Our per-batch versus dataset-level metrics\n")
    text.append(
        f"Per-batch: sklearn's macro scores of each batch of {batch_size} validation images "
        "(labels present in the batch only), then the plain mean over batches, the paper's "
        "suspected method. Dataset-level: one confusion matrix of all validation images.\n"
    )
    if ours:
        lines = []
        for row in ours:
            level, batch = row["ours"], row["ours"]["batch"]
            line = [row["variant"]]
            for name in ("accuracy", "f1", "precision", "recall"):
                line += [_f(level[name]), _f(batch[name])]
            line += [
                _f((level["precision"] + level["recall"]) / 2 - level["f1"]),
                _f((batch["precision"] + batch["recall"]) / 2 - batch["f1"]),
            ]
            lines.append(line)
        header = ["Variant"]
        for name in ("accuracy", "f1", "precision", "recall"):
            header += [f"{METRIC_TITLES[name]} dataset", "per-batch"]
        header += ["(P+R)/2 − F1 dataset", "per-batch"]
        text.append(_markdown(header, lines))
    else:
        text.append("No variant was run.\n")
    return "\n".join(text), results


def noise_sentences(tables: list[dict]) -> list[str]:
    sentences = []
    for dataset in dict.fromkeys(table["dataset"] for table in tables):
        sizes = {table["num_val"] for table in tables if table["dataset"] == dataset and table["num_val"]}
        for n in sorted(sizes):
            sentences.append(
                f"On {n} {dataset} validation images one image moves accuracy by "
                f"{100 / n:.3f} percentage points ({1 / n:.6f})."
            )
    for table in tables:
        if table["number"] is None:
            continue
        values = [float(row["paper"]["accuracy"]) for row in table["rows"]]
        n = PAPER_DATASETS[table["dataset"]].num_val
        spread = max(values) - min(values)
        sentences.append(
            f"The paper's Table {table['number']} accuracies span {spread:.6f}, {spread * n:.0f} images of its {n}."
        )
    return sentences


def summary_lines(tables: list[dict]) -> list[str]:
    lines = []
    for table in tables:
        label = f"**Table {table['number']}** ({table['name']})" if table["number"] else f"**{table['name']}**"
        paper_text = ""
        if table["paper_best"]:
            paper_best = next(row for row in table["rows"] if row["model"] == table["paper_best"])
            paper_text = f"; paper's best {MODELS[table['paper_best']]} ({paper_best['paper']['accuracy']})"
        if table["best"] is None:
            lines.append(f"- {label}: not run{paper_text}.")
            continue
        best = next(row for row in table["rows"] if row["model"] == table["best"])
        others = table["models_run"] - 1
        if others:
            models_are = "other model is" if others == 1 else "other models are"
            comparison = (
                f"{table['indistinguishable']} of {others} {models_are} statistically "
                f"indistinguishable from our best (exact McNemar p ≥ {ALPHA}, uncorrected)."
            )
        else:
            comparison = "No other model of this table was run to compare with."
        lines.append(
            f"- {label}: our best {MODELS[table['best']]} (accuracy {best['ours']['accuracy']:.6f}, "
            f"{table['models_run']} of {len(table['rows'])} models run){paper_text}. {comparison}"
        )
    return lines


def missing_note(missing: list[str]) -> str:
    """The report's opening note on variants of the grid without results. `dvc repro` runs every variant
    before the report, so only a run of aggregate alone has any: the aggregate job of `tumorbench slurm
    submit --allow-failed`, which trains nothing itself."""
    if not missing:
        return ""
    variants = (
        "1 variant of params.yaml's grid has"
        if len(missing) == 1
        else f"{len(missing)} variants of params.yaml's grid have"
    )
    return (
        f"**Missing variants**: {variants} no results here and show as \u201c\u2014\u201d: "
        f"{', '.join(missing)}. Their Slurm tasks failed or were not submitted; "
        "`tumorbench slurm resubmit JOBID` runs them (docs/SCALING.md).\n"
    )


def readme_text(tables: list[dict], audit_text: str, validity_text: str = "", missing: list[str] = ()) -> str:
    parts = ["# Results: Ahamed & Sadia (2022) reproduced\n", missing_note(missing), "## Summary\n"]
    for table in tables:
        if table["models_run"]:
            parts += [f"**{table_title(table)}**\n", compact_markdown(table)]
    parts += [
        "\n".join(summary_lines(tables)) + "\n",
        " ".join(noise_sentences(tables)) + "\n",
        LEGEND,
    ]
    for table in tables:
        parts += [f"## {table_title(table)}\n", table_markdown(table)]
    parts += [validity_text, audit_text]
    return "\n".join(part for part in parts if part)


# ---------------------------------------------------------------- curves


def curves_csv(column: str, values: dict[int, float]) -> str:
    """CSV `epoch,<column>`; only the header when there are no values."""
    lines = [f"epoch,{column}"] + [f"{epoch},{values[epoch]!r}" for epoch in sorted(values)]
    return "\n".join(lines) + "\n"


def write_curves(tables: list[dict], root: Path) -> list[str]:
    """plots/curves/val_loss/<table>.csv: epoch,model,val_loss of every model run in that table (the paper's
    Figures 8-9: one chart per table, a line per model); plots/curves/lr.csv: the learning rate per
    epoch (Figure 7). A table with no model run gets no file."""
    written, lr = [], {}
    for table in tables:
        lines = []
        for row in table["rows"]:
            folder = root / Variant(table["dataset"], row["model"], table["init"]).live_dir / "plots" / "metrics"
            if row["ours"] is None or not (folder / "val" / "loss.tsv").exists():
                continue
            loss = read_dvclive_series(folder / "val" / "loss.tsv")
            lines += [f"{epoch},{row['model']},{loss[epoch]!r}" for epoch in sorted(loss)]
            if not lr and (folder / "lr.tsv").exists():
                lr = read_dvclive_series(folder / "lr.tsv")
        if lines:
            path = root / CURVES / "val_loss" / f"{table['name']}.csv"
            atomic_write_text(path, "\n".join(["epoch,model,val_loss", *lines]) + "\n")
            written.append(str(path.relative_to(root)))
    path = root / CURVES / "lr.csv"
    atomic_write_text(path, curves_csv("lr", lr))
    written.append(str(path.relative_to(root)))
    return written


# ---------------------------------------------------------------- entry point


def summary(tables: list[dict], audit: list[dict]) -> dict:
    per_table, per_init = {}, {}
    for table in tables:
        run = [row for row in table["rows"] if row["ours"] is not None]
        for row in run:
            per_init.setdefault(table["init"], []).append(row["ours"]["accuracy"])
        if run:
            best = next(row for row in run if row["best_ours"])
            paper_best = next((row for row in table["rows"] if row["best_paper"]), None)
            per_table[table["name"]] = {
                "table": table["number"],
                "models_run": len(run),
                "best_model": table["best"],
                "best_accuracy": best["ours"]["accuracy"],
                "paper_best_model": table["paper_best"],
                "paper_best_accuracy": float(paper_best["paper"]["accuracy"]) if paper_best else None,
                "indistinguishable_from_best": table["indistinguishable"],
            }
    return {
        "tables": per_table,
        "mean_accuracy_per_init": {init: float(np.mean(values)) for init, values in per_init.items()},
        "variants": sum(len(values) for values in per_init.values()),
        "audit": {"binary_rows": len(audit), "consistent_with_dataset_level": sum(r["consistent"] for r in audit)},
    }


def write_figures(tables: list[dict], params: dict, root: Path) -> list[tuple[str, str]]:
    """The figures of reports/figures/ (tumorbench.report.figures); returns (caption, path under reports/)."""
    made = []

    def path(name: str, caption: str) -> Path:
        made.append((caption, (FIGURES / f"{name}.png").relative_to(REPORTS).as_posix()))
        return root / FIGURES / f"{name}.png"

    lr = {}
    for table in tables:
        run = [row for row in table["rows"] if row["ours"] is not None]
        if not run:
            continue
        curves, found = {}, {}
        for row in run:
            variant = Variant(table["dataset"], row["model"], table["init"])
            log = root / variant.live_dir / "plots" / "metrics"
            if (log / "val" / "loss.tsv").exists():
                curves[row["model"]] = read_dvclive_series(log / "val" / "loss.tsv")
            if not lr and (log / "lr.tsv").exists():
                lr = read_dvclive_series(log / "lr.tsv")
            found[row["model"]] = read_predictions(root / variant.predictions)
        title = table_title(table)
        names = next(iter(found.values()))["class_names"]
        figure = f"Fig. {8 if table['dataset'] == 'br35h' else 9}" if table["number"] else "validation loss"
        figures.validation_loss(curves, f"{title} ({figure})", path(f"val_loss_{table['name']}", f"{title}: {figure}"))
        figures.confusion_matrices(found, names, title, path(f"confusion_{table['name']}", f"{title}: confusion"))
        figures.roc_curves(found, names, title, path(f"roc_{table['name']}", f"{title}: ROC curves"))
        reliability = path(f"reliability_{table['name']}", f"{title}: reliability")
        figures.reliability_diagram(found, f"{title}: reliability", reliability)
    if lr:
        figures.learning_rate(lr, path("learning_rate", "Learning rate per epoch (Fig. 7)"))
    for dataset in params["datasets"]:
        overlays = {}
        for variant in all_variants(params):
            folder = root / explain_dir(variant)
            if variant.dataset == dataset and folder.is_dir():
                overlays[variant.name] = sorted(folder.glob("*.png"))
        if any(overlays.values()):
            caption = f"{dataset_title(dataset)}: where each model looks"
            figures.gradcam_grid(overlays, dataset_title(dataset), path(f"gradcam_{dataset}", caption))
    return made


def write_model_cards(tables: list[dict], params: dict, validity: dict, root: Path) -> int:
    written = 0
    with atomic_directory(root / MODEL_CARDS) as out:
        for table in tables:
            for row in table["rows"]:
                if row["ours"] is not None:
                    (out / f"{row['variant']}.md").write_text(model_card(row, table, params, validity, root))
                    written += 1
    return written


def aggregate(params: dict, root: Path = Path(".")) -> dict:
    """Write the tables, reports/README.md, reports/summary.json and the curves."""
    root = Path(root)
    tables = [build_table(params, dataset, init, root) for dataset, init in report_tables(params)]
    for table in tables:
        text = f"# {table_title(table)}\n\n{LEGEND}\n{table_markdown(table)}"
        atomic_write_text(root / TABLES_DIR / f"{table['name']}.md", text)
        atomic_write_text(root / TABLES_DIR / f"{table['name']}.csv", table_csv(table))
    audit_text, audit = audit_section(tables, params["train"]["batch_size"])
    validity_text, validity = validity_section(params, root)
    rankings_text, rankings = rankings_section(params, tables, root)
    made = write_figures(tables, params, root)
    figures_text = "## Figures\n\n" + "\n\n".join(f"![{caption}]({path})" for caption, path in made) + "\n"
    cards = write_model_cards(tables, params, validity, root)
    cards_text = (
        f"## Model cards\n\n{cards} variants, one card each in `reports/models/<variant>.md`: data and "
        f"split with hashes, training, metrics, where the model looks, validity, and the intended use: "
        f"{INTENDED_USE}.\n"
    )
    expected = all_variants(params) + grouped_variants(params) + cv_variants(params)
    missing = [v.name for v in expected if not (root / v.metrics).exists()]
    sections = "\n".join([validity_text, rankings_text, figures_text, cards_text])
    readme = readme_text(tables, audit_text, sections, missing)
    atomic_write_text(root / REPORTS / "README.md", readme)
    write_curves(tables, root)
    result = {**summary(tables, audit), "validity": validity, **rankings}
    if missing:
        result["missing_variants"] = missing
    atomic_write_json(root / SUMMARY, result)
    return result
