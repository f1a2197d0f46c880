"""Split a prepared dataset into train and validation: the split stage.

Stratified by class, with the class counts of scikit-learn's stratified
train_test_split: ceil(n * val_fraction) validation samples in all (1226 of
figshare's 3064, the size the paper's accuracies imply), each class's share
within a sample or two of its fraction; within each class a numpy
default_rng(seed) shuffle picks them. With group_by
"patient", whole patients are assigned instead (no patient on both sides),
class by class, greedily towards the same per-class targets.

The same index.csv and params give a byte-identical split file.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from tumorbench import fileio
from tumorbench.data import class_names_of, read_index
from tumorbench.errors import UserError
from tumorbench.readers import natural_key


class SplitError(UserError, ValueError):
    """Inputs or params that cannot give a valid split."""


def val_counts(class_sizes: dict[int, int], val_fraction: float) -> dict[int, int]:
    """How many samples of each class go to validation, counted as scikit-learn's stratified
    train_test_split counts them: ceil(n * val_fraction) in all (float noise a hair above a whole
    number does not round up); the training part shared out in proportion to the classes by
    largest remainder (ties: lower label), validation the rest."""
    n = sum(class_sizes.values())
    n_train = n - math.ceil(n * val_fraction - 1e-9)
    exact = {label: n_train * size / n for label, size in class_sizes.items()}
    train = {label: math.floor(x) for label, x in exact.items()}
    short = n_train - sum(train.values())
    by_remainder = sorted(exact, key=lambda label: (-(exact[label] - train[label]), label))
    for label in by_remainder[:short]:
        train[label] += 1
    return {label: size - train[label] for label, size in class_sizes.items()}


def stratified_val_ids(rows: list[dict], val_fraction: float, rng: np.random.Generator) -> set[str]:
    """Per class (in label order): shuffle its samples, take its val_counts share."""
    ids_of: dict[int, list[str]] = {}
    for r in rows:
        ids_of.setdefault(int(r["label"]), []).append(r["sample_id"])
    targets = val_counts({label: len(ids) for label, ids in ids_of.items()}, val_fraction)
    val: set[str] = set()
    for label in sorted(ids_of):
        order = rng.permutation(len(ids_of[label]))
        val.update(ids_of[label][i] for i in order[: targets[label]])
    return val


def majority_label(labels: list[int]) -> int:
    """The most common label; ties go to the smallest."""
    counts = Counter(labels)
    return min(counts, key=lambda label: (-counts[label], label))


def patient_val_ids(rows: list[dict], val_fraction: float, rng: np.random.Generator) -> set[str]:
    """Whole patients to validation, per class of each patient's majority label.

    Within a class the patients are shuffled and taken greedily: a patient
    goes to validation when that brings the class's count closer to its
    val_counts target.
    """
    slices: dict[str, list[dict]] = {}
    for r in rows:
        slices.setdefault(r["patient_id"], []).append(r)
    class_of = {pid: majority_label([int(r["label"]) for r in rs]) for pid, rs in slices.items()}
    sizes = Counter()
    for pid, label in class_of.items():
        sizes[label] += len(slices[pid])
    targets = val_counts(dict(sizes), val_fraction)
    val: set[str] = set()
    for label in sorted(targets):
        patients = sorted((pid for pid, c in class_of.items() if c == label), key=natural_key)
        target = targets[label]
        taken = 0
        for i in rng.permutation(len(patients)):
            size = len(slices[patients[i]])
            if abs(taken + size - target) < abs(taken - target):
                taken += size
                val.update(r["sample_id"] for r in slices[patients[i]])
    return val


def make_split(
    index_csv: str | os.PathLike,
    images_npy: str | os.PathLike,
    val_fraction: float,
    seed: int,
    group_by: str,
    dataset: str | None = None,
) -> dict:
    """The split of one prepared dataset (the data/splits/<dataset>.json contents).

    dataset only names the data in errors; by default the index's folder name.
    """
    index_csv, images_npy = Path(index_csv), Path(images_npy)
    dataset = dataset or index_csv.parent.name
    for path in (index_csv, images_npy):
        if not path.exists():
            raise SplitError(f"{path} is missing: run the prepare stage first (dvc repro prepare@{dataset})")
    rows = read_index(index_csv)  # a DataError, reported like a SplitError, for an unusable index
    n_images = np.load(images_npy, mmap_mode="r").shape[0]
    if n_images != len(rows):
        raise SplitError(
            f"{index_csv} has {len(rows)} rows but {images_npy} has {n_images} images; "
            f"rerun the prepare stage for {dataset}"
        )
    if not 0 < val_fraction < 1:
        raise SplitError(f"split.val_fraction = {val_fraction} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    applied = group_by
    if group_by == "patient":
        unknown = sum(1 for r in rows if not r["patient_id"])
        if unknown == len(rows):
            # br35h has no patient ids: every image is its own group, which is the plain split.
            applied = "none (no patient ids)"
            print(f"split: {dataset} has no patient ids; group_by: patient splits it image by image")
            val = stratified_val_ids(rows, val_fraction, rng)
        elif unknown:
            raise SplitError(
                f"split.group_by = patient, but {unknown} of {len(rows)} samples of {dataset} "
                f"have no patient id in {index_csv}; fill the patient_id column or set "
                f"split.group_by: none"
            )
        else:
            val = patient_val_ids(rows, val_fraction, rng)
    elif group_by == "none":
        val = stratified_val_ids(rows, val_fraction, rng)
    else:
        raise SplitError(f"split.group_by = {group_by!r}; allowed: none, patient")

    train_ids = [r["sample_id"] for r in rows if r["sample_id"] not in val]
    val_ids = [r["sample_id"] for r in rows if r["sample_id"] in val]
    if not train_ids or not val_ids:
        raise SplitError(
            f"{dataset}: split.val_fraction = {val_fraction} leaves the "
            f"{'train' if not train_ids else 'val'} side empty ({len(rows)} samples); change it"
        )
    names = class_names_of(rows)
    label_of = {r["sample_id"]: int(r["label"]) for r in rows}

    def counts(ids: list[str]) -> dict[str, int]:
        per_label = Counter(label_of[s] for s in ids)
        return {name: per_label.get(label, 0) for label, name in enumerate(names)}

    return {
        "train": train_ids,
        "val": val_ids,
        "counts": {"train": counts(train_ids), "val": counts(val_ids)},
        "params": {"val_fraction": val_fraction, "seed": seed, "group_by": group_by},
        "group_by_applied": applied,
        "prepared_md5": {"images.npy": fileio.md5_file(images_npy), "index.csv": fileio.md5_file(index_csv)},
    }


def write_split(split: dict, path: str | os.PathLike) -> None:
    """Write a split as canonical JSON (atomically), e.g. to data/splits/<dataset>.json."""
    fileio.atomic_write_json(path, split)
