"""The report's "Which rankings hold" section: cross-validated scores per variant, every pair of models
compared over the folds, the paper's own rankings tested on its split, and calibration over folds.

- Per cross-validated variant (cv.datasets x cv.models x cv.inits, every fold evaluated): mean, sd
  and 95% t-interval of the per-fold accuracy and macro F1, the pooled out-of-fold accuracy with its
  bootstrap CI, and the ECE of the pooled out-of-fold probabilities before and after temperature
  scaling. The temperature of fold k is fitted on the other folds' predictions only, so the ECE after
  is measured on predictions the temperature never saw.
- Every pair of models of one dataset and init, over the same folds: the corrected resampled t-test
  (Nadeau and Bengio 2003) of the per-fold accuracies, Holm-adjusted over the pairs of that table.
- The paper's split: for each of the paper's tables, its ranking of the models run here, adjacent
  pair by adjacent pair, against exact McNemar tests on our predictions, Holm-adjusted over the steps.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from tumorbench.core.catalog import INITS, MODELS, dataset_title
from tumorbench.core.variants import FIGURES, REPORTS, Variant, cv_variants
from tumorbench.models.calibration import expected_calibration_error, fit_temperature, scale_probabilities
from tumorbench.report import figures
from tumorbench.report.results import read_metrics, read_predictions
from tumorbench.validity.stats import bootstrap_ci, corrected_resampled_t_test, holm, mcnemar_exact, t_interval

ALPHA = 0.05


def _fold_results(root: Path, variant: Variant, folds: list[int]) -> list[tuple[dict, dict]] | None:
    """(metrics, predictions) of every fold of a cross-validated variant, or None if one is missing."""
    out = []
    for k in folds:
        fold = Variant(variant.dataset, variant.model, variant.init, f"cv{k}")
        if not (root / fold.metrics).exists():
            return None
        out.append((read_metrics(root / fold.metrics), read_predictions(root / fold.predictions)))
    return out


def cross_fitted_probabilities(parts: list[dict]) -> tuple[np.ndarray, list[float]]:
    """The pooled out-of-fold probabilities, each fold's scaled by a temperature fitted on the other
    folds' predictions, and those temperatures."""
    scaled, temperatures = [], []
    for k, part in enumerate(parts):
        others = [p for j, p in enumerate(parts) if j != k]
        temperature = fit_temperature(
            np.concatenate([p["label"] for p in others]), np.concatenate([p["probs"] for p in others])
        )
        temperatures.append(temperature)
        scaled.append(scale_probabilities(part["probs"], temperature))
    return np.concatenate(scaled), temperatures


def cv_scores(params: dict, root: Path) -> dict[str, dict]:
    """summary.json's `cv`: per variant <dataset>-<model>-<init>, its scores over the folds."""
    folds = params["cv"]["folds"]
    results = {}
    seen = set()
    for fold_variant in cv_variants(params):
        variant = Variant(fold_variant.dataset, fold_variant.model, fold_variant.init)
        if variant.name in seen:
            continue
        seen.add(variant.name)
        found = _fold_results(root, variant, folds)
        if found is None:
            continue
        metrics, parts = [m for m, _ in found], [p for _, p in found]
        accuracy = t_interval([m["accuracy"] for m in metrics])
        f1 = t_interval([m["f1"] for m in metrics])
        labels = np.concatenate([p["label"] for p in parts])
        probs = np.concatenate([p["probs"] for p in parts])
        preds = np.concatenate([p["pred"] for p in parts])
        ci = bootstrap_ci(
            labels, preds, probs, probs.shape[1], n_resamples=params["eval"]["bootstrap"], seed=params["eval"]["seed"]
        )
        scaled, temperatures = cross_fitted_probabilities(parts)
        results[variant.name] = {
            "dataset": variant.dataset,
            "model": variant.model,
            "init": variant.init,
            "folds": len(folds),
            "fold_accuracy": [m["accuracy"] for m in metrics],
            "accuracy_mean": accuracy["mean"],
            "accuracy_sd": accuracy["sd"],
            "accuracy_ci": accuracy["ci"],
            "macro_f1_mean": f1["mean"],
            "macro_f1_sd": f1["sd"],
            "macro_f1_ci": f1["ci"],
            "pooled_accuracy": float((preds == labels).mean()),
            "pooled_accuracy_ci": ci["accuracy"],
            "n": int(labels.size),
            "ece": expected_calibration_error(labels, probs),
            "ece_temperature_scaled": expected_calibration_error(labels, scaled),
            "temperatures": temperatures,
        }
    return results


def comparisons(cv: dict[str, dict]) -> list[dict]:
    """summary.json's `comparisons`: every pair of models of one dataset and init, over the folds."""
    out = []
    tables = sorted({(r["dataset"], r["init"]) for r in cv.values()})
    for dataset, init in tables:
        run = [r for r in cv.values() if r["dataset"] == dataset and r["init"] == init]
        run.sort(key=lambda r: list(MODELS).index(r["model"]))
        pairs = []
        for a, b in combinations(run, 2):
            test = corrected_resampled_t_test(a["fold_accuracy"], b["fold_accuracy"], test_fraction=1 / a["folds"])
            pairs.append({"dataset": dataset, "init": init, "a": a["model"], "b": b["model"], **test})
        for pair, adjusted in zip(pairs, holm([p["p"] for p in pairs])):
            pair["p_holm"] = adjusted
            if adjusted >= ALPHA:
                pair["verdict"] = "not distinguishable"
            else:
                pair["verdict"] = "a better" if pair["mean_diff"] > 0 else "b better"
            del pair["t"]
            out.append(pair)
    return out


def paper_rankings(tables: list[dict]) -> list[dict]:
    """For each paper table with 2 or more models run: does its ranking by accuracy hold on our
    predictions? Adjacent steps of the paper's order, each an exact McNemar test, Holm-adjusted."""
    out = []
    for table in tables:
        run = [row for row in table["rows"] if row["ours"] is not None and row["paper"]]
        if not table["number"] or len(run) < 2:
            continue
        run.sort(key=lambda row: -float(row["paper"]["accuracy"]))
        steps = []
        for above, below in zip(run, run[1:]):
            test = mcnemar_exact(above["correct"], below["correct"])
            same_order = above["ours"]["accuracy"] > below["ours"]["accuracy"]
            steps.append({"above": above["model"], "below": below["model"], "same_order": same_order, **test})
        for step, adjusted in zip(steps, holm([s["p_value"] for s in steps])):
            step["p_holm"] = adjusted
            step["holds"] = step["same_order"] and adjusted < ALPHA
        out.append(
            {
                "table": table["number"],
                "dataset": table["dataset"],
                "init": table["init"],
                "order": [row["model"] for row in run],
                "steps": steps,
                "holds": all(s["holds"] for s in steps),
            }
        )
    return out


def _f(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}"


def cv_table(cv: dict[str, dict]) -> str:
    header = (
        "| variant | folds | accuracy mean ± sd | 95% t-interval | pooled accuracy [95% CI] | macro F1 mean ± sd "
        "| ECE | ECE, temperature scaled |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {name} | {r['folds']} | {_f(r['accuracy_mean'])} ± {_f(r['accuracy_sd'])} | "
        f"[{_f(r['accuracy_ci'][0])}, {_f(r['accuracy_ci'][1])}] | {_f(r['pooled_accuracy'])} "
        f"[{_f(r['pooled_accuracy_ci'][0])}, {_f(r['pooled_accuracy_ci'][1])}] | "
        f"{_f(r['macro_f1_mean'])} ± {_f(r['macro_f1_sd'])} | {_f(r['ece'])} | {_f(r['ece_temperature_scaled'])} |"
        for name, r in cv.items()
    ]
    return header + "\n".join(lines) + "\n"


def comparison_sentences(cv: dict[str, dict], pairs: list[dict]) -> list[str]:
    sentences = []
    for dataset, init in sorted({(r["dataset"], r["init"]) for r in cv.values()}):
        these = [p for p in pairs if p["dataset"] == dataset and p["init"] == init]
        where = f"{dataset_title(dataset)}, {INITS[init]}"
        if not these:
            sentences.append(f"- {where}: one model cross-validated, nothing to compare.")
            continue
        differ = [p for p in these if p["verdict"] != "not distinguishable"]
        named = "; ".join(
            f"{MODELS[p['a'] if p['verdict'] == 'a better' else p['b']]} beats "
            f"{MODELS[p['b'] if p['verdict'] == 'a better' else p['a']]} by {abs(p['mean_diff']):.4f} "
            f"(Holm p {p['p_holm']:.3g})"
            for p in differ
        )
        sentences.append(
            f"- {where}: {len(differ)} of {len(these)} pairs differ"
            + (f" ({named})" if differ else "")
            + f"; {len(these) - len(differ)} are not distinguishable at {ALPHA} after Holm."
        )
    return sentences


def ranking_sentences(rankings: list[dict]) -> list[str]:
    out = []
    for r in rankings:
        held = sum(s["holds"] for s in r["steps"])
        order = " > ".join(MODELS[m] for m in r["order"])
        out.append(
            f"- Table {r['table']} ({dataset_title(r['dataset'])}, {INITS[r['init']]}): the paper's order of the "
            f"{len(r['order'])} models run here, {order}, {'holds' if r['holds'] else 'does not hold'} on our "
            f"predictions: {held} of {len(r['steps'])} steps are in the same order and significant (exact "
            f"McNemar, Holm, {ALPHA})."
        )
    return out


def rankings_section(params: dict, tables: list[dict], root: Path) -> tuple[str, dict]:
    """The README's "Which rankings hold" section, and summary.json's `cv`, `comparisons` and
    `paper_rankings`."""
    cv = cv_scores(params, root)
    pairs = comparisons(cv)
    rankings = paper_rankings(tables)
    parts = ["## Which rankings hold\n"]
    if rankings:
        parts += [
            "On the paper's single split, the paper's own ranking of each table, step by step:\n",
            "\n".join(ranking_sentences(rankings)) + "\n",
        ]
    if cv:
        parts += [
            f"Cross-validated ({len(params['cv']['folds'])} folds; figshare's are the dataset author's "
            "patient-disjoint folds from cvind.mat, others stratified folds that keep grouped.group_by's groups "
            "together). Each pair of models of a table is compared over the folds with the corrected resampled "
            "t-test (Nadeau and Bengio 2003), Holm-adjusted over the pairs:\n",
            "\n".join(comparison_sentences(cv, pairs)) + "\n",
            cv_table(cv),
            "ECE: 15 equal-width bins of the pooled out-of-fold probabilities; temperature scaled: each fold's "
            "probabilities rescaled by a temperature fitted on the other folds only.\n",
        ]
        made = []
        for dataset, init in sorted({(r["dataset"], r["init"]) for r in cv.values()}):
            these = {MODELS[r["model"]]: r for r in cv.values() if r["dataset"] == dataset and r["init"] == init}
            name = f"cv_{dataset}-{init}"
            figures.cv_scores(these, f"{dataset_title(dataset)}, {INITS[init]}", root / FIGURES / f"{name}.png")
            made.append(
                f"![{dataset_title(dataset)}, {INITS[init]}: accuracy per fold]"
                f"({(FIGURES / f'{name}.png').relative_to(REPORTS).as_posix()})"
            )
        parts.append("\n\n".join(made) + "\n")
    else:
        parts.append(
            "No cross-validation ran (`cv.datasets` is empty), so no ranking of models is tested beyond the "
            "paper's split; see the README for the command that runs it.\n"
        )
    return "\n".join(parts), {"cv": cv, "comparisons": pairs, "paper_rankings": rankings}
