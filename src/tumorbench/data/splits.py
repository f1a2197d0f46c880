"""Split a prepared dataset into train and validation: the split stage.

Stratified by class, with the class counts of scikit-learn's stratified
train_test_split: ceil(n * val_fraction) validation samples in all (1226 of
figshare's 3064, the size the paper's accuracies imply), each class's share
within a sample or two of its fraction; within each class a numpy
default_rng(seed) shuffle picks them. With group_by
"patient", whole patients are assigned instead (no patient on both sides),
class by class, greedily towards the same per-class targets.

Cross-validation folds (make_cv_folds, the split_cv stage): a dataset whose
index carries cv_fold (figshare's cvind.mat) gets exactly those folds; any
other gets stratified group k-fold over group_by's groups.

The same index.csv and params give a byte-identical split file.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from tumorbench.core import fileio
from tumorbench.core.errors import UserError
from tumorbench.data.prepared import class_names_of, read_index
from tumorbench.data.readers import natural_key

GROUP_BY = ("patient", "duplicates", "patient+duplicates")  # besides none
LARGE_GROUP = 0.05  # of the validation split: a group placed before the others


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


def grouped_val_ids(
    rows: list[dict], group_of: dict[str, str], val_fraction: float, rng: np.random.Generator, what: str
) -> set[str]:
    """Whole groups to validation, towards every class's val_counts target at once.

    group_of: sample_id -> its group's key. The groups (in natural order of their keys) are shuffled
    and taken greedily: a group goes to validation when that brings the validation class counts closer
    to the targets (squared distance), so a group holding several classes counts for each. Groups of
    more than LARGE_GROUP of the validation split are placed first, by a seeded coin. A group larger
    than the whole validation split is a SplitError naming it (`what` says where the groups come from).
    """
    members: dict[str, list[dict]] = {}
    for r in rows:
        members.setdefault(group_of[r["sample_id"]], []).append(r)
    labels = sorted({int(r["label"]) for r in rows})
    column = {label: k for k, label in enumerate(labels)}
    sizes = Counter(int(r["label"]) for r in rows)
    targets = val_counts(dict(sizes), val_fraction)
    target = np.array([targets[label] for label in labels], dtype=np.int64)
    keys = sorted(members, key=natural_key)
    counts = np.zeros((len(keys), len(labels)), dtype=np.int64)
    for k, key in enumerate(keys):
        for r in members[key]:
            counts[k, column[int(r["label"])]] += 1
    largest = int(np.argmax(counts.sum(axis=1)))
    if counts[largest].sum() > target.sum():
        shown = ", ".join(r["sample_id"] for r in members[keys[largest]][:5])
        raise SplitError(
            f"a group of {counts[largest].sum()} samples ({shown}, ...; {what}) is larger than the whole "
            f"validation split ({target.sum()} samples); it cannot be kept on one side. Lower "
            f"duplicates.threshold, or group by patient alone"
        )
    # Large groups first, each to validation by a seeded coin (p = val_fraction) where it fits under the
    # targets; then the others greedily, in a seeded order, towards the targets, the large groups the coin
    # left out last.
    order = rng.permutation(len(keys))
    large = counts.sum(axis=1) > LARGE_GROUP * target.sum()
    taken = np.zeros(len(labels), dtype=np.int64)
    in_val = np.zeros(len(keys), dtype=bool)
    for k in order[large[order]]:
        if rng.random() < val_fraction and (taken + counts[k] <= target).all():
            taken += counts[k]
            in_val[k] = True
    for k in np.concatenate([order[~large[order]], order[large[order]]]):
        if not in_val[k] and np.sum((taken + counts[k] - target) ** 2) < np.sum((taken - target) ** 2):
            taken += counts[k]
            in_val[k] = True
    val = {r["sample_id"] for k in np.flatnonzero(in_val) for r in members[keys[k]]}
    return val


def union_groups(sample_ids: list[str], *partitions: list[list[str]]) -> dict[str, str]:
    """sample_id -> group key, where samples sharing a group of any partition share a group (connected
    components); a key is the natural-order first sample id of its group."""
    parent = {s: s for s in sample_ids}

    def root(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    for partition in partitions:
        for group in partition:
            for other in group[1:]:
                a, b = root(group[0]), root(other)
                if a != b:
                    parent[max(a, b, key=natural_key)] = min(a, b, key=natural_key)
    return {s: root(s) for s in sample_ids}


def group_key_of(
    rows: list[dict], group_by: str, duplicate_groups: list[list[str]] | None, where: str = "the index"
) -> tuple[dict, str]:
    """(sample_id -> group key, the grouping applied) for group_by patient, duplicates or
    patient+duplicates. Without patient ids, patient applies as no grouping and patient+duplicates as
    duplicates, recorded in the applied text."""
    ids = [r["sample_id"] for r in rows]
    use_patients = "patient" in group_by.split("+")
    applied = group_by
    if use_patients:
        unknown = sum(1 for r in rows if not r["patient_id"])
        if unknown == len(rows):
            use_patients = False
            applied = group_by.replace("patient+", "").replace("patient", "none") + " (no patient ids)"
        elif unknown:
            raise SplitError(
                f"group_by = {group_by}, but {unknown} of {len(rows)} samples of {where} have no patient id; "
                f"fill the patient_id column, or set group_by: none or duplicates"
            )
    partitions = []
    if use_patients:
        by_patient: dict[str, list[str]] = {}
        for r in rows:
            by_patient.setdefault(r["patient_id"], []).append(r["sample_id"])
        partitions.append(list(by_patient.values()))
    if "duplicates" in group_by:
        if duplicate_groups is None:
            raise ValueError("group_by duplicates needs the duplicate groups")  # a bug: the stage passes them
        partitions.append(duplicate_groups)
    if use_patients and "duplicates" not in group_by:  # keys as before: the patient ids themselves
        return {r["sample_id"]: r["patient_id"] for r in rows}, applied
    return union_groups(ids, *partitions), applied


def make_split(
    index_csv: str | os.PathLike,
    images_npy: str | os.PathLike,
    val_fraction: float,
    seed: int,
    group_by: str,
    dataset: str | None = None,
    duplicates: dict | None = None,
) -> dict:
    """The split of one prepared dataset (the data/splits/<dataset>[-<protocol>].json contents).

    group_by: none (stratified by class), or whole groups kept on one side: patient, duplicates (the
    near groups of `duplicates`, a reports/duplicates/<dataset>.json) or patient+duplicates (both,
    linked). dataset only names the data in errors; by default the index's folder name.
    """
    index_csv, images_npy = Path(index_csv), Path(images_npy)
    dataset = dataset or index_csv.parent.name
    rows = _check_inputs(index_csv, images_npy, dataset)
    if not 0 < val_fraction < 1:
        raise SplitError(f"split.val_fraction = {val_fraction} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    applied, group_of = group_by, None
    if group_by == "none":
        val = stratified_val_ids(rows, val_fraction, rng)
    elif group_by in GROUP_BY:
        near = duplicates["near"] if duplicates else None
        group_of, applied = group_key_of(rows, group_by, near, f"{dataset} ({index_csv})")
        if applied.startswith("none"):
            print(f"split: {dataset} has no patient ids; group_by: {group_by} splits it image by image")
            val = stratified_val_ids(rows, val_fraction, rng)
            group_of = None
        else:
            threshold = f"duplicates.threshold = {duplicates['threshold']}" if duplicates else "patient ids"
            val = grouped_val_ids(rows, group_of, val_fraction, rng, f"group_by {applied}, {threshold}")
    else:
        raise SplitError(f"group_by = {group_by!r}; allowed: none, {', '.join(GROUP_BY)}")

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

    split = {
        "train": train_ids,
        "val": val_ids,
        "counts": {"train": counts(train_ids), "val": counts(val_ids)},
        "params": {"val_fraction": val_fraction, "seed": seed, "group_by": group_by},
        "group_by_applied": applied,
        "prepared_md5": {"images.npy": fileio.md5_file(images_npy), "index.csv": fileio.md5_file(index_csv)},
    }
    if group_of is not None:
        split["groups"] = group_summary(group_of, set(val_ids))
    if group_of is not None and "duplicates" in group_by:
        split["params"]["duplicates_threshold"] = duplicates["threshold"]
        split["params"]["duplicates_flips"] = duplicates["flips"]
    return split


def group_summary(group_of: dict[str, str], val: set[str]) -> dict:
    """The groups of 2 or more samples (sample ids), their count and largest size, and how many have
    members on both sides (0 by construction: checked here, not assumed)."""
    members: dict[str, list[str]] = {}
    for sample_id, key in group_of.items():
        members.setdefault(key, []).append(sample_id)
    groups = sorted((sorted(g, key=natural_key) for g in members.values() if len(g) > 1), key=lambda g: -len(g))
    crossing = sum(len({s in val for s in group}) > 1 for group in groups)
    return {"count": len(groups), "largest": max(map(len, groups), default=0), "crossing": crossing, "members": groups}


def leaks(split: dict, rows: list[dict], duplicate_groups: list[list[str]]) -> dict:
    """How many validation images of `split` share a duplicate group, or a patient, with a training image."""
    train, val = set(split["train"]), split["val"]
    group_of = {sample: k for k, group in enumerate(duplicate_groups) for sample in group}
    groups_in_train = {group_of[s] for s in train if s in group_of}
    patient = {r["sample_id"]: r["patient_id"] for r in rows}
    patients_in_train = {patient[s] for s in train} - {""}
    return {
        "val": len(val),
        "copy_in_train": sum(1 for s in val if group_of.get(s) in groups_in_train),
        "patient_in_train": sum(1 for s in val if patient[s] in patients_in_train) if patients_in_train else None,
    }


def write_split(split: dict, path: str | os.PathLike) -> None:
    """Write a split as canonical JSON (atomically), e.g. to data/splits/<dataset>.json."""
    fileio.atomic_write_json(path, split)


def _check_inputs(index_csv: Path, images_npy: Path, dataset: str) -> list[dict]:
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
    return rows


def make_cv_folds(
    index_csv: str | os.PathLike,
    images_npy: str | os.PathLike,
    folds: int,
    seed: int,
    group_by: str,
    dataset: str | None = None,
    duplicates: dict | None = None,
) -> dict:
    """The k-fold cross-validation of one prepared dataset (data/splits/<dataset>-cv.json).

    Where prepare found the author's folds (index.csv's cv_fold, from figshare's cvind.mat) they are
    used as they are, and `folds` must equal their number. Otherwise scikit-learn's
    StratifiedGroupKFold(folds, shuffle, seed) over the groups of `group_by` (as make_split groups:
    none, patient, duplicates, patient+duplicates), so no group spans two folds. Either way every
    fold's training part (the other folds) must hold every class.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    index_csv, images_npy = Path(index_csv), Path(images_npy)
    dataset = dataset or index_csv.parent.name
    rows = _check_inputs(index_csv, images_npy, dataset)
    ids = [r["sample_id"] for r in rows]
    labels = np.array([int(r["label"]) for r in rows])
    names = class_names_of(rows)
    group_of, applied = {s: s for s in ids}, "none"
    if group_by in GROUP_BY:
        near = duplicates["near"] if duplicates else None
        group_of, applied = group_key_of(rows, group_by, near, f"{dataset} ({index_csv})")
        if applied.startswith("none"):
            group_of = {s: s for s in ids}
    elif group_by != "none":
        raise SplitError(f"group_by = {group_by!r}; allowed: none, {', '.join(GROUP_BY)}")

    given = [r.get("cv_fold", "") for r in rows]
    if any(given):
        source = "cvind.mat"
        fold_of = np.array([int(f) for f in given])
        defined = int(fold_of.max())
        if folds != defined:
            raise SplitError(
                f"{dataset}: cv.folds has {folds} folds, but the dataset's cvind.mat defines {defined}; "
                f"set cv.folds to {list(range(1, defined + 1))}"
            )
    else:
        source = "StratifiedGroupKFold"
        n_groups = len(set(group_of.values()))
        if not 2 <= folds <= n_groups:
            raise SplitError(
                f"{dataset}: cv.folds has {folds} folds but there are {n_groups} groups ({applied}); "
                f"use 2 to {n_groups} folds"
            )
        keys = sorted(set(group_of.values()), key=natural_key)
        position = {key: k for k, key in enumerate(keys)}
        group_index = np.array([position[group_of[s]] for s in ids])
        fold_of = np.zeros(len(ids), dtype=int)
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(ids)), labels, group_index), 1):
            fold_of[val] = k

    members = [[s for s, f in zip(ids, fold_of) if f == k] for k in range(1, folds + 1)]
    counts = [
        {name: int(np.sum((fold_of == k) & (labels == c))) for c, name in enumerate(names)} for k in range(1, folds + 1)
    ]
    for k in range(1, folds + 1):
        missing = [name for c, name in enumerate(names) if not np.any((fold_of != k) & (labels == c))]
        if missing or not members[k - 1]:
            raise SplitError(
                f"{dataset}: fold {k} of {folds} ({source}) leaves "
                + (f"no {missing} sample to train on" if missing else "nothing to validate")
                + "; use fewer folds (cv.folds)"
            )
    folds_of_group: dict[str, set[int]] = {}
    for s, f in zip(ids, fold_of):
        folds_of_group.setdefault(group_of[s], set()).add(int(f))
    return {
        "folds": members,
        "counts": counts,
        "source": source,
        "params": {"folds": folds, "seed": seed, "group_by": group_by},
        "group_by_applied": applied,
        "groups": {
            "count": len(folds_of_group),
            "crossing": sum(1 for g in folds_of_group.values() if len(g) > 1),
        },
        "prepared_md5": {"images.npy": fileio.md5_file(images_npy), "index.csv": fileio.md5_file(index_csv)},
    }
