"""Split a prepared dataset into train and validation: the split stage.

Stratified by class: within each class, a numpy default_rng(seed) shuffle
picks round(n_c * val_fraction) samples for validation, so each class's share
is within one sample of the requested fraction. With group_by "patient",
whole patients are assigned instead (no patient on both sides), class by
class, greedily towards the same per-class target.

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
from tumorbench.readers import natural_key


class SplitError(ValueError):
    """Inputs or params that cannot give a valid split."""


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def stratified_val_ids(rows: list[dict], val_fraction: float, rng: np.random.Generator) -> set[str]:
    """Per class (in label order): shuffle its samples, take round(n_c * val_fraction)."""
    val: set[str] = set()
    for label in sorted({int(r["label"]) for r in rows}):
        ids = [r["sample_id"] for r in rows if int(r["label"]) == label]
        order = rng.permutation(len(ids))
        val.update(ids[i] for i in order[:round_half_up(len(ids) * val_fraction)])
    return val


def majority_label(labels: list[int]) -> int:
    """The most common label; ties go to the smallest."""
    counts = Counter(labels)
    return min(counts, key=lambda label: (-counts[label], label))


def patient_val_ids(rows: list[dict], val_fraction: float, rng: np.random.Generator) -> set[str]:
    """Whole patients to validation, per class of each patient's majority label.

    Within a class the patients are shuffled and taken greedily: a patient
    goes to validation when that brings the class's count closer to
    round(n_c * val_fraction).
    """
    slices: dict[str, list[dict]] = {}
    for r in rows:
        slices.setdefault(r["patient_id"], []).append(r)
    class_of = {pid: majority_label([int(r["label"]) for r in rs]) for pid, rs in slices.items()}
    val: set[str] = set()
    for label in sorted(set(class_of.values())):
        patients = sorted((pid for pid, c in class_of.items() if c == label), key=natural_key)
        target = round_half_up(sum(len(slices[p]) for p in patients) * val_fraction)
        taken = 0
        for i in rng.permutation(len(patients)):
            size = len(slices[patients[i]])
            if abs(taken + size - target) < abs(taken - target):
                taken += size
                val.update(r["sample_id"] for r in slices[patients[i]])
    return val


def make_split(index_csv: str | os.PathLike, images_npy: str | os.PathLike, val_fraction: float,
               seed: int, group_by: str, dataset: str | None = None) -> dict:
    """The split of one prepared dataset (the data/splits/<dataset>.json contents).

    dataset only names the data in errors; by default the index's folder name.
    """
    index_csv, images_npy = Path(index_csv), Path(images_npy)
    dataset = dataset or index_csv.parent.name
    for path in (index_csv, images_npy):
        if not path.exists():
            raise SplitError(f"{path} is missing: run the prepare stage first (dvc repro prepare@{dataset})")
    try:
        rows = read_index(index_csv)
    except ValueError as error:
        raise SplitError(str(error)) from None
    n_images = np.load(images_npy, mmap_mode="r").shape[0]
    if n_images != len(rows):
        raise SplitError(f"{index_csv} has {len(rows)} rows but {images_npy} has {n_images} images; "
                         f"rerun the prepare stage for {dataset}")
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
            raise SplitError(f"split.group_by = patient, but {unknown} of {len(rows)} samples of {dataset} "
                             f"have no patient id in {index_csv}; fill the patient_id column or set "
                             f"split.group_by: none")
        else:
            val = patient_val_ids(rows, val_fraction, rng)
    elif group_by == "none":
        val = stratified_val_ids(rows, val_fraction, rng)
    else:
        raise SplitError(f"split.group_by = {group_by!r}; allowed: none, patient")

    train_ids = [r["sample_id"] for r in rows if r["sample_id"] not in val]
    val_ids = [r["sample_id"] for r in rows if r["sample_id"] in val]
    if not train_ids or not val_ids:
        raise SplitError(f"{dataset}: split.val_fraction = {val_fraction} leaves the "
                         f"{'train' if not train_ids else 'val'} side empty ({len(rows)} samples); change it")
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
