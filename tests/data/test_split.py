"""split: stratified (optionally patient-grouped) train/val split of a prepared dataset."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.model_selection import train_test_split

from tumorbench.core import fileio
from tumorbench.data.prepare import index_csv_text
from tumorbench.data.prepared import load_split_data
from tumorbench.data.readers import read_samples
from tumorbench.data.splits import SplitError, make_split, val_counts, write_split

ROOT = Path(__file__).resolve().parents[2]


def write_prepared(folder: Path, rows: list[dict]) -> tuple[Path, Path]:
    """index.csv + a tiny images.npy with one row per sample (split reads only its length)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"source_path": f"{r['sample_id']}.jpg", "sha256": "0" * 64, **r} for r in rows]
    fileio.atomic_write_text(folder / "index.csv", index_csv_text(rows))
    fileio.atomic_save_npy(folder / "images.npy", np.zeros((len(rows), 3, 2, 2), np.uint8))
    return folder / "index.csv", folder / "images.npy"


def unbalanced_rows(per_class=(37, 23, 11), names=("a", "b", "c")) -> list[dict]:
    rows = []
    for label, n in enumerate(per_class):
        rows += [
            {"sample_id": f"{names[label]}/{i}", "label": label, "label_name": names[label], "patient_id": ""}
            for i in range(n)
        ]
    return rows


@pytest.fixture(scope="module")
def figshare_prepared(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """The real figshare-jpg index from the folder reader's records, without decoding."""
    records, _, _ = read_samples(shared_data / "figshare-jpg")
    return write_prepared(tmp_path_factory.mktemp("figshare"), records)


def test_split_is_stratified_and_complete(tmp_path):
    index, images = write_prepared(tmp_path / "prepared" / "toy", unbalanced_rows())
    split = make_split(index, images, val_fraction=0.3, seed=1, group_by="none")
    assert sorted(split["train"] + split["val"]) == sorted(r["sample_id"] for r in unbalanced_rows())
    assert not set(split["train"]) & set(split["val"])
    # scikit-learn's counts: ceil(71 * 0.3) = 22 for validation, training shared out by largest remainder
    assert split["counts"] == {"train": {"a": 25, "b": 16, "c": 8}, "val": {"a": 12, "b": 7, "c": 3}}
    for name, n in zip("abc", (37, 23, 11)):
        assert abs(split["counts"]["val"][name] - n * 0.3) <= 1  # within one sample of the fraction
        assert sum(s.startswith(name + "/") for s in split["val"]) == split["counts"]["val"][name]
    assert split["params"] == {"val_fraction": 0.3, "seed": 1, "group_by": "none"}
    assert split["prepared_md5"] == {"images.npy": fileio.md5_file(images), "index.csv": fileio.md5_file(index)}
    order = [r["sample_id"] for r in unbalanced_rows()]
    assert split["val"] == sorted(split["val"], key=order.index)  # listed in index order


def test_val_counts_are_scikit_learns_stratified_counts():
    # figshare's classes: 1226 validation slices, as the paper's accuracies (multiples of 1/1226) imply
    assert val_counts({0: 708, 1: 1426, 2: 930}, 0.4) == {0: 283, 1: 571, 2: 372}
    assert val_counts({0: 1500, 1: 1500}, 0.4) == {0: 600, 1: 600}
    rng = np.random.default_rng(0)
    for trial in range(100):
        sizes = rng.integers(3, 400, rng.integers(2, 5))
        fraction = float(rng.choice([0.1, 0.25, 0.3, 0.4, 0.5]))
        labels = np.repeat(np.arange(len(sizes)), sizes)
        _, val = train_test_split(labels, test_size=fraction, stratify=labels, random_state=trial)
        theirs = np.bincount(val, minlength=len(sizes))
        ours = val_counts(dict(enumerate(sizes.tolist())), fraction)
        assert sum(ours.values()) == len(val)
        # equal, except where equal remainders tie: scikit-learn breaks those at random, we by label
        assert all(abs(ours[label] - theirs[label]) <= 1 for label in ours), (sizes, fraction)


def test_split_is_byte_identical_and_depends_on_seed(tmp_path):
    index, images = write_prepared(tmp_path / "prepared" / "toy", unbalanced_rows())
    write_split(make_split(index, images, 0.3, 5, "none"), tmp_path / "one.json")
    write_split(make_split(index, images, 0.3, 5, "none"), tmp_path / "two.json")
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()
    assert (tmp_path / "one.json").read_text() == fileio.to_json(json.loads((tmp_path / "one.json").read_text()))
    other = make_split(index, images, 0.3, 6, "none")
    assert other["val"] != json.loads((tmp_path / "one.json").read_text())["val"]
    assert other["counts"] == json.loads((tmp_path / "one.json").read_text())["counts"]


def test_split_data_holds_the_rows_the_split_names_and_reads_each_part_only_when_asked(tmp_path):
    rows = unbalanced_rows()
    index, images_path = write_prepared(tmp_path / "data" / "prepared" / "toy", rows)
    images = np.arange(len(rows), dtype=np.uint8)[:, None, None, None] * np.ones((1, 3, 2, 2), np.uint8)
    fileio.atomic_save_npy(images_path, images)  # image i is filled with the value i
    split = make_split(index, images_path, val_fraction=0.3, seed=1, group_by="none")
    write_split(split, tmp_path / "data" / "splits" / "toy.json")
    order = [r["sample_id"] for r in rows]

    data = load_split_data("toy", root=tmp_path)
    assert [order[i] for i in data.val_images[:, 0, 0, 0]] == split["val"] == data.val_ids
    assert list(data.val_labels) == [rows[order.index(s)]["label"] for s in split["val"]]
    assert "train_images" not in vars(data)  # evaluation, which reads only val, never loaded these
    assert [order[i] for i in data.train_images[:, 0, 0, 0]] == split["train"]
    assert list(data.train_labels) == [rows[order.index(s)]["label"] for s in split["train"]]
    assert data.class_names == ["a", "b", "c"]


def test_split_by_patient_on_real_figshare(figshare_prepared):
    index, images = figshare_prepared
    split = make_split(index, images, val_fraction=0.2, seed=42, group_by="patient", dataset="figshare")
    with open(index, newline="") as f:
        rows = list(csv.DictReader(f))
    patient_of = {r["sample_id"]: r["patient_id"] for r in rows}
    train_patients = {patient_of[s] for s in split["train"]}
    val_patients = {patient_of[s] for s in split["val"]}
    assert not train_patients & val_patients
    assert len(train_patients | val_patients) == 233
    assert len(split["train"]) + len(split["val"]) == 3064
    totals = {"meningioma": 708, "glioma": 1426, "pituitary": 930}
    for name, total in totals.items():
        assert split["counts"]["train"][name] + split["counts"]["val"][name] == total
        assert abs(split["counts"]["val"][name] / total - 0.2) < 0.02, split["counts"]
    again = make_split(index, images, val_fraction=0.2, seed=42, group_by="patient", dataset="figshare")
    assert fileio.to_json(again) == fileio.to_json(split)

    plain = make_split(index, images, val_fraction=0.2, seed=42, group_by="none", dataset="figshare")
    mixed = {patient_of[s] for s in plain["train"]} & {patient_of[s] for s in plain["val"]}
    assert len(mixed) > 100  # without grouping most patients straddle the split


def test_split_by_patient_mixed_class_patient(tmp_path):
    rows = [
        {"sample_id": str(i), "label": label, "label_name": "xy"[label], "patient_id": pid}
        for i, (label, pid) in enumerate(
            [
                (0, "p1"),
                (0, "p1"),
                (1, "p1"),
                (0, "p2"),
                (0, "p3"),
                (0, "p3"),
                (1, "p4"),
                (1, "p4"),
                (1, "p5"),
                (1, "p6"),
                (0, "p7"),
                (1, "p8"),
            ]
        )
    ]
    index, images = write_prepared(tmp_path / "prepared" / "toy", rows)
    for seed in range(5):
        split = make_split(index, images, 0.4, seed, "patient")
        by_patient = Counter()
        for side in ("train", "val"):
            for s in split[side]:
                by_patient[(rows[int(s)]["patient_id"], side)] += 1
        sides = Counter(pid for pid, _ in by_patient)
        assert all(n == 1 for n in sides.values())  # p1 (mostly x, one y) stays on one side
        assert split["train"] and split["val"]


def test_split_by_patient_without_any_patient_ids_splits_image_by_image(tmp_path):
    index, images = write_prepared(tmp_path / "prepared" / "br35h", unbalanced_rows((5, 5), ("no", "yes")))
    grouped = make_split(index, images, 0.3, 0, "patient")
    plain = make_split(index, images, 0.3, 0, "none")
    assert grouped["group_by_applied"] == "none (no patient ids)"
    assert (grouped["train"], grouped["val"]) == (plain["train"], plain["val"])


def test_split_by_patient_with_some_patient_ids_missing_fails(tmp_path):
    rows = unbalanced_rows((5, 5), ("no", "yes"))
    rows[0]["patient_id"] = "p1"
    index, images = write_prepared(tmp_path / "prepared" / "mixed", rows)
    with pytest.raises(SplitError) as error:
        make_split(index, images, 0.3, 0, "patient")
    assert "mixed" in str(error.value) and "no patient id" in str(error.value) and "group_by" in str(error.value)


def test_split_bad_inputs(tmp_path):
    index, images = write_prepared(tmp_path / "prepared" / "toy", unbalanced_rows())
    np.save(images, np.zeros((3, 3, 2, 2), np.uint8))
    with pytest.raises(SplitError, match="71 rows but .* has 3 images"):
        make_split(index, images, 0.3, 0, "none")
    with pytest.raises(SplitError, match="is missing"):
        make_split(tmp_path / "nowhere" / "index.csv", images, 0.3, 0, "none")
    index, images = write_prepared(tmp_path / "prepared" / "tiny", unbalanced_rows((1, 1)))
    with pytest.raises(SplitError, match="train side empty"):
        make_split(index, images, 0.6, 0, "none")  # ceil(2 * 0.6) = 2 validation samples of 2


def test_split_stage_script(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["split"] = {"val_fraction": 0.25, "seed": 3, "group_by": "none"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_prepared(tmp_path / "data" / "prepared" / "br35h", unbalanced_rows((8, 12), ("no", "yes")))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "split.py"), "br35h"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    split = json.loads((tmp_path / "data" / "splits" / "br35h.json").read_text())
    assert split["counts"] == {"train": {"no": 6, "yes": 9}, "val": {"no": 2, "yes": 3}}
    assert "val 5 (no 2, yes 3)" in result.stdout

    params["split"]["group_by"] = "patient"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "split.py"), "br35h"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0 and "no patient ids" in result.stdout


def grouped_rows() -> tuple[list[dict], list[list[str]]]:
    """60 samples of two classes; 10 duplicate groups of 2-4, one mixing the classes."""
    rows = [
        {"sample_id": f"s{i}", "label": i % 2, "label_name": "ab"[i % 2], "patient_id": f"p{i // 3}"} for i in range(60)
    ]
    groups = [[f"s{i}", f"s{i + 2}"] for i in range(0, 16, 4)] + [[f"s{i}", f"s{i + 2}", f"s{i + 4}"] for i in (20, 30)]
    groups += [["s40", "s41", "s43", "s45"], ["s50", "s52"], ["s51", "s53"], ["s55", "s57"]]
    return rows, groups


@pytest.mark.parametrize("group_by", ["duplicates", "patient+duplicates", "patient"])
def test_grouped_split_keeps_every_group_on_one_side_and_stays_stratified(tmp_path, group_by):
    rows, groups = grouped_rows()
    index, images = write_prepared(tmp_path / "prepared" / "toy", rows)
    duplicates = {"near": groups, "threshold": 4, "flips": True}
    for seed in range(6):
        split = make_split(index, images, 0.4, seed, group_by, duplicates=duplicates)
        val = set(split["val"])
        side = {s: s in val for s in split["train"] + split["val"]}
        for group in groups if "duplicates" in group_by else []:
            assert len({side[s] for s in group}) == 1
        if "patient" in group_by:
            for p in {r["patient_id"] for r in rows}:
                assert len({side[r["sample_id"]] for r in rows if r["patient_id"] == p}) == 1
        assert split["groups"]["crossing"] == 0 and split["groups"]["count"] > 0
        assert abs(len(val) - 24) <= 4 and all(abs(n - 12) <= 4 for n in split["counts"]["val"].values())
    assert split["group_by_applied"] == group_by and split["params"]["group_by"] == group_by
    if "duplicates" in group_by:
        assert split["params"]["duplicates_threshold"] == 4


def test_patient_plus_duplicates_without_patient_ids_groups_by_duplicates(tmp_path):
    rows, groups = grouped_rows()
    for r in rows:
        r["patient_id"] = ""
    index, images = write_prepared(tmp_path / "prepared" / "br35h", rows)
    split = make_split(
        index, images, 0.4, 0, "patient+duplicates", duplicates={"near": groups, "threshold": 4, "flips": True}
    )
    assert split["group_by_applied"] == "duplicates (no patient ids)"
    assert split["groups"]["count"] == len(groups) and split["groups"]["crossing"] == 0


def test_a_group_larger_than_the_validation_split_is_an_error_naming_it_and_the_threshold(tmp_path):
    rows, _ = grouped_rows()
    index, images = write_prepared(tmp_path / "prepared" / "toy", rows)
    huge = [[f"s{i}" for i in range(30)]]
    with pytest.raises(SplitError) as error:
        make_split(index, images, 0.4, 0, "duplicates", duplicates={"near": huge, "threshold": 9, "flips": True})
    message = str(error.value)
    assert "a group of 30 samples (s0, s1" in message and "duplicates.threshold = 9" in message
    assert "Lower duplicates.threshold" in message


def test_the_papers_random_split_is_byte_identical_to_the_code_before_grouping(figshare_prepared, tmp_path):
    """md5 of the split file commit 6f3a708 wrote for these inputs, less prepared_md5 (the index gained
    its cv_fold column since): neither grouping nor cross-validation may move a member."""

    def md5_without_index_hash(split):
        split = {k: v for k, v in split.items() if k != "prepared_md5"}
        return hashlib.md5(fileio.to_json(split).encode()).hexdigest()

    index, images = figshare_prepared
    split = make_split(index, images, 0.4, 42, "none", "figshare")
    assert md5_without_index_hash(split) == "82d04558d123c01db51ebbf5f65e5fe6"
    index, images = write_prepared(tmp_path / "prepared" / "toy", unbalanced_rows())
    split = make_split(index, images, 0.3, 1, "none", "toy")
    assert md5_without_index_hash(split) == "69f2b67ef8e11345d38a77856ac38290"
