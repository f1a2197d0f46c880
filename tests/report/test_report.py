import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tumorbench.core.catalog import MODELS, load_paper_results
from tumorbench.core.params import load_params
from tumorbench.models.calibration import calibration_metrics
from tumorbench.models.metrics import batch_mean_metrics, dataset_metrics
from tumorbench.report.aggregate import COMPACT_WIDTH, ReportInputError, aggregate

N_VAL = 200
# errors at these validation positions: resnet18 is the best, efficientnet-b0 is clearly worse
ERRORS = {"resnet18": [0, 1], "efficientnet-b0": list(range(10))}


def _params(models):
    """The committed params.yaml, for these models on Br35H alone, without the validity stages' variants."""
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    params.update(datasets=["br35h"], models=models, inits=["scratch"], external={})
    params["train"]["batch_size"] = 32
    params["eval"].update(bootstrap=200, seed=0)
    params["grouped"].update(models=[], inits=[])
    return params


def _write_variant(root, model, errors, epochs=3, sample_ids=None, dataset="br35h"):
    variant = f"{dataset}-{model}-scratch"
    y_true = np.arange(N_VAL) % 2
    y_pred = y_true.copy()
    y_pred[errors] = 1 - y_pred[errors]
    probs = np.eye(2)[y_pred] * 0.9 + 0.05
    sample_ids = sample_ids or [f"img{i:04d}" for i in range(N_VAL)]
    (root / "plots" / "predictions").mkdir(parents=True, exist_ok=True)
    with open(root / "plots" / "predictions" / f"{variant}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sample_id", "label", "pred", "prob_0", "prob_1"])
        for row in zip(sample_ids, y_true, y_pred, probs[:, 0], probs[:, 1]):
            writer.writerow(row)
    metrics = dataset_metrics(y_true, y_pred, probs, 2)
    metrics.update(calibration_metrics(y_true, probs))
    metrics.update(
        batch=batch_mean_metrics(y_true, y_pred, probs, 32),
        best_epoch=epochs - 1,
        epochs=epochs,
        num_val=N_VAL,
        provenance={
            "prepared_images_md5": "a" * 32,
            "prepared_index_md5": "b" * 32,
            "split_md5": "c" * 32,
            "checkpoint_md5": model[:4] * 8,
            "weights_md5": None,
            "params_hash": "d" * 64,
        },
    )
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / f"{variant}.json").write_text(json.dumps(metrics))
    folder = root / "dvclive" / variant / "plots" / "metrics" / "val"
    folder.mkdir(parents=True)
    (folder / "loss.tsv").write_text(
        "step\tloss\n" + "".join(f"{step}\t{1.0 / (step + 1) + len(errors) / 100}\n" for step in range(epochs))
    )
    (folder.parent / "lr.tsv").write_text(
        "timestamp\tstep\tlr\n" + "".join(f"{1000 + step}\t{step}\t0.001\n" for step in range(epochs))
    )
    return metrics


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    ours = {model: _write_variant(root, model, errors) for model, errors in ERRORS.items()}
    summary = aggregate(_params(["resnet50", "resnet18", "efficientnet-b0"]), root)
    return root, ours, summary


def test_paper_results_has_48_rows_as_printed():
    rows = load_paper_results()
    assert len(rows) == 48
    assert [row["model"] for row in rows[:12]] == list(MODELS)
    b7 = next(row for row in rows if row["table"] == "1" and row["model"] == "efficientnet-b7")
    assert b7["accuracy"] == "0.995833" and b7["loss"] == "0.018193"
    assert {(row["table"], row["dataset"], row["init"]) for row in rows} == {
        ("1", "br35h", "scratch"),
        ("2", "br35h", "imagenet"),
        ("3", "figshare", "scratch"),
        ("4", "figshare", "imagenet"),
    }
    assert all(
        len(row[name].split(".")[1]) == 6 for row in rows for name in ("accuracy", "f1", "precision", "recall", "loss")
    )


def test_table_csv_has_ours_paper_difference_and_ci(report):
    root, ours, _ = report
    rows = {row["model"]: row for row in _read_csv(root / "reports" / "tables" / "br35h-scratch.csv")}
    assert list(rows) == list(MODELS)
    resnet18 = rows["resnet18"]
    assert float(resnet18["accuracy"]) == pytest.approx(0.99) == ours["resnet18"]["accuracy"]
    assert resnet18["accuracy_paper"] == "0.990833"
    assert float(resnet18["accuracy_diff"]) == pytest.approx(0.99 - 0.990833)
    for name in ("accuracy", "f1", "precision", "recall", "loss"):
        low, high = float(resnet18[f"{name}_ci_low"]), float(resnet18[f"{name}_ci_high"])
        assert low <= float(resnet18[name]) <= high
    assert float(resnet18["batch_f1"]) == pytest.approx(ours["resnet18"]["batch"]["f1"])
    assert resnet18["checkpoint_md5"] == "resn" * 8 and resnet18["params_hash"] == "d" * 64
    assert resnet18["weights_md5"] == ""


def test_missing_variants_are_missing_not_zero(report):
    root, _, _ = report
    rows = {row["model"]: row for row in _read_csv(root / "reports" / "tables" / "br35h-scratch.csv")}
    for model in ("resnet50", "googlenet", "efficientnet-b7"):
        assert rows[model]["run"] == "0"
        assert rows[model]["accuracy"] == "" and rows[model]["mcnemar_p"] == ""
        assert rows[model]["accuracy_paper"] != ""
    markdown = (root / "reports" / "tables" / "br35h-scratch.md").read_text()
    resnet50_line = next(line for line in markdown.splitlines() if line.startswith("| ResNet-50 |"))
    assert "—" in resnet50_line and "0.000000" not in resnet50_line
    assert "0.988333" in resnet50_line  # the paper's value is still shown


def test_best_markers_and_mcnemar(report):
    root, _, _ = report
    rows = {row["model"]: row for row in _read_csv(root / "reports" / "tables" / "br35h-scratch.csv")}
    assert rows["resnet18"]["best_ours"] == "1" and rows["efficientnet-b0"]["best_ours"] == "0"
    assert rows["efficientnet-b7"]["best_paper"] == "1"
    assert float(rows["resnet18"]["mcnemar_p"]) == 1.0
    b0 = rows["efficientnet-b0"]
    assert (b0["mcnemar_b"], b0["mcnemar_c"]) == ("8", "0")
    assert float(b0["mcnemar_p"]) == pytest.approx(2 * 0.5**8)
    assert b0["significant"] == "yes"
    markdown = (root / "reports" / "tables" / "br35h-scratch.md").read_text()
    assert "| ResNet-18 | ours |" in markdown and "| EfficientNet-B7 | paper |" in markdown
    assert "McNemar p vs our best" in markdown and "0.00781 (b=8, c=0)" in markdown


def test_all_four_tables_are_written_with_paper_values(report):
    root, _, _ = report
    for name, first_accuracy in [
        ("br35h-scratch", "0.988333"),
        ("br35h-imagenet", "0.990833"),
        ("figshare-scratch", "0.965742"),
        ("figshare-imagenet", "0.970636"),
    ]:
        rows = _read_csv(root / "reports" / "tables" / f"{name}.csv")
        assert len(rows) == 12 and rows[0]["accuracy_paper"] == first_accuracy
        assert (root / "reports" / "tables" / f"{name}.md").exists()


def test_summary_json(report):
    root, _, summary = report
    assert json.loads((root / "reports" / "summary.json").read_text()) == summary
    table = summary["tables"]["br35h-scratch"]
    assert table["best_model"] == "resnet18" and table["best_accuracy"] == pytest.approx(0.99)
    assert table["paper_best_model"] == "efficientnet-b7" and table["models_run"] == 2
    assert table["indistinguishable_from_best"] == 0
    assert list(summary["tables"]) == ["br35h-scratch"]
    assert summary["mean_accuracy_per_init"] == {"scratch": pytest.approx((0.99 + 0.95) / 2)}
    assert summary["variants"] == 2
    assert summary["audit"] == {"binary_rows": 24, "consistent_with_dataset_level": 0}


def test_readme_has_summary_tables_audit_and_noise(report):
    root, _, _ = report
    text = (root / "reports" / "README.md").read_text()
    assert text.index("## Summary") < text.index("## Table 1") < text.index("## Audit of the paper's metrics")
    assert "our best ResNet-18" in text and "paper's best EfficientNet-B7 (0.995833)" in text
    assert "0 of 1 other model is statistically indistinguishable" in text
    assert "**0 of 24** binary rows" in text
    assert "On 200 br35h validation images one image moves accuracy by 0.500 percentage points" in text
    assert "br35h-resnet18-scratch" in text.split("per-batch versus dataset-level")[1]


def test_curves_have_one_file_per_table_run_with_a_line_per_model(report):
    root, _, _ = report
    rows = _read_csv(root / "plots" / "curves" / "val_loss" / "br35h-scratch.csv")
    assert list(rows[0]) == ["epoch", "model", "val_loss"]
    resnet18 = [row for row in rows if row["model"] == "resnet18"]
    assert [row["epoch"] for row in resnet18] == ["0", "1", "2"]
    assert float(resnet18[0]["val_loss"]) == pytest.approx(1.02)
    assert {row["model"] for row in rows} == {"resnet18", "efficientnet-b0"}  # the models run, no others
    lr = _read_csv(root / "plots" / "curves" / "lr.csv")
    assert list(lr[0]) == ["epoch", "lr"] and [float(row["lr"]) for row in lr] == [0.001] * 3
    assert sorted(p.name for p in (root / "plots" / "curves" / "val_loss").iterdir()) == ["br35h-scratch.csv"]


def test_readme_opens_with_a_compact_table_per_table_run_that_fits_100_characters(report):
    root, ours, _ = report
    text = (root / "reports" / "README.md").read_text()
    compact = text[text.index("## Summary") : text.index("\n## Table 1")]
    lines = [line for line in compact.splitlines() if line.startswith("|")]
    assert lines[0] == "| Model | Accuracy [95% CI] | Paper | Δ | Macro F1 |"
    assert len(lines) == 2 + 2  # header, rule, the two models run
    assert all(len(line) <= COMPACT_WIDTH for line in lines)
    resnet18 = next(line for line in lines if "ResNet-18" in line)
    assert resnet18.startswith("| **ResNet-18** | 0.9900 [") and "| 0.9908 | -0.0008 |" in resnet18
    assert resnet18.endswith(f"| {ours['resnet18']['f1']:.4f} |")


def test_a_dataset_of_the_users_own_gets_its_own_table_without_paper_columns(tmp_path):
    for model, errors in ERRORS.items():
        _write_variant(tmp_path, model, errors, dataset="kaggle4")
    params = {**_params(["resnet18", "efficientnet-b0"]), "datasets": ["kaggle4"]}
    summary = aggregate(params, tmp_path)
    rows = _read_csv(tmp_path / "reports" / "tables" / "kaggle4-scratch.csv")
    assert [row["model"] for row in rows] == ["resnet18", "efficientnet-b0"]
    assert rows[0]["table"] == "" and rows[0]["accuracy_paper"] == "" and rows[0]["accuracy_diff"] == ""
    assert summary["tables"]["kaggle4-scratch"]["best_model"] == "resnet18"
    assert summary["tables"]["kaggle4-scratch"]["paper_best_accuracy"] is None
    text = (tmp_path / "reports" / "README.md").read_text()
    assert "| Model | Accuracy [95% CI] | Macro F1 |" in text and "## kaggle4, trained from scratch" in text
    assert "**kaggle4-scratch**: our best ResNet-18" in text
    assert (tmp_path / "reports" / "tables" / "br35h-scratch.csv").exists()  # the paper's tables, not run


def test_variants_with_different_validation_order_are_rejected(tmp_path):
    _write_variant(tmp_path, "resnet18", [0])
    _write_variant(tmp_path, "resnet50", [1], sample_ids=[f"x{i}" for i in range(N_VAL)])
    with pytest.raises(ValueError, match="another order"):
        aggregate(_params(["resnet50", "resnet18"]), tmp_path)


def test_missing_predictions_name_the_file(tmp_path):
    _write_variant(tmp_path, "resnet18", [0])
    (tmp_path / "plots" / "predictions" / "br35h-resnet18-scratch.csv").unlink()
    with pytest.raises(ReportInputError, match="br35h-resnet18-scratch.csv"):
        aggregate(_params(["resnet18"]), tmp_path)


def test_summary_with_one_model_run_says_there_is_nothing_to_compare(tmp_path):
    _write_variant(tmp_path, "resnet18", [0])
    aggregate(_params(["resnet18"]), tmp_path)
    text = (tmp_path / "reports" / "README.md").read_text()
    assert "1 of 12 models run" in text and "No other model of this table was run to compare with." in text
    assert "other models are" not in text


def test_figures_are_png_files_the_readme_embeds_and_each_variant_has_a_model_card(report):
    root, ours, _ = report
    figures = root / "reports" / "figures"
    names = sorted(p.name for p in figures.iterdir())
    assert names == [
        "confusion_br35h-scratch.png",
        "learning_rate.png",
        "reliability_br35h-scratch.png",
        "roc_br35h-scratch.png",
        "val_loss_br35h-scratch.png",
    ]
    assert all((figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in names)
    readme = (root / "reports" / "README.md").read_text()
    for name in names:
        assert f"](figures/{name})" in readme
    cards = sorted(p.name for p in (root / "reports" / "models").iterdir())
    assert cards == ["br35h-efficientnet-b0-scratch.md", "br35h-resnet18-scratch.md"]
    card = (root / "reports" / "models" / "br35h-resnet18-scratch.md").read_text()
    assert "research only, not for diagnostic use" in card
    assert f"| accuracy | {ours['resnet18']['accuracy']:.4f} |" in card and "0.990833" in card
    assert "md5 `" + "resn" * 8 + "`" in card  # the checkpoint's hash
    assert f"expected calibration error {ours['resnet18']['ece']:.4f} (15 bins)" in card


def test_the_aggregate_stage_alone_names_the_missing_variants(tmp_path):
    """stages/aggregate.py on a partial grid, as the aggregate of `tumorbench slurm submit --allow-failed` runs
    it; a complete grid's report has no such note (the other tests)."""
    for model, errors in ERRORS.items():
        _write_variant(tmp_path, model, errors)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(["resnet50", "resnet18", "efficientnet-b0"])))
    stage = Path(__file__).resolve().parents[2] / "stages" / "aggregate.py"
    result = subprocess.run([sys.executable, str(stage)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "missing variants: br35h-resnet50-scratch" in result.stdout
    readme = (tmp_path / "reports" / "README.md").read_text().splitlines()
    assert readme[2].startswith("**Missing variants**: 1 variant of params.yaml's grid has no results here")
    assert "br35h-resnet50-scratch. Their Slurm tasks failed" in readme[2]
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["missing_variants"] == ["br35h-resnet50-scratch"]


# ------------------------------------------------------ cross-validation, comparisons, calibration

FOLD_N = 60
# errors per fold: resnet50 and resnet18 alike, efficientnet-b0 clearly worse in every fold
FOLD_ERRORS = {"resnet50": [4, 3, 3, 4, 2], "resnet18": [3, 4, 2, 3, 4], "efficientnet-b0": [15, 17, 14, 16, 15]}


def _write_fold(root, model, fold, errors, confidence=0.99):
    """A fold's metrics and predictions, overconfident: every prediction at `confidence`."""
    variant = f"br35h-{model}-scratch-cv{fold}"
    y_true = np.arange(FOLD_N) % 2
    y_pred = y_true.copy()
    y_pred[:errors] = 1 - y_pred[:errors]
    probs = np.where(np.eye(2)[y_pred] == 1, confidence, 1 - confidence)
    with open(root / "plots" / "predictions" / f"{variant}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sample_id", "label", "pred", "prob_0", "prob_1"])
        writer.writerows(zip([f"f{fold}-{i}" for i in range(FOLD_N)], y_true, y_pred, probs[:, 0], probs[:, 1]))
    metrics = dataset_metrics(y_true, y_pred, probs, 2)
    metrics.update(calibration_metrics(y_true, probs))
    metrics.update(batch=batch_mean_metrics(y_true, y_pred, probs, 32), provenance={"split_md5": "e" * 32})
    (root / "metrics" / f"{variant}.json").write_text(json.dumps(metrics))


def _cv_project(root, skip=()):
    models = list(FOLD_ERRORS)
    for model in models:
        _write_variant(root, model, ERRORS.get(model, [0, 1, 2]))
        for fold, errors in enumerate(FOLD_ERRORS[model], start=1):
            if (model, fold) not in skip:
                _write_fold(root, model, fold, errors)
    params = _params(models)
    params["cv"].update(datasets=["br35h"], models=models, inits=["scratch"], folds=[1, 2, 3, 4, 5])
    return params


def test_cross_validated_scores_comparisons_and_temperature(tmp_path):
    summary = aggregate(_cv_project(tmp_path), tmp_path)
    assert set(summary["cv"]) == {f"br35h-{m}-scratch" for m in FOLD_ERRORS}
    for model, errors in FOLD_ERRORS.items():
        r = summary["cv"][f"br35h-{model}-scratch"]
        accuracy = 1 - np.array(errors) / FOLD_N
        assert r["folds"] == 5 and r["n"] == 5 * FOLD_N
        assert r["fold_accuracy"] == pytest.approx(accuracy.tolist())
        assert r["accuracy_mean"] == pytest.approx(accuracy.mean())
        assert r["accuracy_sd"] == pytest.approx(accuracy.std(ddof=1))
        assert r["accuracy_ci"][0] < r["accuracy_mean"] < r["accuracy_ci"][1]
        assert r["pooled_accuracy"] == pytest.approx(1 - sum(errors) / (5 * FOLD_N))
        assert r["pooled_accuracy_ci"][0] < r["pooled_accuracy"] < r["pooled_accuracy_ci"][1]
        # 0.99 confident at 0.74-0.95 accuracy: temperatures above 1, fitted on the other folds, calibrate
        assert all(t > 1 for t in r["temperatures"]) and r["ece_temperature_scaled"] < r["ece"] / 3
    verdicts = {(c["a"], c["b"]): c["verdict"] for c in summary["comparisons"]}
    assert verdicts == {
        ("resnet50", "resnet18"): "not distinguishable",
        ("resnet50", "efficientnet-b0"): "a better",
        ("resnet18", "efficientnet-b0"): "a better",
    }
    assert all(c["p"] <= c["p_holm"] <= 1 and c["dataset"] == "br35h" for c in summary["comparisons"])
    readme = (tmp_path / "reports" / "README.md").read_text()
    assert "## Which rankings hold" in readme
    assert "2 of 3 pairs differ" in readme and "1 are not distinguishable at 0.05 after Holm" in readme
    assert "](figures/cv_br35h-scratch.png)" in readme
    assert (tmp_path / "reports" / "figures" / "cv_br35h-scratch.png").read_bytes()[:4] == b"\x89PNG"


def test_a_variant_missing_a_fold_is_left_out_and_named(tmp_path):
    summary = aggregate(_cv_project(tmp_path, skip={("resnet50", 3)}), tmp_path)
    assert set(summary["cv"]) == {"br35h-resnet18-scratch", "br35h-efficientnet-b0-scratch"}
    assert summary["missing_variants"] == ["br35h-resnet50-scratch-cv3"]
    assert [(c["a"], c["b"]) for c in summary["comparisons"]] == [("resnet18", "efficientnet-b0")]


def test_the_papers_ranking_is_tested_step_by_step(report):
    _, _, summary = report
    (ranking,) = summary["paper_rankings"]
    paper = {r["model"]: float(r["accuracy"]) for r in load_paper_results() if r["table"] == "1"}
    assert ranking["table"] == 1 and ranking["order"] == sorted(ERRORS, key=lambda m: -paper[m])
    (step,) = ranking["steps"]
    # 8 validation images efficientnet-b0 gets wrong and resnet18 right, none the other way: p = 2 / 2**8
    assert step["p_value"] == pytest.approx(2 / 2**8) and step["p_holm"] == step["p_value"]
    assert step["holds"] == (step["same_order"] and step["p_value"] < 0.05)
    assert ranking["holds"] == step["holds"]
