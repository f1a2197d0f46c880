"""Load prepared arrays and the split: what training and evaluation read."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from tumorbench.core.errors import UserError
from tumorbench.core.variants import cv_fold, prepared_dir, split_path, stage_name


class DataError(UserError, ValueError):
    """Prepared data or a split that is missing or does not fit together; the message says what to rerun."""


@dataclass
class SplitData:
    """A dataset's prepared images with its split. The images stay memory-mapped; a part is read
    from disk the first time it is asked for, so evaluation never reads the training images."""

    images: np.ndarray  # uint8 (N, 3, S, S), memory-mapped
    labels: np.ndarray  # int64 (N,)
    train_index: np.ndarray  # rows of images
    val_index: np.ndarray
    val_ids: list[str]
    class_names: list[str]

    @cached_property
    def train_images(self) -> np.ndarray:
        return np.ascontiguousarray(self.images[self.train_index])

    @cached_property
    def val_images(self) -> np.ndarray:
        return np.ascontiguousarray(self.images[self.val_index])

    @property
    def train_labels(self) -> np.ndarray:
        return self.labels[self.train_index]

    @property
    def val_labels(self) -> np.ndarray:
        return self.labels[self.val_index]


def read_index(path: Path) -> list[dict]:
    """The rows of a prepared index.csv, checked for the columns every reader of it needs."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{path} has no samples: rerun the prepare stage")
    for column in ("sample_id", "label", "label_name", "patient_id"):
        if column not in rows[0]:
            raise DataError(f"{path}: missing column {column!r}; rerun the prepare stage")
    return rows


def class_names_of(rows: list[dict]) -> list[str]:
    names = {int(r["label"]): r["label_name"] for r in rows}
    return [names.get(i, str(i)) for i in range(max(names) + 1)]


def fold_parts(cv: dict, fold: int, where: Path) -> dict:
    """{"train", "val"} of fold k (1-based) of a cross-validation file: fold k validates, the others train."""
    folds = cv["folds"]
    if not 1 <= fold <= len(folds):
        raise DataError(f"{where} has folds 1..{len(folds)}, not {fold}; set cv.folds to match, or rerun split_cv")
    train = [s for k, members in enumerate(folds, 1) if k != fold for s in members]
    return {"train": train, "val": list(folds[fold - 1])}


def load_split_data(dataset: str, root: Path = Path("."), protocol: str = "paper") -> SplitData:
    prepared = root / prepared_dir(dataset)
    split_file = root / split_path(dataset, protocol)
    split_stage = stage_name("split", cv_fold(protocol)[0], dataset)
    for path in (prepared / "images.npy", prepared / "index.csv", split_file):
        if not path.exists():
            raise DataError(f"{path} is missing: run `dvc repro {split_stage}` first")
    images = np.load(prepared / "images.npy", mmap_mode="r")
    rows = read_index(prepared / "index.csv")
    if len(rows) != len(images):
        raise DataError(
            f"{prepared}: index.csv has {len(rows)} rows but images.npy has {len(images)}; "
            f"rerun `dvc repro -f -s prepare@{dataset}`"
        )
    split = json.loads(split_file.read_text())
    fold = cv_fold(protocol)[1]
    if fold is not None:
        split = fold_parts(split, fold, split_file)
    position = {r["sample_id"]: i for i, r in enumerate(rows)}
    missing = [s for s in split["train"] + split["val"] if s not in position]
    if missing:
        raise DataError(
            f"{split_file} names samples not in {prepared / 'index.csv'} (e.g. {missing[:3]}); "
            f"rerun `dvc repro split@{dataset}`"
        )
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    train = np.array([position[s] for s in split["train"]], dtype=np.int64)
    val = np.array([position[s] for s in split["val"]], dtype=np.int64)
    return SplitData(
        images=images,
        labels=labels,
        train_index=train,
        val_index=val,
        val_ids=list(split["val"]),
        class_names=class_names_of(rows),
    )
