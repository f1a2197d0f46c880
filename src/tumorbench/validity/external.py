"""Test trained models on a set from elsewhere, after finding which of its images the dataset already holds.

Public "external" test sets are often built from the very datasets models train on. Each external
image is matched against every prepared image of its dataset, train and validation, as the duplicate
audit matches (same file bytes or pixels: exact; pHash within duplicates.threshold, of any rotation or
flip: near). A variant is then scored on `all` readable external images and on the `clean` ones,
which match nothing in the dataset; `overlap` says how many matched and on which side of that
variant's split the matches lie.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from tumorbench.core.errors import UserError
from tumorbench.core.parallel import parallel_map
from tumorbench.data.duplicates import audit, hash_rows, image_hashes, near_pairs, phash_matrix
from tumorbench.data.prepare import decode_file
from tumorbench.data.readers import ReaderError, read_samples
from tumorbench.models.calibration import calibration_metrics
from tumorbench.models.inference import predict, trained_model
from tumorbench.models.metrics import dataset_metrics
from tumorbench.validity.stats import bootstrap_ci


class ExternalError(UserError, ValueError):
    """An external test set params.yaml describes that cannot be read as described."""


def read_external(name: str, spec: dict, class_names: list[str]) -> list[dict]:
    """The external set's image records, each with `label` as an index into the dataset's class_names."""
    key = f"params.yaml external.{name}"
    root = Path(spec["path"])
    if not root.is_dir():
        raise ExternalError(f"{key}.path = {spec['path']!r} is not a folder: point it at a folder of class folders")
    try:
        records, folders, _ = read_samples(root)
    except ReaderError as error:
        raise ExternalError(f"{key}.path: {error}") from None
    missing = [folder for folder in folders if folder not in spec["classes"]]
    if missing:
        raise ExternalError(
            f"{key}.classes has no entry for the class folder(s) {missing} under {root}; add each as "
            f"<folder>: <one of {class_names}> (the class of {spec['dataset']} it counts as)"
        )
    unknown = sorted({v for v in spec["classes"].values() if v not in class_names})
    if unknown:
        raise ExternalError(
            f"{key}.classes maps to {unknown}, which {spec['dataset']} has not; its classes are {class_names}"
        )
    for record in records:
        record["label_name"] = spec["classes"][record["label_name"]]
        record["label"] = class_names.index(record["label_name"])
    return records


def match(external_rows: list[dict], dataset_rows: list[dict], threshold: int, flips: bool) -> list[dict]:
    """For each external image: {"kind": "exact" | "near" | "", "samples": matched dataset sample ids}."""
    by_bytes, by_pixels = {}, {}
    for row in dataset_rows:
        by_bytes.setdefault(row["sha256"], []).append(row["sample_id"])
        by_pixels.setdefault(row["pixels_sha256"], []).append(row["sample_id"])
    queries = phash_matrix(external_rows, flips)
    base = phash_matrix(dataset_rows, False)[:, 0]
    i, j, _ = near_pairs(queries.reshape(-1), base, threshold)
    near: dict[int, set[str]] = {}
    for q, d in zip(i // queries.shape[1], j):
        near.setdefault(int(q), set()).add(dataset_rows[d]["sample_id"])
    found = []
    for k, row in enumerate(external_rows):
        exact = set(by_bytes.get(row["sha256"], [])) | set(by_pixels.get(row["pixels_sha256"], []))
        if exact:
            found.append({"kind": "exact", "samples": sorted(exact | near.get(k, set()))})
        elif k in near:
            found.append({"kind": "near", "samples": sorted(near[k])})
        else:
            found.append({"kind": "", "samples": []})
    return found


def scores(labels: np.ndarray, probs: np.ndarray, num_classes: int, bootstrap: int, seed: int) -> dict:
    """n, accuracy, macro F1/precision/recall and loss, each with its 95% bootstrap interval, and the
    calibration (ece, brier, nll)."""
    if len(labels) == 0:
        return {"n": 0}
    preds = probs.argmax(1)
    out = {"n": int(len(labels)), **dataset_metrics(labels, preds, probs, num_classes)}
    out.update(calibration_metrics(labels, probs))
    out["ci"] = bootstrap_ci(labels, preds, probs, num_classes, n_resamples=bootstrap, seed=seed)
    return out


def predictions_csv(records: list[dict], matches: list[dict], sides: list[str], probs, class_names) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["path", "actual", "predicted", "match", "matched_samples", "side"] + [f"prob_{name}" for name in class_names]
    )
    for record, found, side, row in zip(records, matches, sides, probs):
        writer.writerow(
            [
                record["source_path"],
                record["label_name"],
                class_names[int(row.argmax())],
                found["kind"],
                " ".join(found["samples"]),
                side,
            ]
            + [f"{p:.6g}" for p in row]
        )
    return out.getvalue()


def side_of(samples: list[str], train: set[str]) -> str:
    """Where a match lies in a split: train when any matched sample is a training one."""
    if not samples:
        return ""
    return "train" if any(s in train for s in samples) else "val"


class ExternalSet:
    """One external set, read, hashed, matched against its dataset and decoded once for every variant."""

    def __init__(
        self, name: str, spec: dict, class_names: list[str], dataset_hashes: list[dict], settings: dict, image_size: int
    ):
        self.name, self.spec, self.class_names = name, spec, class_names
        records = read_external(name, spec, class_names)
        jobs = [(r["path"], r["loader"]) for r in records]
        hashes = list(parallel_map(image_hashes, jobs, f"hash external.{name}"))
        self.unreadable = [
            {"path": r["source_path"], "reason": h["error"]} for r, h in zip(records, hashes) if h["error"]
        ]
        readable = [k for k, h in enumerate(hashes) if not h["error"]]
        if not readable:
            raise ExternalError(
                f"params.yaml external.{name}.path: none of the {len(records)} images under "
                f"{spec['path']} can be read (e.g. {self.unreadable[0]})"
            )
        self.records = [records[k] for k in readable]
        rows = hash_rows([r["source_path"] for r in self.records], [hashes[k] for k in readable])
        self.matches = match(rows, dataset_hashes, settings["threshold"], settings["flips"])
        index = [{"sample_id": r["source_path"], "label_name": r["label_name"]} for r in self.records]
        self.own_duplicates = audit(index, rows, settings["threshold"], settings["flips"])
        decode_jobs = [(r["loader"], r["path"], image_size) for r in self.records]
        self.images = np.stack([pixels for _, pixels, _ in parallel_map(decode_file, decode_jobs)])
        self.labels = np.array([r["label"] for r in self.records], dtype=np.int64)

    def evaluate(self, checkpoint: dict, split: dict, device, params: dict) -> tuple[dict, str]:
        """(the metrics JSON, the predictions CSV) of one variant's checkpoint."""
        precision = params["train"]["precision"]
        normalize = checkpoint.get("normalize") or params["normalize"][checkpoint["init"]]
        model = trained_model(checkpoint, device, precision)
        x = torch.from_numpy(self.images).to(device)
        probs = predict(model, x, normalize["mean"], normalize["std"], params["eval"]["batch_size"], precision)
        probs = probs.double().cpu().numpy()
        train = set(split["train"])
        sides = [side_of(found["samples"], train) for found in self.matches]
        clean = np.array([found["kind"] == "" for found in self.matches])
        k, boot, seed = len(self.class_names), params["eval"]["bootstrap"], params["eval"]["seed"]
        kinds = [found["kind"] for found in self.matches]
        result = {
            "all": scores(self.labels, probs, k, boot, seed),
            "clean": scores(self.labels[clean], probs[clean], k, boot, seed),
            "overlap": {
                "exact": kinds.count("exact"),
                "near": kinds.count("near"),
                "train": sides.count("train"),
                "val": sides.count("val"),
            },
            "own_duplicates": {
                key: self.own_duplicates[key]
                for key in ("in_exact_groups", "in_near_groups", "largest_group", "label_conflicts")
            }
            | {"groups": len(self.own_duplicates["near"])},
            "unreadable": self.unreadable,
            "dataset": self.spec["dataset"],
            "path": self.spec["path"],
            "classes": self.spec["classes"],
        }
        return result, predictions_csv(self.records, self.matches, sides, probs, self.class_names)
