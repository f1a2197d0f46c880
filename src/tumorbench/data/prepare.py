"""Decode a raw dataset once into a fixed-size uint8 array: the prepare stage.

Outputs in out_dir (data/prepared/<dataset>/), each written atomically, none
when the data fails the checks:
    images.npy   uint8 (N, 3, S, S), row i = index.csv row i
    index.csv    sample_id,label,label_name,patient_id,source_path,sha256,cv_fold
    masks.npz    masks uint8 (N, S, S), 1 = tumour, and has_mask bool (N,): the dataset's own
                 tumour outlines (figshare's), resized as the images are
    report.json  counts per class, unreadable files, duplicate groups, ...

The same raw files and params give byte-identical outputs (no timings or
absolute paths in them), so DVC's md5s and run-cache stay stable.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tumorbench.core import fileio
from tumorbench.core.errors import UserError
from tumorbench.core.parallel import parallel_map
from tumorbench.data.readers import (
    UnreadableImage,
    decode_image,
    error_text,
    mask_array,
    mat_to_array,
    natural_key,
    read_samples,
)

INDEX_COLUMNS = ["sample_id", "label", "label_name", "patient_id", "source_path", "sha256", "cv_fold"]
SHOWN_UNREADABLE = 10


class PrepareError(UserError, RuntimeError):
    """The raw data cannot be prepared (too many unreadable files, an empty class)."""


def decode_file(job: tuple[str, str, int]) -> tuple[str, np.ndarray | None, str]:
    """(sha256 of the file, pixels uint8 (3, S, S) or None, reason it is unreadable or "").

    job = (loader, absolute path, size); a top-level function so a Pool can run it.
    """
    loader, path, size = job
    try:
        if loader == "mat":
            sha256 = fileio.sha256_file(path)
            return sha256, mat_to_array(path, size), ""
        data = Path(path).read_bytes()
        return fileio.sha256_bytes(data), decode_image(data, size), ""
    except UnreadableImage as e:
        return fileio.sha256_file(path), None, str(e)
    except Exception as e:  # h5py and friends raise many kinds: a bad file is reported, not fatal
        return fileio.sha256_file(path), None, f"cannot read: {error_text(e)}"


def decode_mask(job: tuple[str, int]) -> tuple[np.ndarray | None, str]:
    """(mask uint8 (S, S), 1 = tumour, or None, the reason it is unreadable or ""); job = (mask path, size)."""
    path, size = job
    try:
        return mask_array(path, size), ""
    except Exception as e:  # as for images: reported, not fatal
        return None, error_text(e)


def duplicate_groups(paths_and_hashes: list[tuple[str, str]]) -> list[list[str]]:
    """Groups (2 or more) of paths whose bytes are identical, sorted."""
    by_hash: dict[str, list[str]] = {}
    for path, sha256 in paths_and_hashes:
        by_hash.setdefault(sha256, []).append(path)
    return sorted(sorted(group) for group in by_hash.values() if len(group) > 1)


def index_csv_text(rows: list[dict]) -> str:
    return fileio.csv_text(rows, INDEX_COLUMNS)


def _too_many_unreadable(unreadable: list[dict], total: int, max_unreadable: float, raw_dir: Path) -> str:
    shown = "\n".join(f"  {u['path']}: {u['reason']}" for u in unreadable[:SHOWN_UNREADABLE])
    more = f"\n  ... and {len(unreadable) - SHOWN_UNREADABLE} more" if len(unreadable) > SHOWN_UNREADABLE else ""
    return (
        f"{raw_dir}: {len(unreadable)} of {total} files are unreadable "
        f"({len(unreadable) / total:.2%} > data.max_unreadable = {max_unreadable}):\n{shown}{more}\n"
        f"Fix or re-download the data, or raise data.max_unreadable in params.yaml to skip them."
    )


def prepare(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    image_size: int,
    max_unreadable: float,
    dataset_name: str,
    processes: int | None = None,
) -> dict:
    """Decode every sample under raw_dir into out_dir; returns the report (also written as report.json).

    Fails with PrepareError, writing nothing, when the unreadable fraction
    exceeds max_unreadable or a class is left without samples.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    records, class_names, reader = read_samples(raw_dir)
    unreadable = [{"path": r["source_path"], "reason": r["error"]} for r in records if r["error"]]
    decodable = [r for r in records if not r["error"]]
    jobs = [(r["loader"], r["path"], image_size) for r in decodable]

    # Filled in order; rows of unreadable files are left over at the end and cut off.
    images = np.zeros((len(jobs), 3, image_size, image_size), dtype=np.uint8)
    kept = []
    # The generator goes first in zip so it runs to its end and closes its pool.
    decoded = parallel_map(decode_file, jobs, f"prepare {dataset_name}", processes)
    for (sha256, pixels, reason), record in zip(decoded, decodable):
        if pixels is None:
            unreadable.append({"path": record["source_path"], "reason": reason})
        else:
            images[len(kept)] = pixels
            kept.append({**record, "sha256": sha256})
    unreadable.sort(key=lambda u: natural_key(u["path"]))

    if len(unreadable) / len(records) > max_unreadable:
        raise PrepareError(_too_many_unreadable(unreadable, len(records), max_unreadable, raw_dir))
    counts = {name: sum(r["label"] == label for r in kept) for label, name in enumerate(class_names)}
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise PrepareError(f"{raw_dir}: no readable samples of class {empty} ({reader} layout); check the download")

    with_mask = [k for k, r in enumerate(kept) if r["mask_path"]]
    masks = np.zeros((len(kept), image_size, image_size), dtype=np.uint8)
    has_mask = np.zeros(len(kept), dtype=bool)
    unreadable_masks = []
    jobs = [(kept[k]["mask_path"], image_size) for k in with_mask]
    for k, (mask, reason) in zip(with_mask, parallel_map(decode_mask, jobs, f"masks {dataset_name}", processes)):
        if mask is None:
            unreadable_masks.append({"path": kept[k]["source_path"], "reason": reason})
        else:
            masks[k], has_mask[k] = mask, True

    report = {
        "dataset": dataset_name,
        "reader": reader,
        "class_names": class_names,
        "counts": counts,
        "n_samples": len(kept),
        "n_files": len(records),
        "image_size": image_size,
        "max_unreadable": max_unreadable,
        "unreadable": unreadable,
        "duplicates": duplicate_groups([(r["source_path"], r["sha256"]) for r in kept]),
        "n_patients": len({r["patient_id"] for r in kept} - {""}),
        "n_masks": int(has_mask.sum()),
        "unreadable_masks": unreadable_masks,
    }
    # File by file, not a whole-directory swap: DVC tracks the files and may keep its own
    # .gitignore in out_dir. report.json goes last, so it marks a complete run.
    fileio.atomic_save_npy(out_dir / "images.npy", images[: len(kept)])
    with fileio.atomic_open(out_dir / "masks.npz", "wb") as f:  # zip entries carry a fixed date: same bytes
        np.savez_compressed(f, masks=masks, has_mask=has_mask)
    fileio.atomic_write_text(out_dir / "index.csv", index_csv_text(kept))
    fileio.atomic_write_json(out_dir / "report.json", report)
    return report
