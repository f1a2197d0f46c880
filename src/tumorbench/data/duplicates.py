"""Exact and near-duplicate images: hashes of the decoded originals, pairs within a Hamming distance
found without comparing all pairs, and duplicate groups as connected components.

Per image (`image_hashes`): the sha256 of the file's bytes, the sha256 of its decoded pixels, and the
64-bit perceptual hash (imagehash's pHash) of the image and of its seven rotations and flips. A flipped
copy is a duplicate for this project: training flips images at random, so a mirrored copy of a
training image in validation is a training sample.

Near pairs (`near_pairs`) are found by multi-index hashing: split the 64 bits into threshold + 1
blocks; two hashes within `threshold` bits of each other agree exactly on at least one block (if
every block differed, they would differ in threshold + 1 bits or more). So only pairs that share a
block value are compared: a sort and a binary search per block, no all-pairs matrix, memory
proportional to the candidate pairs (bench/duplicates.py measures 100k images).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tumorbench.data.readers import UnreadableImage, error_text, open_sample

# identity first; then what training's flips and 90-degree turns can make of an image
DIHEDRAL = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)
PHASH_GRID = 32  # imagehash.phash resizes to hash_size * highfreq_factor = 8 * 4 pixels


def phash_bits(image: Image.Image) -> int:
    return int(str(imagehash.phash(image)), 16)


def image_hashes(job: tuple[str, str]) -> dict:
    """Hashes of one file; job = (absolute path, loader "image" or "mat"). A top-level function, so a
    process pool can run it. An unreadable file gives {"error": reason} with its byte hash."""
    path, loader = job
    sha256 = hashlib.sha256(open(path, "rb").read()).hexdigest()
    try:
        image = open_sample(path, loader)
    except Exception as e:  # h5py and PIL raise many kinds: a bad file is reported, not fatal
        return {"sha256": sha256, "error": str(e) if isinstance(e, UnreadableImage) else error_text(e)}
    pixels = hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()
    # imagehash.phash converts to L and resizes to 32 x 32 first; resizing once and turning the small
    # image gives all eight hashes for the price of one resize (the first equals imagehash.phash(image)).
    small = image.convert("L").resize((PHASH_GRID, PHASH_GRID), Image.Resampling.LANCZOS)
    hashes = [phash_bits(small if turn is None else small.transpose(turn)) for turn in DIHEDRAL]
    return {"sha256": sha256, "pixels_sha256": pixels, "phash": hashes, "error": ""}


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def _block_masks(threshold: int) -> list[tuple[int, int]]:
    """(shift, mask) of threshold + 1 blocks that together cover 64 bits, as equal as can be."""
    blocks = threshold + 1
    edges = np.linspace(0, 64, blocks + 1).round().astype(int)
    return [(int(lo), (1 << int(hi - lo)) - 1) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def near_pairs(
    queries: np.ndarray, base: np.ndarray, threshold: int, chunk: int = 1 << 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (i, j, distance) with hamming(queries[i], base[j]) <= threshold, each pair once.

    queries, base: uint64 arrays. Candidates are the pairs that share one of threshold + 1 bit blocks
    (multi-index hashing; see the module docstring); they are generated block by block, at most
    `chunk` queries at a time, and checked exactly. Returns index arrays sorted by (i, j).
    """
    if not 0 <= threshold < 64:
        raise ValueError(f"threshold must be in 0..63, got {threshold}")
    queries, base = np.asarray(queries, dtype=np.uint64), np.asarray(base, dtype=np.uint64)
    found_i, found_j = [], []
    for shift, mask in _block_masks(threshold):
        base_keys = (base >> np.uint64(shift)) & np.uint64(mask)
        order = np.argsort(base_keys, kind="stable")
        sorted_keys = base_keys[order]
        for start in range(0, len(queries), chunk):
            part = queries[start : start + chunk]
            keys = (part >> np.uint64(shift)) & np.uint64(mask)
            low = np.searchsorted(sorted_keys, keys, side="left")
            counts = np.searchsorted(sorted_keys, keys, side="right") - low
            i = np.repeat(np.arange(start, start + len(part)), counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            j = order[np.repeat(low, counts) + offsets]
            close = hamming(queries[i], base[j]) <= threshold
            found_i.append(i[close])
            found_j.append(j[close])
    keys = np.unique(np.concatenate(found_i) * len(base) + np.concatenate(found_j))  # a pair found in 2 blocks: once
    i, j = keys // len(base), keys % len(base)
    return i, j, hamming(queries[i], base[j])


def self_pairs(hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a < b) of images within `threshold` in any of their variants.

    hashes: uint64 (N, V), column 0 the image as it is, the others its rotations and flips. Image a's
    variants are compared with image b as it is (a flip of a near b means a near a flip of b).
    """
    n, variants = hashes.shape
    i, j, d = near_pairs(hashes.reshape(-1), hashes[:, 0], threshold)
    a, b = i // variants, j
    keep = a != b
    a, b, d = a[keep], b[keep], d[keep]
    low, high = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((d, high, low))
    low, high, d = low[order], high[order], d[order]
    first = np.ones(len(low), dtype=bool)
    first[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])  # the smallest distance of each pair
    return low[first], high[first], d[first]


def equal_pairs(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) linking every item to the first item with the same key (empty keys never match)."""
    first: dict[str, int] = {}
    a, b = [], []
    for index, key in enumerate(keys):
        if not key:
            continue
        if key in first:
            a.append(first[key])
            b.append(index)
        else:
            first[key] = index
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)


def components(n: int, a: np.ndarray, b: np.ndarray) -> list[list[int]]:
    """Connected components with 2 or more members of the graph on n nodes with edges (a, b), each sorted,
    largest first (ties: by first member)."""
    if len(a) == 0:
        return []
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for node, label in enumerate(labels):
        groups.setdefault(int(label), []).append(node)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


# ------------------------------------------------------------------ the audit of one dataset

HASH_COLUMNS = ["sample_id", "sha256", "pixels_sha256"] + [f"phash{k}" for k in range(len(DIHEDRAL))]


def loader_of(source_path: str) -> str:
    return "mat" if source_path.lower().endswith(".mat") else "image"


def hash_rows(sample_ids: list[str], hashes: list[dict]) -> list[dict]:
    """The rows of a hashes CSV: one per sample, pHashes as 16 hex digits."""
    rows = []
    for sample_id, found in zip(sample_ids, hashes):
        row = {"sample_id": sample_id, "sha256": found["sha256"], "pixels_sha256": found.get("pixels_sha256", "")}
        row.update({f"phash{k}": f"{value:016x}" for k, value in enumerate(found.get("phash", []))})
        rows.append(row)
    return rows


def phash_matrix(rows: list[dict], flips: bool) -> np.ndarray:
    """uint64 (N, 8) pHashes of the rows (N, 1: the images as they are, when flips is False)."""
    columns = [f"phash{k}" for k in range(len(DIHEDRAL) if flips else 1)]
    return np.array([[int(row[c], 16) for c in columns] for row in rows], dtype=np.uint64).reshape(len(rows), -1)


def audit(index: list[dict], rows: list[dict], threshold: int, flips: bool) -> dict:
    """Exact and near duplicate groups of a prepared dataset.

    index: its index.csv rows (sample_id, label_name, patient_id); rows: hash_rows of the same samples.
    exact: groups linked by equal file bytes or equal decoded pixels; near: connected components of
    exact and near links (pHash within `threshold` bits, of any rotation or flip when `flips`). Every
    sample is in at most one group of each kind; groups have 2 or more members.
    """
    ids = [row["sample_id"] for row in index]
    labels = [row["label_name"] for row in index]
    patients = [row.get("patient_id", "") for row in index]
    n = len(ids)
    same_bytes = equal_pairs([row["sha256"] for row in rows])
    same_pixels = equal_pairs([row["pixels_sha256"] for row in rows])
    exact_a, exact_b = np.r_[same_bytes[0], same_pixels[0]], np.r_[same_bytes[1], same_pixels[1]]
    near_a, near_b, distance = self_pairs(phash_matrix(rows, flips), threshold)
    exact = components(n, exact_a, exact_b)
    near = components(n, np.r_[exact_a, near_a], np.r_[exact_b, near_b])
    pairs_a, pairs_b = np.r_[exact_a, near_a], np.r_[exact_b, near_b]
    conflict_pairs = sum(labels[a] != labels[b] for a, b in zip(pairs_a, pairs_b))
    return {
        "threshold": threshold,
        "flips": flips,
        "n_images": n,
        "exact": [[ids[i] for i in group] for group in exact],
        "near": [[ids[i] for i in group] for group in near],
        "in_exact_groups": sum(len(g) for g in exact),
        "in_near_groups": sum(len(g) for g in near),
        "largest_group": max((len(g) for g in near), default=0),
        "label_conflicts": sum(len({labels[i] for i in group}) > 1 for group in near),
        "label_conflict_pairs": int(conflict_pairs),
        "groups_across_patients": sum(len({patients[i] for i in group} - {""}) > 1 for group in near),
        "near_pairs_by_distance": {str(d): int(c) for d, c in zip(*np.unique(distance, return_counts=True))},
    }


def contact_sheet(
    groups: list[list[str]], index: list[dict], raw: os.PathLike, title: str, tile: int = 96, most: int = 8
) -> Image.Image:
    """The largest groups as rows of thumbnails (at most `most` groups of `most` images), each
    captioned with its sample id and class, read from the original files under `raw`."""
    from PIL import ImageDraw

    by_id = {row["sample_id"]: row for row in index}
    shown = [group[:most] for group in groups[:most]]
    caption = 12
    width = max([len(g) for g in shown] + [4]) * tile
    sheet = Image.new("RGB", (width, 16 + len(shown) * (tile + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), title, fill="black")
    for r, group in enumerate(shown):
        top = 16 + r * (tile + caption)
        for c, sample_id in enumerate(group):
            row = by_id[sample_id]
            path = Path(raw) / row["source_path"]
            try:
                thumb = open_sample(path, loader_of(row["source_path"])).convert("RGB")
                thumb.thumbnail((tile, tile))
                sheet.paste(thumb, (c * tile + (tile - thumb.width) // 2, top + (tile - thumb.height) // 2))
            except Exception as error:  # a file that no longer decodes still gets its caption
                draw.text((c * tile + 4, top + 4), error_text(error)[:14], fill="red")
            draw.text((c * tile + 2, top + tile), f"{sample_id} {row['label_name']}"[:16], fill="black")
    return sheet
