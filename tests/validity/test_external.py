"""External test sets: reading them as params.yaml describes, matching them against the dataset, scoring."""

from __future__ import annotations

import copy
import csv
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import untrained_checkpoint
from PIL import Image

from tumorbench.core.fileio import sha256_file
from tumorbench.core.parallel import parallel_map
from tumorbench.core.params import ParamsError, validate
from tumorbench.data import synthetic
from tumorbench.data.duplicates import hash_rows, image_hashes, loader_of
from tumorbench.data.prepare import prepare
from tumorbench.data.prepared import read_index
from tumorbench.validity.external import ExternalError, ExternalSet, read_external

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"threshold": 4, "flips": True}


def image(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(value).integers(0, 255, (40, 40), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_a_class_folder_missing_from_classes_names_the_key_and_the_folder(tmp_path):
    for name in ("notumor", "glioma"):
        image(tmp_path / "set" / name / "1.jpg")
    spec = {"path": str(tmp_path / "set"), "dataset": "br35h", "classes": {"notumor": "no"}}
    with pytest.raises(ExternalError) as error:
        read_external("kaggle", spec, ["no", "yes"])
    assert "external.kaggle.classes" in str(error.value) and "['glioma']" in str(error.value)


def test_a_class_the_dataset_lacks_an_empty_folder_and_a_missing_one_are_clear_errors(tmp_path):
    for name in ("notumor", "glioma"):
        image(tmp_path / "set" / name / "1.jpg")
    spec = {"path": str(tmp_path / "set"), "dataset": "mine", "classes": {"notumor": "no", "glioma": "tumour"}}
    with pytest.raises(ExternalError, match=r"maps to \['tumour'\], which mine has not"):
        read_external("kaggle", spec, ["no", "yes"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExternalError, match="external.kaggle.path: .*no labelled samples"):
        read_external("kaggle", {**spec, "path": str(tmp_path / "empty")}, ["no", "yes"])
    with pytest.raises(ExternalError, match="is not a folder"):
        read_external("kaggle", {**spec, "path": str(tmp_path / "nowhere")}, ["no", "yes"])


def test_params_check_an_external_entry_before_any_work():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for change, needle in [
        ({"dataset": "mnist"}, "external.generated.dataset"),
        ({"classes": {"notumor": "maybe"}}, "external.generated.classes"),
        ({"extra": 1}, "external.generated"),
    ]:
        bad = copy.deepcopy(params)
        bad["external"]["generated"].update(change)
        with pytest.raises(ParamsError, match=needle):
            validate(bad, root=ROOT)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The generated Br35H (50 per class) with its external set, prepared and hashed as the stages do."""
    work = tmp_path_factory.mktemp("external")
    zipfile.ZipFile(synthetic.write_br35h_zip(work / "b.zip", 50, seed=7)).extractall(work / "raw")
    prepare(work / "raw", work / "prepared", 32, 0.01, "br35h")
    index = read_index(work / "prepared" / "index.csv")
    jobs = [(str(work / "raw" / row["source_path"]), loader_of(row["source_path"])) for row in index]
    rows = hash_rows([row["sample_id"] for row in index], list(parallel_map(image_hashes, jobs)))
    return work, index, rows


def test_the_generated_external_set_overlaps_exactly_where_copies_were_planted(generated):
    work, index, rows = generated
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    spec = {**params["external"]["generated"], "path": str(work / "raw" / "external")}
    external = ExternalSet("generated", spec, ["no", "yes"], rows, SETTINGS, 32)
    copies = {r["source_path"]: m["kind"] for r, m in zip(external.records, external.matches)}
    per_class = synthetic.EXTERNAL_FRESH + synthetic.EXTERNAL_COPIES
    assert len(copies) == 2 * per_class
    planted = {path for path in copies if Path(path).stem.startswith("c")}
    assert {path for path, kind in copies.items() if kind} == planted  # every copy found, nothing else
    assert copies["tumor/c0.jpg"] == copies["notumor/c0.jpg"] == "exact"  # the byte-for-byte copies
    assert copies["tumor/c3.jpg"] == copies["notumor/c3.jpg"] == "near"  # the mirrored ones

    checkpoint = untrained_checkpoint(params["normalize"]["scratch"])
    train = [row["sample_id"] for row in index if row["sample_id"].endswith(("3", "7"))]  # any split will do
    split = {"train": train, "val": [row["sample_id"] for row in index if row["sample_id"] not in train]}
    result, predictions = external.evaluate(checkpoint, split, torch.device("cpu"), params)
    assert result["all"]["n"] == 2 * per_class and result["clean"]["n"] == 2 * synthetic.EXTERNAL_FRESH
    assert result["overlap"]["exact"] + result["overlap"]["near"] == len(planted)
    assert result["overlap"]["train"] + result["overlap"]["val"] == len(planted)
    assert 0 <= result["clean"]["accuracy"] <= 1 and len(result["clean"]["ci"]["accuracy"]) == 2
    rows_out = list(csv.DictReader(predictions.splitlines()))
    assert len(rows_out) == 2 * per_class and {"path", "predicted", "prob_no", "prob_yes", "side"} <= set(rows_out[0])


@pytest.mark.slow
def test_nickparvar_holds_the_403_byte_identical_br35h_images_and_its_clean_rest_is_evaluated(shared_data, tmp_path):
    prepare(shared_data / "br35h", tmp_path, 32, 0.01, "br35h")
    index = read_index(tmp_path / "index.csv")
    jobs = [(str(shared_data / "br35h" / row["source_path"]), "image") for row in index]
    rows = hash_rows([row["sample_id"] for row in index], list(parallel_map(image_hashes, jobs)))
    classes = {"notumor": "no", "glioma": "yes", "meningioma": "yes", "pituitary": "yes"}
    spec = {"path": str(shared_data / "nickparvar-test"), "dataset": "br35h", "classes": classes}
    external = ExternalSet("nickparvar", spec, ["no", "yes"], rows, SETTINGS, 32)
    labelled = {row["sha256"] for row in index}  # prepare records each file's sha256
    identical = [r for r in external.records if sha256_file(r["path"]) in labelled]
    folders = [Path(r["source_path"]).parts[0] for r in identical]
    assert folders.count("notumor") == 363 and folders.count("meningioma") == 40
    assert all(m["kind"] == "exact" for r, m in zip(external.records, external.matches) if r in identical)
    kinds = [m["kind"] for m in external.matches]
    assert kinds.count("exact") >= 403

    checkpoint = untrained_checkpoint()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    split = {"train": [row["sample_id"] for row in index], "val": []}
    result, _ = external.evaluate(checkpoint, split, torch.device("cpu"), params)
    assert result["all"]["n"] == 1301 and result["clean"]["n"] == 1301 - kinds.count("exact") - kinds.count("near")
    assert result["clean"]["n"] > 0 and 0 <= result["clean"]["accuracy"] <= 1
    print(
        f"nickparvar vs Br35H: {kinds.count('exact')} exact, {kinds.count('near')} near, {result['clean']['n']} clean"
    )
