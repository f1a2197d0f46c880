"""Names, paths and provenance of one variant (dataset x model x init).

The paths here are the ones dvc.yaml declares; a test checks they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tumorbench.data import PREPARED, SPLITS
from tumorbench.fileio import md5_file
from tumorbench.params import params_hash, select, train_param_keys


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
        # Outside every declared output: DVC deletes those before a stage runs.
        return Path(".cache/resume") / self.name

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
    prepared = root / PREPARED / dataset
    return {
        "prepared_images_md5": md5_file(prepared / "images.npy"),
        "prepared_index_md5": md5_file(prepared / "index.csv"),
        "split_md5": md5_file(root / SPLITS / f"{dataset}.json"),
    }


def train_params_hash(params: dict, init: str) -> str:
    return params_hash(select(params, train_param_keys(init)))
