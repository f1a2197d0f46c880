"""prepare: decode a raw tree once into images.npy + index.csv + report.json."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tumorbench.core import fileio
from tumorbench.data.prepare import INDEX_COLUMNS, PrepareError, prepare
from tumorbench.data.readers import decode_image

ROOT = Path(__file__).resolve().parents[2]


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def gradient(mode: str = "RGB", size=(48, 40)) -> Image.Image:
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    rgb = np.stack([x * 5 % 256, y * 6 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB").convert(mode)


def write_messy_br35h(root: Path) -> dict[str, str]:
    """A small Br35H-layout tree: 9 good images (some quirky) and 3 unreadable files; returns path -> kind."""
    good_jpeg = encode(gradient(), "JPEG", quality=90)
    rgba = gradient("RGBA")
    rgba.putalpha(128)
    palette = gradient().quantize(16)
    files = {
        "yes/y0.jpg": good_jpeg,
        "yes/y1.jpg": encode(gradient(), "PNG"),  # PNG under a .jpg name
        "yes/y2.jpg": encode(palette, "PNG"),  # palette
        "yes/y3.jpg": encode(rgba, "PNG"),  # RGBA
        "yes/y10.jpg": good_jpeg,  # duplicate of y0
        "no/no0.jpg": encode(gradient("L"), "JPEG"),
        "no/No1.jpg": encode(gradient("L", (30, 60)), "PNG"),
        "no/no2.jpg": encode(gradient("CMYK"), "JPEG"),
        "no/no3.jpeg": encode(gradient(), "JPEG", quality=50),
        "no/no4.jpg": good_jpeg[: len(good_jpeg) // 2],  # truncated
        "no/no5.jpg": b"",  # empty
        "yes/y4.jpg": b"<html>404 not found</html>\n",  # text named .jpg
        "pred/pred0.jpg": good_jpeg,  # unlabeled: not a sample
    }
    for rel, data in files.items():
        path = root / "Br35H" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def read_index(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_prepare_small_tree(tmp_path):
    raw = tmp_path / "raw"
    files = write_messy_br35h(raw)
    report = prepare(raw, tmp_path / "out", image_size=32, max_unreadable=0.3, dataset_name="br35h")

    assert report["reader"] == "br35h" and report["class_names"] == ["no", "yes"]
    assert report["counts"] == {"no": 4, "yes": 5} and report["n_samples"] == 9 and report["n_files"] == 12
    reasons = {u["path"]: u["reason"] for u in report["unreadable"]}
    assert set(reasons) == {"Br35H/no/no4.jpg", "Br35H/no/no5.jpg", "Br35H/yes/y4.jpg"}
    assert reasons["Br35H/no/no5.jpg"] == "empty file"
    assert "not an image" in reasons["Br35H/yes/y4.jpg"]
    assert "truncated" in reasons["Br35H/no/no4.jpg"].lower()
    assert report["duplicates"] == [["Br35H/yes/y0.jpg", "Br35H/yes/y10.jpg"]]

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["images.npy", "index.csv", "masks.npz", "report.json"]
    with np.load(out / "masks.npz") as masks:  # Br35H folders hold no masks: all empty, none marked
        assert masks["masks"].shape == (9, 32, 32) and not masks["masks"].any() and not masks["has_mask"].any()
    assert report["n_masks"] == 0
    assert json.loads((out / "report.json").read_text()) == report
    rows = read_index(out / "index.csv")
    assert list(rows[0]) == INDEX_COLUMNS
    assert [r["sample_id"] for r in rows] == [
        "no/no0",
        "no/No1",
        "no/no2",
        "no/no3",
        "yes/y0",
        "yes/y1",
        "yes/y2",
        "yes/y3",
        "yes/y10",
    ]
    images = np.load(out / "images.npy")
    assert images.shape == (9, 3, 32, 32) and images.dtype == np.uint8
    for i, row in enumerate(rows):
        source = raw / row["source_path"]
        assert row["sha256"] == fileio.sha256_bytes(files[row["source_path"].removeprefix("Br35H/")])
        assert row["label"] == ("1" if row["label_name"] == "yes" else "0") and row["patient_id"] == ""
        assert np.array_equal(images[i], decode_image(source, 32))  # row i is index row i
    assert images[rows.index(next(r for r in rows if r["sample_id"] == "yes/y3"))].mean() < images[4].mean()


def test_prepare_is_byte_identical_on_rerun(tmp_path):
    raw = tmp_path / "raw"
    write_messy_br35h(raw)
    first = prepare(raw, tmp_path / "a", image_size=32, max_unreadable=0.3, dataset_name="br35h")
    second = prepare(raw, tmp_path / "b", image_size=32, max_unreadable=0.3, dataset_name="br35h")
    assert first == second
    for name in ("images.npy", "index.csv", "masks.npz", "report.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_prepare_too_many_unreadable_fails_and_writes_nothing(tmp_path):
    raw = tmp_path / "raw"
    write_messy_br35h(raw)
    out = tmp_path / "out"
    with pytest.raises(PrepareError) as error:
        prepare(raw, out, image_size=32, max_unreadable=0.2, dataset_name="br35h")  # 3/12 = 25% > 20%
    message = str(error.value)
    assert "data.max_unreadable" in message and "3 of 12" in message
    for name in ("no/no4.jpg", "no/no5.jpg", "yes/y4.jpg"):
        assert name in message
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())  # no temporary left either

    out.mkdir()
    (out / "images.npy").write_bytes(b"old")  # an older output is left as it was
    with pytest.raises(PrepareError):
        prepare(raw, out, image_size=32, max_unreadable=0.0, dataset_name="br35h")
    assert (out / "images.npy").read_bytes() == b"old"


def test_prepare_lists_at_most_ten_unreadable_by_name(tmp_path):
    raw = tmp_path / "raw"
    for i in range(3):
        (raw / "yes").mkdir(parents=True, exist_ok=True)
        (raw / "yes" / f"y{i}.jpg").write_bytes(encode(gradient(), "JPEG"))
    for i in range(14):
        (raw / "no").mkdir(exist_ok=True)
        (raw / "no" / f"no{i}.jpg").write_bytes(b"")
    with pytest.raises(PrepareError) as error:
        prepare(raw, tmp_path / "out", image_size=32, max_unreadable=0.5, dataset_name="br35h")
    assert "no/no9.jpg" in str(error.value) and "no/no13.jpg" not in str(error.value)
    assert "and 4 more" in str(error.value)


def test_prepare_mat_files(shared_data, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(shared_data / "figshare-mat-sample", raw / "brainTumorDataPublic_1-766")
    shutil.copy(shared_data / "figshare-jpg" / "cvind.mat", raw / "cvind.mat")
    (raw / "bad.mat").write_bytes(b"MATLAB 7.3 MAT-file" + b"\0" * 600)
    report = prepare(raw, tmp_path / "out", image_size=64, max_unreadable=0.1, dataset_name="figshare")
    assert report["reader"] == "figshare-mat" and report["counts"] == {"meningioma": 8, "glioma": 8, "pituitary": 8}
    assert [u["path"] for u in report["unreadable"]] == ["bad.mat"]
    assert report["n_patients"] == 20
    rows = read_index(tmp_path / "out" / "index.csv")
    images = np.load(tmp_path / "out" / "images.npy")
    assert images.shape == (24, 3, 64, 64)
    for row in rows:
        assert row["sha256"] == fileio.sha256_file(raw / row["source_path"])  # of the .mat file
        assert row["patient_id"]
    assert rows[0]["sample_id"] == "1" and rows[-1]["sample_id"] == "3064"


@pytest.mark.slow
def test_prepare_real_br35h_all_decode(shared_data, tmp_path):
    start = time.time()
    report = prepare(
        shared_data / "br35h", tmp_path / "out", image_size=32, max_unreadable=0.0, dataset_name="br35h"
    )  # 3000 files: goes through the process pool
    seconds = time.time() - start
    assert report["counts"] == {"no": 1500, "yes": 1500} and report["unreadable"] == []
    assert ["no/no355.jpg", "no/no532.jpg"] in report["duplicates"]
    images = np.load(tmp_path / "out" / "images.npy", mmap_mode="r")
    rows = read_index(tmp_path / "out" / "index.csv")
    assert images.shape == (3000, 3, 32, 32) and len(rows) == 3000
    for i in (0, 7, 1500, 2999) + tuple(i for i, r in enumerate(rows) if r["sample_id"] in ("yes/y355", "no/No12")):
        assert np.array_equal(images[i], decode_image(shared_data / "br35h" / rows[i]["source_path"], 32))
    assert images.reshape(3000, -1).max(axis=1).min() > 0  # no blank rows
    print(f"prepare real br35h, 3000 files at 32 px: {seconds:.1f} s ({1000 * seconds / 3000:.2f} ms/file)")


def test_prepare_stage_script(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["image_size"] = 32
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_messy_br35h(tmp_path / "data" / "raw" / "br35h")
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "prepare.py"), "br35h"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode != 0 and "data.max_unreadable" in result.stderr  # 3 of 12 > 0.01
    params["data"]["max_unreadable"] = 0.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "prepare.py"), "br35h"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "9 samples (no 4, yes 5)" in result.stdout and "3 unreadable" in result.stdout
    assert np.load(tmp_path / "data" / "prepared" / "br35h" / "images.npy").shape == (9, 3, 32, 32)
