"""Where the pipeline's files live, and the names and provenance of one variant (dataset x model x init).

Every path a stage reads or writes comes from here; dvc.yaml declares the same ones (a test checks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tumorbench.core.fileio import md5_file
from tumorbench.core.params import params_hash, select, train_param_keys

RAW = Path("data/raw")  # data/raw/<dataset>/: the extracted download
PREPARED = Path("data/prepared")  # data/prepared/<dataset>/: images.npy, index.csv, report.json
SPLITS = Path("data/splits")  # data/splits/<dataset>.json, <dataset>-grouped.json, <dataset>-cv.json
HASHES = Path("data/hashes")  # data/hashes/<dataset>.csv: every sample's file, pixel and perceptual hashes
DOWNLOADS = Path(".cache/downloads")  # partial and finished downloads, outside every output
# Per-variant resume states, outside every output (DVC deletes declared outputs before a stage runs).
# TUMORBENCH_RESUME moves them: a Slurm task, working in a throw-away clone, points it at shared storage
# (tumorbench.cluster.slurm) so that its requeued or resubmitted successor continues from the last epoch.
RESUME = Path(os.environ.get("TUMORBENCH_RESUME") or ".cache/resume")
REPORTS = Path("reports")
DUPLICATES = REPORTS / "duplicates"  # <dataset>.json and .png
TABLES_DIR = REPORTS / "tables"
FIGURES = REPORTS / "figures"
MODEL_CARDS = REPORTS / "models"
PLOTS_TEMPLATE = Path("plots/offline_template.html")  # .dvc/config names it as plots.html_template
CURVES = Path("plots/curves")  # lr.csv, and val_loss/<dataset>-<init>.csv
SUMMARY = REPORTS / "summary.json"
EXTERNAL = Path("metrics/external")  # <name>/<variant>.json and .csv
# The split a variant trains on: the paper's, the grouped one, or fold k of the cross-validation, whose
# protocol is "cv<k>" (the variant <dataset>-<model>-<init>-cv<k>, the stage train_cv@<...>-<k>).
PROTOCOLS = ("paper", "grouped", "cv")


def raw_dir(dataset: str) -> Path:
    return RAW / dataset


def prepared_dir(dataset: str) -> Path:
    return PREPARED / dataset


def cv_fold(protocol: str) -> tuple[str, int | None]:
    """(the split protocol, the fold): ("cv", 3) for "cv3", ("grouped", None) for "grouped"."""
    if protocol.startswith("cv") and protocol[2:].isdigit() and int(protocol[2:]) >= 1:
        return "cv", int(protocol[2:])
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: one of paper, grouped, cv<fold> (cv1, cv2, ...)")
    return protocol, None


def split_path(dataset: str, protocol: str = "paper") -> Path:
    """The split file; every fold of the cross-validation reads the one <dataset>-cv.json."""
    return SPLITS / f"{dataset}{protocol_suffix(cv_fold(protocol)[0])}.json"


def hashes_path(dataset: str) -> Path:
    return HASHES / f"{dataset}.csv"


def duplicates_report(dataset: str) -> Path:
    return DUPLICATES / f"{dataset}.json"


def stage_name(stage: str, protocol: str, item: str) -> str:
    """dvc.yaml's name of a stage run: split@br35h, split_grouped@br35h, evaluate_grouped@br35h-resnet18-scratch,
    train_cv@figshare-resnet18-scratch-3 (protocol cv3: the matrix's fold axis comes last)."""
    base, fold = cv_fold(protocol)
    return f"{stage}{'' if base == 'paper' else '_' + base}@{item}{'' if fold is None else f'-{fold}'}"


def protocol_suffix(protocol: str) -> str:
    """ "" for the paper's split protocol, "-<protocol>" for another: names and paths of the paper's
    protocol stay as they were."""
    return "" if protocol == "paper" else f"-{protocol}"


@dataclass(frozen=True)
class Variant:
    dataset: str
    model: str
    init: str
    protocol: str = "paper"  # the split it trains on: the paper's, "grouped" (grouped.group_by) or "cv<k>"

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.model}-{self.init}{protocol_suffix(self.protocol)}"

    def stage(self, stage: str) -> str:
        """dvc.yaml's name of this variant's run of a stage: evaluate@br35h-resnet18-scratch,
        evaluate_grouped@br35h-resnet18-scratch, evaluate_cv@br35h-resnet18-scratch-2."""
        return stage_name(stage, self.protocol, f"{self.dataset}-{self.model}-{self.init}")

    @property
    def split(self) -> Path:
        return split_path(self.dataset, self.protocol)

    @property
    def checkpoint(self) -> Path:
        return Path("models") / f"{self.name}.pt"

    @property
    def live_dir(self) -> Path:
        return Path("dvclive") / self.name

    @property
    def resume_dir(self) -> Path:
        return RESUME / self.name

    @property
    def metrics(self) -> Path:
        return Path("metrics") / f"{self.name}.json"

    @property
    def predictions(self) -> Path:
        return Path("plots/predictions") / f"{self.name}.csv"

    @property
    def roc_dir(self) -> Path:
        return Path("plots/roc") / self.name


def explain_metrics(variant: Variant) -> Path:
    return Path("metrics/explain") / f"{variant.name}.json"


def explain_dir(variant: Variant) -> Path:
    """Its Grad-CAM overlays."""
    return REPORTS / "explain" / variant.name


def all_variants(params: dict) -> list[Variant]:
    """The paper's grid: datasets x models x inits, on the paper's split."""
    return [Variant(d, m, i) for d in params["datasets"] for m in params["models"] for i in params["inits"]]


def grouped_variants(params: dict) -> list[Variant]:
    """The variants trained on the grouped split too: grouped.datasets x grouped.models x grouped.inits."""
    grouped = params["grouped"]
    return [
        Variant(d, m, i, "grouped") for d in grouped["datasets"] for m in grouped["models"] for i in grouped["inits"]
    ]


def cv_variants(params: dict) -> list[Variant]:
    """Every fold's variant of the cross-validation: cv.datasets x cv.models x cv.inits x cv.folds."""
    cv = params["cv"]
    return [
        Variant(d, m, i, f"cv{k}")
        for d in cv["datasets"]
        for m in cv["models"]
        for i in cv["inits"]
        for k in cv["folds"]
    ]


def input_hashes(variant: Variant, root: Path = Path(".")) -> dict:
    """md5 of the prepared data and of the variant's split, as dvc.lock records them."""
    prepared = root / prepared_dir(variant.dataset)
    return {
        "prepared_images_md5": md5_file(prepared / "images.npy"),
        "prepared_index_md5": md5_file(prepared / "index.csv"),
        "split_md5": md5_file(root / variant.split),
    }


def train_params_hash(params: dict, init: str) -> str:
    return params_hash(select(params, train_param_keys(init)))
