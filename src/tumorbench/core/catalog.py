"""The names everything else refers to: the paper's datasets, models, inits and tables, and their titles.

params.py checks params.yaml against these, the readers and the generator take the paper datasets' class
lists from here, and the report titles its tables with them. A dataset of the user's own is any other
entry under `data:` in params.yaml; it has a name but no paper table.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PaperDataset:
    title: str
    classes: tuple[str, ...]  # in label order
    num_train: int  # the paper's 60/40 split
    num_val: int  # its accuracies are multiples of 1/num_val


PAPER_DATASETS = {
    "br35h": PaperDataset("Br35H (tumor yes/no)", ("no", "yes"), 1800, 1200),
    # label codes 1, 2, 3 in the .mat files
    "figshare": PaperDataset(
        "figshare (meningioma/glioma/pituitary)", ("meningioma", "glioma", "pituitary"), 1838, 1226
    ),
}

# name -> title, in the order of the paper's tables
MODELS = {
    "resnet50": "ResNet-50",
    "resnet18": "ResNet-18",
    "resnext50": "ResNeXt-50 (32x4d)",
    "googlenet": "GoogLeNet",
    **{f"efficientnet-b{i}": f"EfficientNet-B{i}" for i in range(8)},
}

INITS = {"scratch": "trained from scratch", "imagenet": "ImageNet-initialised"}

# the standardisation each init trains with (params.yaml normalize, whose defaults these are)
INIT_NORMALIZATION = {
    "scratch": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    "imagenet": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}

# (dataset, init) -> the paper's table number
TABLES = {("br35h", "scratch"): 1, ("br35h", "imagenet"): 2, ("figshare", "scratch"): 3, ("figshare", "imagenet"): 4}

# data's own keys in params.yaml; every other key under data: names a dataset
DATA_KEYS = ("image_size", "max_unreadable", "synthetic")

PAPER_RESULTS = Path(__file__).with_name("paper_results.csv")


def dataset_title(name: str) -> str:
    return PAPER_DATASETS[name].title if name in PAPER_DATASETS else name


def table_name(dataset: str, init: str) -> str:
    return f"{dataset}-{init}"


def load_paper_results() -> list[dict]:
    """The paper's Tables 1-4 as rows of strings (table, dataset, init, model, the five metrics as printed)."""
    with open(PAPER_RESULTS, newline="") as f:
        return list(csv.DictReader(f))


def paper_table(dataset: str, init: str) -> dict[str, dict]:
    """model -> the paper's row for that table; empty for a dataset the paper did not use."""
    number = TABLES.get((dataset, init))
    return {row["model"]: row for row in load_paper_results() if number and int(row["table"]) == number}
