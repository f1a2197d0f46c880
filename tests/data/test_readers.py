"""Readers: finding labelled samples in raw trees, .mat slices, and image decoding."""

from __future__ import annotations

import csv
import io
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tumorbench.data.prepare import decode_file
from tumorbench.data.readers import (
    ReaderError,
    UnreadableImage,
    decode_image,
    natural_key,
    read_mat_slice,
    read_samples,
)

# ------------------------------------------------------------------ helpers


def save_image(path: Path, size=(40, 30), mode="RGB", color=(200, 100, 50), fmt="JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, fmt)
    return path


def image_bytes(image: Image.Image, fmt="PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def read_metadata(shared_data: Path) -> dict[str, dict]:
    with open(shared_data / "figshare-jpg" / "metadata.csv", newline="") as f:
        return {row["sample_id"]: row for row in csv.DictReader(f)}


def extract_nested(archive: Path, dest: Path) -> Path:
    """Unzip, then unzip every zip found inside into a folder named after it (as a download does)."""
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)
    while inner := sorted(dest.rglob("*.zip")):
        for path in inner:
            with zipfile.ZipFile(path) as zf:
                zf.extractall(path.with_suffix(""))
            path.unlink()
    return dest


# ---------------------------------------------------------- real data: Br35H


def test_br35h_real_records(shared_data):
    records, class_names, reader = read_samples(shared_data / "br35h")
    assert reader == "br35h" and class_names == ["no", "yes"]
    assert Counter(r["label_name"] for r in records) == {"no": 1500, "yes": 1500}
    assert all(r["label"] == class_names.index(r["label_name"]) for r in records)
    ids = [r["sample_id"] for r in records]
    assert len(set(ids)) == 3000
    assert not any(r["source_path"].startswith("pred/") for r in records)
    assert {"no/No12", "no/No19", "yes/y0", "yes/y1499", "no/no1499"} <= set(ids)
    assert sum(r["source_path"].startswith("no/No") for r in records) == 7
    assert ids == sorted(ids, key=natural_key)  # natural order: y2 before y10
    assert ids.index("yes/y2") < ids.index("yes/y10")
    assert all(r["patient_id"] == "" and r["loader"] == "image" and not r["error"] for r in records)


def test_br35h_real_png_named_jpg_decode(shared_data):
    # Files whose bytes are PNG though they are named .jpg. The data README says 18; the copy
    # here has 13 in yes/ and no/ (plus pred/pred47.jpg): we count them from the bytes.
    records, _, _ = read_samples(shared_data / "br35h")
    png = [r for r in records if Path(r["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"]
    assert len(png) == 13 and "yes/y355.jpg" in {r["source_path"] for r in png}
    for record in png:
        pixels = decode_file((record["loader"], record["path"], 32))[1]
        assert pixels.shape == (3, 32, 32) and pixels.dtype == np.uint8 and pixels.max() > 0


# ---------------------------------------------------- real data: figshare jpg


def test_figshare_jpg_real_records(shared_data):
    records, class_names, reader = read_samples(shared_data / "figshare-jpg")
    assert reader == "folder"
    assert class_names == ["meningioma", "glioma", "pituitary"]  # ordered by the metadata's codes 1, 2, 3
    assert Counter(r["label_name"] for r in records) == {"glioma": 1426, "meningioma": 708, "pituitary": 930}
    assert len({r["patient_id"] for r in records}) == 233
    assert not any(r["source_path"].startswith("masks/") for r in records)
    metadata = read_metadata(shared_data)
    assert len(records) == len(metadata) == 3064
    for r in records:
        row = metadata[r["sample_id"]]
        assert (r["label"], r["label_name"], r["patient_id"]) == (int(row["label"]) - 1, row["label_name"], row["pid"])
    by_id = {r["sample_id"]: r for r in records}
    for sample_id in ("1", "955", "1070", "1207", "3064"):  # 512 and 256 px slices
        pixels = decode_file((by_id[sample_id]["loader"], by_id[sample_id]["path"], 64))[1]
        assert pixels.shape == (3, 64, 64) and pixels.max() > 0
        assert np.array_equal(pixels[0], pixels[2])  # grayscale copied to 3 channels


# ---------------------------------------------------- real data: figshare mat


def test_figshare_mat_real_records_match_metadata(shared_data):
    records, class_names, reader = read_samples(shared_data / "figshare-mat-sample")
    assert reader == "figshare-mat" and class_names == ["meningioma", "glioma", "pituitary"]
    assert len(records) == 24 and all(r["loader"] == "mat" and not r["error"] for r in records)
    metadata = read_metadata(shared_data)
    for r in records:
        assert r["sample_id"] == Path(r["source_path"]).stem
        row = metadata[r["sample_id"]]
        assert r["label"] == int(row["label"]) - 1 and r["label_name"] == row["label_name"]
        assert r["patient_id"] == row["pid"]
    assert {r["patient_id"] for r in records} >= {"100360", "MR049453B"}  # numeric and text PIDs


def test_figshare_mat_orientation_matches_jpg_copy(shared_data):
    mask_ratios = []
    for sample_id in sorted((p.stem for p in (shared_data / "figshare-mat-sample").glob("*.mat")), key=int):
        mat = read_mat_slice(shared_data / "figshare-mat-sample" / f"{sample_id}.mat")
        image, mask = mat["image"], mat["mask"]
        assert image.dtype == np.uint8 and image.ndim == 2 and image.min() == 0 and image.max() == 255
        assert mask.dtype == bool and mask.shape == image.shape and mask.any()
        jpg = next((shared_data / "figshare-jpg" / "images").glob(f"*/{sample_id}.jpg"))
        copy = np.asarray(Image.open(jpg).convert("L"), dtype=np.float64)
        assert np.corrcoef(image.ravel(), copy.ravel())[0, 1] > 0.9
        assert np.corrcoef(image.T.ravel(), copy.ravel())[0, 1] < 0.8  # the untransposed array would not match
        jpg_mask = (
            np.asarray(Image.open(shared_data / "figshare-jpg" / "masks" / f"{sample_id}.jpg").convert("L")) > 127
        )
        assert (mask & jpg_mask).sum() / (mask | jpg_mask).sum() > 0.9
        rows, cols = mat["border"][:, 1].astype(int) - 1, mat["border"][:, 0].astype(int) - 1  # [x, y], 1-based
        assert mask[rows, cols].mean() > 0.9
        mask_ratios.append(image[mask].mean() / image.mean())
        if sample_id in ("1070", "1203"):
            assert image.shape == (256, 256) and mat["label"] == 2
    assert len(mask_ratios) == 24
    assert np.median(mask_ratios) > 1.5  # lesions are mostly brighter than the slice


def test_mat_reader_skips_cvind_and_flags_broken_files(shared_data, tmp_path):
    for name in ("1.mat", "1070.mat", "2299.mat"):
        shutil.copy(shared_data / "figshare-mat-sample" / name, tmp_path / name)
    shutil.copy(shared_data / "figshare-jpg" / "cvind.mat", tmp_path / "cvind.mat")
    data = (shared_data / "figshare-mat-sample" / "3064.mat").read_bytes()
    (tmp_path / "3064.mat").write_bytes(data[:1000])
    records, _, reader = read_samples(tmp_path)
    assert reader == "figshare-mat"
    assert [r["sample_id"] for r in records] == ["1", "1070", "2299", "3064"]
    broken = records[-1]
    assert broken["error"] and broken["label"] == -1
    assert all(not r["error"] for r in records[:-1])


# ------------------------------------------------------ generated layouts


def test_br35h_layout_nested_with_junk(tmp_path):
    root = tmp_path / "raw"
    base = root / "download" / "Br35H"
    save_image(base / "Yes" / "y0.jpg")
    save_image(base / "Yes" / "y10.jpg")
    save_image(base / "Yes" / "y2.JPG")
    save_image(base / "NO" / "No1.jpg")
    save_image(base / "NO" / "no0.png", fmt="PNG")
    save_image(base / "pred" / "pred0.jpg")
    save_image(root / "download" / "Br35H-Mask-RCNN" / "TRAIN" / "a.jpg")
    save_image(root / "download" / "Br35H-Mask-RCNN" / "VAL" / "b.jpg")
    (base / "Yes" / "Thumbs.db").write_bytes(b"junk")
    (base / "Yes" / ".DS_Store").write_bytes(b"junk")
    save_image(root / "__MACOSX" / "download" / "Br35H" / "Yes" / "._y0.jpg")
    (root / "manifest.json").write_text("{}")
    records, class_names, reader = read_samples(root)
    assert reader == "br35h"
    assert class_names == ["no", "yes"]
    assert [r["sample_id"] for r in records] == ["no/no0", "no/No1", "yes/y0", "yes/y2", "yes/y10"]
    assert [r["label"] for r in records] == [0, 0, 1, 1, 1]
    assert records[1]["source_path"] == "download/Br35H/NO/No1.jpg"


def test_br35h_two_copies_is_an_error(tmp_path):
    for copy in ("a", "b"):
        save_image(tmp_path / copy / "yes" / "y0.jpg")
        save_image(tmp_path / copy / "no" / "no0.jpg")
    with pytest.raises(ReaderError, match="several folders hold yes/ and no/"):
        read_samples(tmp_path)


def test_folder_layout_without_metadata(tmp_path):
    for name in ("zeta", "alpha", "Beta"):
        for i in range(2):
            save_image(tmp_path / "data" / "images" / name / f"{i}.jpg")
    for i in range(3):
        save_image(tmp_path / "data" / "masks" / f"{i}.jpg")  # one mask per image: not a class
    records, class_names, reader = read_samples(tmp_path)
    assert reader == "folder" and class_names == ["alpha", "Beta", "zeta"]
    assert [r["sample_id"] for r in records][:2] == ["alpha/0", "alpha/1"]
    assert Counter(r["label"] for r in records) == {0: 2, 1: 2, 2: 2}
    assert all(r["patient_id"] == "" for r in records)


def test_folder_layout_masks_beside_a_class_is_not_a_class(tmp_path):
    save_image(tmp_path / "glioma" / "1.jpg")
    save_image(tmp_path / "pituitary" / "2.jpg")
    save_image(tmp_path / "Masks" / "1.jpg")
    _, class_names, _ = read_samples(tmp_path)
    assert class_names == ["glioma", "pituitary"]


def test_folder_layout_metadata_orders_classes_and_gives_patients(tmp_path):
    rows = [
        ("1", "P1", 1, "meningioma"),
        ("2", "P2", 2, "glioma"),
        ("3", "P2", 2, "glioma"),
        ("4", "P3", 3, "pituitary"),
    ]
    for sample_id, _, _, name in rows:
        save_image(tmp_path / "images" / name / f"{sample_id}.jpg")
    save_image(tmp_path / "masks" / "1.jpg")
    meta = tmp_path / "meta" / "metadata.csv"
    meta.parent.mkdir()
    meta.write_text("sample_id,pid,label,label_name\n" + "".join(f"{a},{b},{c},{d}\n" for a, b, c, d in rows))
    records, class_names, _ = read_samples(tmp_path)
    assert class_names == ["meningioma", "glioma", "pituitary"]
    assert [(r["sample_id"], r["label"], r["patient_id"]) for r in records] == [
        ("1", 0, "P1"),
        ("2", 1, "P2"),
        ("3", 1, "P2"),
        ("4", 2, "P3"),
    ]

    meta.write_text("sample_id,pid,label,label_name\n1,P1,1,meningioma\n")
    with pytest.raises(ReaderError, match="3 images have no row"):
        read_samples(tmp_path)
    meta.write_text("sample_id,pid,label,label_name\n" + "".join(f"{a},{b},{c},glioma\n" for a, b, c, _ in rows))
    with pytest.raises(ReaderError, match="sits in folder"):
        read_samples(tmp_path)


def test_folder_layout_ambiguous_is_an_error(tmp_path):
    for part in ("train", "test"):
        for name in ("cat", "dog"):
            save_image(tmp_path / part / name / "1.jpg")
    with pytest.raises(ReaderError, match="several folders look like"):
        read_samples(tmp_path)


def test_nothing_recognisable_names_folder_and_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    save_image(tmp_path / "only" / "one.jpg")
    with pytest.raises(ReaderError) as error:
        read_samples(tmp_path)
    assert str(tmp_path) in str(error.value) and "yes/ and no/" in str(error.value) and "cjdata" in str(error.value)
    with pytest.raises(ReaderError, match="not a folder"):
        read_samples(tmp_path / "missing")


# ------------------------------------------------------------------ decoding


@pytest.mark.parametrize(
    "mode,color,expected",
    [
        ("RGB", (200, 100, 50), (200, 100, 50)),
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("RGBA", (200, 100, 50, 255), (200, 100, 50)),
        ("RGBA", (200, 100, 50, 0), (0, 0, 0)),  # fully transparent: black
        ("LA", (200, 128), (100, 100, 100)),  # half transparent grey on black
        ("I;16", 4000, (0, 0, 0)),  # constant image: min-max scaling gives 0
        ("F", 0.5, (0, 0, 0)),
    ],
)
def test_decode_image_modes(mode, color, expected):
    image = Image.new(mode, (50, 20), color)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "F" else "PNG")
    pixels = decode_image(image_bytes(image, fmt), 16)
    assert pixels.shape == (3, 16, 16) and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - np.array(expected)[:, None, None]).max() <= 1


def test_decode_image_scales_16bit_and_resizes_without_crop():
    ramp = np.tile(np.linspace(1000, 5000, 64), (32, 1)).astype(np.uint16)  # 64 wide, 32 high
    pixels = decode_image(image_bytes(Image.fromarray(ramp)), 32)
    assert pixels.shape == (3, 32, 32)
    assert pixels[0, :, 0].max() < 10 and pixels[0, :, -1].min() > 245  # full range: min-max scaled, not cropped
    assert np.all(np.diff(pixels[0, 10].astype(int)) >= 0)


def test_decode_image_palette_with_and_without_transparency():
    palette = Image.new("P", (10, 10), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert tuple(decode_image(image_bytes(palette), 8)[:, 4, 4]) == (10, 200, 30)
    out = io.BytesIO()
    palette.save(out, "PNG", transparency=1)
    assert tuple(decode_image(out.getvalue(), 8)[:, 4, 4]) == (0, 0, 0)


def test_decode_image_by_content_not_name(tmp_path):
    path = save_image(tmp_path / "looks.jpg", mode="RGB", color=(1, 2, 3), fmt="PNG")
    assert tuple(decode_image(path, 8)[:, 0, 0]) == (1, 2, 3)  # lossless PNG under a .jpg name


def test_decode_image_unreadable(tmp_path):
    good = image_bytes(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")
    with pytest.raises(UnreadableImage, match="empty file"):
        decode_image(b"", 8)
    with pytest.raises(UnreadableImage, match="not an image"):
        decode_image(b"this is text, not a JPEG\n", 8)
    with pytest.raises(UnreadableImage, match="cannot decode"):
        decode_image(good[: len(good) // 2], 8)
    with pytest.raises(UnreadableImage, match="not an image"):
        decode_image(np.zeros(100, np.uint8).tobytes(), 8)


# ------------------------------------------------ the project's own sample data


@pytest.fixture
def synthetic():
    return pytest.importorskip("tumorbench.data.synthetic")


def test_synthetic_br35h_goes_through_the_br35h_reader(synthetic, tmp_path):
    root = extract_nested(synthetic.write_br35h_zip(tmp_path / "br35h.zip", per_class=6, seed=3), tmp_path / "raw")
    records, class_names, reader = read_samples(root)
    assert reader == "br35h" and class_names == ["no", "yes"]
    assert Counter(r["label"] for r in records) == {0: 6, 1: 6}
    assert any("/No" in r["sample_id"] for r in records)
    for record in records:
        assert decode_file((record["loader"], record["path"], 32))[1].shape == (3, 32, 32)


def test_synthetic_figshare_goes_through_the_mat_reader(synthetic, tmp_path):
    archive = synthetic.write_figshare_zip(tmp_path / "figshare.zip", per_class=[3, 4, 3], patients=4, size=64, seed=3)
    root = extract_nested(archive, tmp_path / "raw")
    assert (root / "cvind.mat").exists()
    records, class_names, reader = read_samples(root)
    assert reader == "figshare-mat" and class_names == ["meningioma", "glioma", "pituitary"]
    assert [r["sample_id"] for r in records] == [str(i) for i in range(1, 11)]
    assert Counter(r["label"] for r in records) == {0: 3, 1: 4, 2: 3}
    assert len({r["patient_id"] for r in records}) == 4 and all(r["patient_id"] for r in records)
    mat = read_mat_slice(records[0]["path"])
    assert mat["image"].shape == (64, 64) and mat["mask"].any()
