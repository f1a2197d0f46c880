"""Cross-validation folds: the author's cvind.mat where a dataset has one, else stratified group folds."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from test_split import unbalanced_rows, write_prepared

from tumorbench.core.variants import Variant, stage_name
from tumorbench.data import synthetic
from tumorbench.data.download import extract_zip, unpack_nested
from tumorbench.data.prepared import fold_parts, load_split_data
from tumorbench.data.readers import ReaderError, read_samples
from tumorbench.data.splits import SplitError, make_cv_folds, write_split


def cvind_folds(path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["cvind"][()].ravel().astype(int)


@pytest.fixture(scope="module")
def figshare_cv(shared_data, tmp_path_factory):
    records, _, _ = read_samples(shared_data / "figshare-jpg")
    index, images = write_prepared(tmp_path_factory.mktemp("figshare"), records)
    return records, make_cv_folds(index, images, folds=5, seed=0, group_by="patient", dataset="figshare")


def test_real_figshare_folds_are_exactly_cvind(shared_data, figshare_cv):
    records, cv = figshare_cv
    truth = cvind_folds(shared_data / "figshare-jpg" / "cvind.mat")
    assert truth.size == len(records) == 3064
    assert cv["source"] == "cvind.mat" and len(cv["folds"]) == 5
    for k, members in enumerate(cv["folds"], 1):
        assert members == [str(i + 1) for i in np.flatnonzero(truth == k)]
    assert cv["groups"] == {"count": 233, "crossing": 0}  # patients: none in two folds
    patient = {r["sample_id"]: r["patient_id"] for r in records}
    per_fold = [{patient[s] for s in members} for members in cv["folds"]]
    assert sum(len(a & b) for i, a in enumerate(per_fold) for b in per_fold[i + 1 :]) == 0


def test_the_author_folds_refuse_another_count(shared_data, tmp_path):
    records, _, _ = read_samples(shared_data / "figshare-jpg")
    index, images = write_prepared(tmp_path, records)
    with pytest.raises(SplitError, match=r"cvind.mat defines 5; set cv.folds to \[1, 2, 3, 4, 5\]"):
        make_cv_folds(index, images, folds=3, seed=0, group_by="patient", dataset="figshare")


def test_a_cvind_of_another_length_is_named(shared_data, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(shared_data / "figshare-mat-sample", raw / "slices")
    with h5py.File(raw / "cvind.mat", "w") as f:
        f["cvind"] = np.ones((1, 100))
    with pytest.raises(ReaderError, match=r"cvind.mat: 100 folds, but the slices run to 3064"):
        read_samples(raw)


def test_generated_figshare_carries_its_cvind(tmp_path):
    archive = synthetic.write_figshare_zip(tmp_path / "figshare.zip", [6, 8, 6], 10, 32, seed=3)
    extract_zip(archive, tmp_path / "raw")
    unpack_nested(tmp_path / "raw")
    records, _, reader = read_samples(tmp_path / "raw")
    assert reader == "figshare-mat" and {r["cv_fold"] for r in records} == {"1", "2", "3", "4", "5"}
    index, images = write_prepared(tmp_path / "prepared", records)
    cv = make_cv_folds(index, images, folds=5, seed=0, group_by="patient")
    assert cv["source"] == "cvind.mat" and cv["groups"]["crossing"] == 0


def grouped_rows() -> list[dict]:
    """60 samples of 2 classes, patients of 3 slices each (20 patients)."""
    return [
        {"sample_id": str(i), "label": (i // 3) % 2, "label_name": "ab"[(i // 3) % 2], "patient_id": f"p{i // 3}"}
        for i in range(60)
    ]


def test_group_folds_keep_groups_together_and_stratify(tmp_path):
    index, images = write_prepared(tmp_path, grouped_rows())
    cv = make_cv_folds(index, images, folds=5, seed=0, group_by="patient")
    assert cv["source"] == "StratifiedGroupKFold"
    assert sorted(s for fold in cv["folds"] for s in fold) == sorted(str(i) for i in range(60))
    assert cv["groups"] == {"count": 20, "crossing": 0}
    for counts in cv["counts"]:
        assert counts == {"a": 6, "b": 6}  # 4 patients a fold, 2 of each class
    again = make_cv_folds(index, images, folds=5, seed=0, group_by="patient")
    assert again == cv
    assert make_cv_folds(index, images, folds=5, seed=1, group_by="patient")["folds"] != cv["folds"]


def test_duplicate_groups_never_span_two_folds(tmp_path):
    rows = unbalanced_rows()
    index, images = write_prepared(tmp_path, rows)
    near = [["a/0", "a/1", "b/5"], ["c/2", "c/3"]]
    cv = make_cv_folds(index, images, folds=4, seed=0, group_by="duplicates", duplicates={"near": near})
    fold_of = {s: k for k, fold in enumerate(cv["folds"]) for s in fold}
    for group in near:
        assert len({fold_of[s] for s in group}) == 1
    assert cv["groups"]["crossing"] == 0


@pytest.mark.parametrize("folds", [1, 21])
def test_fold_counts_outside_two_to_the_groups_are_refused(tmp_path, folds):
    index, images = write_prepared(tmp_path, grouped_rows())
    with pytest.raises(SplitError, match="use 2 to 20 folds"):
        make_cv_folds(index, images, folds=folds, seed=0, group_by="patient")


def test_a_fold_without_a_class_to_train_on_is_refused(tmp_path):
    rows = grouped_rows() + [{"sample_id": "rare", "label": 2, "label_name": "c", "patient_id": "p99"}]
    index, images = write_prepared(tmp_path, rows)
    with pytest.raises(SplitError, match=r"leaves no \['c'\] sample to train on; use fewer folds"):
        make_cv_folds(index, images, folds=3, seed=0, group_by="patient")


def test_a_fold_variant_trains_on_the_other_folds(tmp_path):
    rows = grouped_rows()
    prepared = tmp_path / "data" / "prepared" / "toy"
    index, images = write_prepared(prepared, rows)
    cv = make_cv_folds(index, images, folds=3, seed=0, group_by="patient")
    write_split(cv, tmp_path / "data" / "splits" / "toy-cv.json")
    data = load_split_data("toy", root=tmp_path, protocol="cv2")
    assert data.val_ids == cv["folds"][1]
    assert len(data.train_index) == len(cv["folds"][0]) + len(cv["folds"][2])
    assert (
        fold_parts(json.loads((tmp_path / "data/splits/toy-cv.json").read_text()), 2, tmp_path)["val"] == cv["folds"][1]
    )
    variant = Variant("toy", "resnet18", "scratch", "cv2")
    assert variant.name == "toy-resnet18-scratch-cv2" and variant.split.name == "toy-cv.json"
    assert variant.stage("train") == "train_cv@toy-resnet18-scratch-2"
    assert stage_name("split", "cv", "toy") == "split_cv@toy"
    assert sum(map(len, cv["folds"])) == 60 and all(len(f) % 3 == 0 for f in cv["folds"])  # whole patients
