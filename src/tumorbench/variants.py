"""Where the pipeline's files live, and the names and provenance of one variant (dataset x model x init).

Every path a stage reads or writes comes from here; dvc.yaml declares the same ones (a test checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tumorbench.fileio import md5_file
from tumorbench.params import params_hash, select, train_param_keys

RAW = Path("data/raw")  # data/raw/<dataset>/: the extracted download
PREPARED = Path("data/prepared")  # data/prepared/<dataset>/: images.npy, index.csv, report.json
SPLITS = Path("data/splits")  # data/splits/<dataset>.json
DOWNLOADS = Path(".cache/downloads")  # partial and finished downloads, outside every output
RESUME = Path(".cache/resume")  # per-variant resume states: DVC deletes declared outputs before a stage runs
REPORTS = Path("reports")
TABLES_DIR = REPORTS / "tables"
CURVES = Path("plots/curves")  # lr.csv, and val_loss/<dataset>-<init>.csv
SUMMARY = Path("metrics/summary.json")


def raw_dir(dataset: str) -> Path:
    return RAW / dataset


def prepared_dir(dataset: str) -> Path:
    return PREPARED / dataset


def split_path(dataset: str) -> Path:
    return SPLITS / f"{dataset}.json"


@dataclass(frozen=True)
class Variant:
    dataset: str
    model: str
    init: str

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.model}-{self.init}"

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


def all_variants(params: dict) -> list[Variant]:
    return [Variant(d, m, i) for d in params["datasets"] for m in params["models"] for i in params["inits"]]


def input_hashes(dataset: str, root: Path = Path(".")) -> dict:
    """md5 of the prepared data and the split, as dvc.lock records them."""
    prepared = root / prepared_dir(dataset)
    return {
        "prepared_images_md5": md5_file(prepared / "images.npy"),
        "prepared_index_md5": md5_file(prepared / "index.csv"),
        "split_md5": md5_file(root / split_path(dataset)),
    }


def train_params_hash(params: dict, init: str) -> str:
    return params_hash(select(params, train_param_keys(init)))
