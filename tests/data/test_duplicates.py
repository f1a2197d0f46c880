"""The duplicate audit: hashes, the near-pair search, groups, on generated and real images."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from tumorbench.core.parallel import parallel_map
from tumorbench.data import synthetic
from tumorbench.data.duplicates import (
    DIHEDRAL,
    audit,
    components,
    contact_sheet,
    hamming,
    hash_rows,
    image_hashes,
    loader_of,
    near_pairs,
    self_pairs,
)
from tumorbench.data.prepare import prepare
from tumorbench.data.prepared import read_index


def brute_force(queries: np.ndarray, base: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    distance = hamming(queries[:, None], base[None, :])
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(distance <= threshold))}


@pytest.mark.parametrize("threshold", [0, 1, 2, 4, 6, 9])
def test_near_pairs_finds_exactly_the_pairs_an_all_pairs_search_finds(threshold):
    rng = np.random.default_rng(threshold)
    base = rng.integers(0, 2**63, 1500, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    queries = base[rng.choice(1500, 400)].copy()
    for k in range(400):  # each query a copy of a base hash with 0 .. threshold + 2 bits flipped
        for bit in rng.choice(64, int(rng.integers(0, threshold + 3)), replace=False):
            queries[k] ^= np.uint64(1 << int(bit))
    i, j, d = near_pairs(queries, base, threshold)
    assert set(zip(i.tolist(), j.tolist())) == brute_force(queries, base, threshold)
    assert (d == hamming(queries[i], base[j])).all() and (d <= threshold).all()
    assert len(i) > 100  # most of the planted copies are within the threshold


def test_self_pairs_compare_every_variant_and_keep_each_pair_once_at_its_smallest_distance():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, (300, 8), dtype=np.int64).astype(np.uint64)
    hashes[7, 0] = hashes[3, 5]  # image 7 is a flip of image 3
    hashes[9, 2] = hashes[4, 0] ^ np.uint64(0b101)  # a flip of image 9 is 2 bits from image 4
    a, b, d = self_pairs(hashes, 2)
    assert list(zip(a.tolist(), b.tolist(), d.tolist())) == [(3, 7, 0), (4, 9, 2)]
    assert len(self_pairs(hashes[:, :1], 2)[0]) == 0  # without the variants neither pair is found


def test_components_are_disjoint_groups_of_two_or_more():
    groups = components(8, np.array([0, 1, 5, 6]), np.array([1, 2, 6, 5]))
    assert groups == [[0, 1, 2], [5, 6]]


def test_the_first_phash_is_imagehashs_and_the_others_are_of_the_rotations_and_flips(tmp_path):
    pixels = synthetic.br35h_image(seed=1, label=1, index=0)
    path = tmp_path / "a.png"
    Image.fromarray(pixels).save(path)
    found = image_hashes((str(path), "image"))
    assert found["phash"][0] == int(str(imagehash.phash(Image.fromarray(pixels))), 16)
    assert len(found["phash"]) == len(DIHEDRAL) == len(set(found["phash"]))
    Image.fromarray(np.ascontiguousarray(pixels[:, ::-1])).save(tmp_path / "mirrored.png")
    mirrored = image_hashes((str(tmp_path / "mirrored.png"), "image"))
    assert mirrored["phash"][0] in found["phash"]  # the mirror image's hash is one of the variants
    assert mirrored["pixels_sha256"] != found["pixels_sha256"]
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    assert image_hashes((str(tmp_path / "broken.jpg"), "image"))["error"]


@pytest.fixture(scope="module")
def generated_br35h(tmp_path_factory) -> tuple[Path, list[dict], list[dict]]:
    """A generated Br35H with 50 images per class: its copies are y24 of y23 (exact) and y49 of y47
    (re-encoded), and the same in no/."""
    work = tmp_path_factory.mktemp("generated")
    zipfile.ZipFile(synthetic.write_br35h_zip(work / "b.zip", 50, seed=7)).extractall(work / "raw")
    prepare(work / "raw", work / "prepared", 32, 0.01, "br35h")
    index = read_index(work / "prepared" / "index.csv")
    jobs = [(str(work / "raw" / row["source_path"]), loader_of(row["source_path"])) for row in index]
    rows = hash_rows([row["sample_id"] for row in index], list(parallel_map(image_hashes, jobs)))
    return work / "raw", index, rows


def test_audit_finds_the_generators_copies(generated_br35h):
    raw, index, rows = generated_br35h
    result = audit(index, rows, threshold=4, flips=True)
    assert ["yes/y23", "yes/y24"] in result["exact"] and ["no/no23", "no/no24"] in result["exact"]
    group_of = {sample: k for k, group in enumerate(result["near"]) for sample in group}
    for source, copy in [("y23", "y24"), ("y47", "y49"), ("no23", "no24"), ("no47", "no49")]:
        folder = "yes" if source.startswith("y") else "no"
        assert group_of[f"{folder}/{source}"] == group_of[f"{folder}/{copy}"]
    members = [sample for group in result["near"] for sample in group]
    assert len(members) == len(set(members)) == result["in_near_groups"]  # every sample in at most one group
    assert {"threshold", "label_conflicts", "exact", "near"} <= set(result)
    sheet = contact_sheet(result["near"], index, raw, "the largest groups")
    assert sheet.size[0] >= 4 * 96 and sheet.size[1] > 96


def test_a_higher_threshold_only_merges_groups(generated_br35h):
    _, index, rows = generated_br35h
    strict, loose = audit(index, rows, 2, True), audit(index, rows, 6, True)
    loose_group = {sample: k for k, group in enumerate(loose["near"]) for sample in group}
    for group in strict["near"]:
        assert len({loose_group[sample] for sample in group}) == 1
    assert loose["in_near_groups"] >= strict["in_near_groups"]


# ------------------------------------------------------------------ the real data


@pytest.fixture(scope="module")
def real_br35h(shared_data, tmp_path_factory) -> tuple[list[dict], list[dict]]:
    work = tmp_path_factory.mktemp("real")
    prepare(shared_data / "br35h", work, 32, 0.01, "br35h")
    index = read_index(work / "index.csv")
    jobs = [(str(shared_data / "br35h" / row["source_path"]), "image") for row in index]
    rows = hash_rows([row["sample_id"] for row in index], list(parallel_map(image_hashes, jobs)))
    with open(work / "hashes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return index, rows


@pytest.mark.slow
def test_real_br35h_exact_pair_and_near_copies_without_label_conflicts(real_br35h):
    index, rows = real_br35h
    result = audit(index, rows, threshold=4, flips=True)
    assert ["no/no355", "no/no532"] in result["exact"]
    assert result["label_conflicts"] == 0  # no group mixes tumour and normal images at the default threshold
    assert result["in_near_groups"] > 1500  # about half of Br35H has a copy (docs/VALIDITY.md)
