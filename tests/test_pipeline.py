"""The pipeline end to end through DVC, on generated data and on the real data beside the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from conftest import TINY, dvc, make_project, set_params

from tumorbench.core.fileio import md5_file
from tumorbench.core.params import load_params
from tumorbench.data.prepare import prepare
from tumorbench.data.prepared import read_index
from tumorbench.data.splits import make_split
from tumorbench.models.architectures import build_model, weights_path
from tumorbench.models.inference import predict
from tumorbench.models.metrics import dataset_metrics
from tumorbench.models.runtime import resolved_precision
from tumorbench.models.training import TrainConfig, fit

pytestmark = pytest.mark.slow  # end-to-end DVC runs and training: minutes in all

METRIC_KEYS = {"accuracy", "f1", "precision", "recall", "loss"}
EMBEDDED_EXTERNAL = yaml.safe_dump(yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())["external"])


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME holding 'ImageNet weights' for ResNet-18 under the file name torchvision uses."""
    home = tmp_path_factory.mktemp("torch_home")
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    try:
        file, _ = weights_path("resnet18")
    finally:
        if previous is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = previous
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), file)
    return home


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory, torch_home) -> Path:
    validity = {
        "grouped__datasets": ["br35h", "figshare"],
        "grouped__models": ["resnet18"],
        "cv__datasets": ["br35h", "figshare"],  # 5 folds each: figshare's from its cvind.mat
        "external": yaml.safe_load(EMBEDDED_EXTERNAL),
    }
    project = make_project(
        tmp_path_factory.mktemp("tiny") / "project", **{**TINY, "inits": ["scratch", "imagenet"], **validity}
    )
    dvc("repro", cwd=project, env={"TORCH_HOME": str(torch_home)})
    return project


def lock_md5s(project: Path) -> dict[str, str]:
    """path -> md5 of every output dvc.lock records."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_embedded_pipeline_runs_every_stage_and_metrics_show_lists_every_variant(tiny_project):
    shown = json.loads(dvc("metrics", "show", "--json", cwd=tiny_project).stdout)
    files = shown[""]["data"]  # "" is the workspace
    variants = [f"{d}-resnet18-{i}" for d in ("br35h", "figshare") for i in ("scratch", "imagenet")]
    for variant in variants:
        metrics = files[f"metrics/{variant}.json"]["data"]
        assert METRIC_KEYS <= set(metrics)
        assert 0 <= metrics["accuracy"] <= 1
        used = {"device": "cpu", "precision": resolved_precision("auto", torch.device("cpu"))}
        assert metrics["compute"] == {"train": used, "evaluate": used}
    for table in ("br35h-scratch", "br35h-imagenet", "figshare-scratch", "figshare-imagenet"):
        assert (tiny_project / "reports" / "tables" / f"{table}.md").exists()
        assert (tiny_project / "reports" / "tables" / f"{table}.csv").exists()
    report = (tiny_project / "reports" / "README.md").read_text()
    assert "Audit of the paper's metrics" in report and "McNemar" in report


def test_the_validity_stages_write_duplicates_a_grouped_split_the_leakage_table_and_external_results(tiny_project):
    for dataset in ("br35h", "figshare"):
        report = json.loads((tiny_project / "reports" / "duplicates" / f"{dataset}.json").read_text())
        assert {"exact", "near", "threshold", "label_conflicts"} <= set(report) and report["threshold"] == 4
        assert (tiny_project / "reports" / "duplicates" / f"{dataset}.png").stat().st_size > 1000
        grouped = json.loads((tiny_project / "data" / "splits" / f"{dataset}-grouped.json").read_text())
        assert {"train", "val", "params"} <= set(grouped) and grouped["groups"]["crossing"] == 0
        metrics = json.loads((tiny_project / "metrics" / f"{dataset}-resnet18-scratch-grouped.json").read_text())
        assert METRIC_KEYS <= set(metrics)  # the same keys as the paper split's
    external = json.loads((tiny_project / "metrics/external/generated/br35h-resnet18-scratch.json").read_text())
    assert {"all", "clean", "overlap"} <= set(external)
    assert external["overlap"]["exact"] >= 1 and external["overlap"]["exact"] + external["overlap"]["near"] >= 8
    assert external["clean"]["n"] == external["all"]["n"] - external["overlap"]["exact"] - external["overlap"]["near"]
    assert (tiny_project / "metrics/external/generated/br35h-resnet18-imagenet-grouped.json").exists() is False
    assert (tiny_project / "metrics/external/generated/br35h-resnet18-scratch-grouped.json").exists()
    readme = (tiny_project / "reports" / "README.md").read_text()
    validity = readme[readme.index("## Validity") : readme.index("## Audit")]
    for part in ("### Duplicates", "### Leakage", "### External test sets", "**Act on it:**"):
        assert part in validity
    assert "| br35h ResNet-18 scratch |" in validity and "| generated | br35h-resnet18-scratch |" in validity


def test_cross_validation_trains_every_fold_and_the_summary_scores_them(tiny_project):
    index = read_index(tiny_project / "data" / "prepared" / "figshare" / "index.csv")
    folds = json.loads((tiny_project / "data" / "splits" / "figshare-cv.json").read_text())
    assert folds["source"] == "cvind.mat"
    cv_fold = {row["sample_id"]: int(row["cv_fold"]) for row in index}
    for k, members in enumerate(folds["folds"], 1):
        assert members and {cv_fold[sample] for sample in members} == {k}
    br35h = json.loads((tiny_project / "data" / "splits" / "br35h-cv.json").read_text())
    assert br35h["groups"]["crossing"] == 0 and len(br35h["folds"]) == 5
    for dataset in ("br35h", "figshare"):
        for k in range(1, 6):
            metrics = json.loads((tiny_project / "metrics" / f"{dataset}-resnet18-scratch-cv{k}.json").read_text())
            assert METRIC_KEYS | {"ece", "brier", "nll"} <= set(metrics)
            assert 0 <= metrics["ece"] <= 1 and metrics["nll"] > 0
    summary = json.loads((tiny_project / "reports" / "summary.json").read_text())
    assert set(summary["cv"]) == {"br35h-resnet18-scratch", "figshare-resnet18-scratch"}
    for scores in summary["cv"].values():
        assert scores["folds"] == 5 and len(scores["fold_accuracy"]) == 5
        assert scores["accuracy_ci"][0] <= scores["accuracy_mean"] <= scores["accuracy_ci"][1]
    assert summary["comparisons"] == []  # one model cross-validated: no pair to compare
    readme = (tiny_project / "reports" / "README.md").read_text()
    assert "## Which rankings hold" in readme


def test_a_new_duplicates_threshold_reruns_the_validity_stages_but_not_the_papers_grid(tiny_project, tmp_path):
    project = shutil.copytree(tiny_project, tmp_path / "copy", symlinks=True)
    set_params(project, duplicates__threshold=2)
    status = dvc("status", "--json", cwd=project).stdout
    changed = set(json.loads(status))
    assert {"duplicates@br35h", "duplicates@figshare"} <= changed
    assert not any(name.startswith(("split@", "train@", "evaluate@")) for name in changed)
    out = dvc("repro", cwd=project).stdout
    assert "Stage 'train@br35h-resnet18-scratch' didn't change, skipping" in out
    assert "Running stage 'train@" not in out


def test_provenance_hashes_equal_the_ones_dvc_lock_records(tiny_project, torch_home):
    lock = lock_md5s(tiny_project)
    for metrics_file in sorted((tiny_project / "metrics").glob("*-resnet18-*.json")):
        variant = metrics_file.stem
        dataset = variant.split("-")[0]
        provenance = json.loads(metrics_file.read_text())["provenance"]
        assert provenance["prepared_images_md5"] == lock[f"data/prepared/{dataset}/images.npy"]
        assert provenance["prepared_index_md5"] == lock[f"data/prepared/{dataset}/index.csv"]
        protocol = variant.rsplit("-", 1)[1]  # the split it trained on; every cv fold reads the one -cv file
        split = (
            f"{dataset}-cv"
            if re.fullmatch(r"cv\d+", protocol)
            else f"{dataset}-grouped"
            if protocol == "grouped"
            else dataset
        )
        assert provenance["split_md5"] == lock[f"data/splits/{split}.json"]
        assert provenance["checkpoint_md5"] == lock[f"models/{variant}.pt"]
        if variant.endswith("imagenet"):
            assert provenance["weights_md5"] == md5_file(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
        else:
            assert provenance["weights_md5"] is None
    # the table's full hashes are the same values
    rows = {r["model"]: r for r in csv_rows(tiny_project / "reports" / "tables" / "br35h-imagenet.csv")}
    assert rows["resnet18"]["checkpoint_md5"] == lock["models/br35h-resnet18-imagenet.pt"]
    assert rows["resnet50"]["checkpoint_md5"] == ""  # not run: missing, never zero


def csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_plots_show_renders_the_loss_curves(tiny_project):
    dvc("plots", "show", "-o", "html", cwd=tiny_project)
    page = (tiny_project / "html" / "index.html").read_text()
    assert "plots/curves/val_loss/br35h-scratch.csv" in page  # Figure 8: a chart per table, a line per model
    assert "Learning rate per epoch" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRAWN = re.compile(r'<(svg|canvas)\b[^>]*\bclass="marks"')  # what vega-embed draws, one per chart


def render(page: Path, profile: Path) -> tuple[str, str]:
    """The page's DOM after headless Chromium ran its scripts with no network at all, and its console."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)
    return done.stdout, "\n".join(line for line in done.stderr.splitlines() if ":CONSOLE" in line)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_plots_show_draws_every_chart_in_a_browser_without_network(tiny_project, tmp_path):
    dvc("plots", "show", "-o", str(tmp_path / "offline"), cwd=tiny_project)
    page = tmp_path / "offline" / "index.html"
    source = page.read_text()
    assert "cdn.jsdelivr.net" not in source and "<script src=" not in source
    charts = source.count("vegaEmbed('#")
    assert charts >= 5  # validation loss per table, learning rate, confusion matrices, ROC curves
    dom, console = render(page, tmp_path / "profile")
    assert len(DRAWN.findall(dom)) == charts, console
    assert "Uncaught" not in console, console
    # DVC's own page loads the same libraries from a CDN: without network it draws nothing
    dvc("plots", "show", "--html-template", "", "-o", str(tmp_path / "cdn"), cwd=tiny_project, check=False)
    cdn_page = tmp_path / "cdn" / "index.html"
    if cdn_page.exists() and "cdn.jsdelivr.net" in cdn_page.read_text():
        dom, _ = render(cdn_page, tmp_path / "profile-cdn")
        assert len(DRAWN.findall(dom)) == 0


def test_experiment_with_more_epochs_shows_in_metrics_diff(tiny_project, torch_home):
    from conftest import run

    run(["git", "add", "-A"], cwd=tiny_project)
    run(["git", "commit", "-qm", "baseline results"], cwd=tiny_project)
    dvc(
        "exp",
        "run",
        "-S",
        "train.epochs=3",
        "-S",
        "datasets=[br35h]",
        "-S",
        "grouped.datasets=[br35h]",
        "-S",
        "inits=[scratch]",
        "-S",
        "cv.datasets=[]",
        cwd=tiny_project,
        env={"TORCH_HOME": str(torch_home)},
    )
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=tiny_project).stdout)
    changed = diff.get("diff", diff)["metrics/br35h-resnet18-scratch.json"]
    assert changed["epochs"]["old"] == 2 and changed["epochs"]["new"] == 3
    assert changed["provenance.params_hash"]["old"] != changed["provenance.params_hash"]["new"]


def test_real_data_from_local_copies_gives_the_published_counts(tmp_path, shared_data):
    project = make_project(
        tmp_path / "project",
        data__image_size=32,
        data__br35h={"source": "path", "path": str(shared_data / "br35h"), "url": "", "sha256": ""},
        data__figshare={"source": "path", "path": str(shared_data / "figshare-jpg"), "url": "", "sha256": ""},
    )
    dvc("repro", "split@br35h", "split@figshare", cwd=project)
    br35h = json.loads((project / "data/prepared/br35h/report.json").read_text())
    figshare = json.loads((project / "data/prepared/figshare/report.json").read_text())
    assert br35h["counts"] == {"no": 1500, "yes": 1500} and br35h["unreadable"] == []
    assert figshare["counts"] == {"meningioma": 708, "glioma": 1426, "pituitary": 930}
    assert figshare["n_patients"] == 233
    split = json.loads((project / "data/splits/br35h.json").read_text())
    assert split["counts"]["val"] == {"no": 600, "yes": 600}
    split = json.loads((project / "data/splits/figshare.json").read_text())  # 1226, as the paper's accuracies imply
    assert split["counts"]["val"] == {"meningioma": 283, "glioma": 571, "pituitary": 372}


def test_real_br35h_resnet18_from_scratch_reaches_80_percent_in_5_epochs_at_64px(tmp_path, shared_data):
    prepared = tmp_path / "prepared"
    prepare(shared_data / "br35h", prepared, 64, 0.01, "br35h")
    split = make_split(prepared / "index.csv", prepared / "images.npy", 0.4, 42, "none", "br35h")
    rows = read_index(prepared / "index.csv")
    images = np.load(prepared / "images.npy")
    labels = np.array([int(r["label"]) for r in rows])
    position = {r["sample_id"]: i for i, r in enumerate(rows)}
    train = np.array([position[s] for s in split["train"]])
    val = np.array([position[s] for s in split["val"]])
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cfg = TrainConfig.from_params(params, "scratch")
    cfg.epochs = 5
    torch.manual_seed(0)
    model, _ = build_model("resnet18", 2, "scratch", 64)
    fit(
        model,
        images[train],
        labels[train],
        images[val],
        labels[val],
        cfg,
        checkpoint_path=tmp_path / "best.pt",
        live_dir=None,
        fingerprint="real",
        checkpoint_meta={},
        resume_dir=tmp_path / "resume",
        progress=False,
    )
    model.load_state_dict(torch.load(tmp_path / "best.pt", weights_only=True)["model"])
    probs = predict(model, torch.from_numpy(images[val]), cfg.mean, cfg.std).double().numpy()
    metrics = dataset_metrics(labels[val], probs.argmax(1), probs, 2)
    print(f"real Br35H, ResNet-18 scratch, 64 px, 5 epochs: {metrics}")
    assert metrics["accuracy"] >= 0.80
