"""tumorbench predict: a checkpoint applied to images, DICOM and .mat files, through the real command."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from conftest import untrained_checkpoint
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tumorbench.data import synthetic
from tumorbench.predict import dicom_to_uint8, read_input

TUMORBENCH = str(Path(sys.executable).parent / "tumorbench")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as the train stage writes one (an untrained ResNet-18 at 32 px: the scores do not matter)."""
    path = tmp_path_factory.mktemp("model") / "br35h-resnet18-scratch.pt"
    torch.save(untrained_checkpoint(), path)
    return path


def predict(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([TUMORBENCH, "predict", *map(str, args)], capture_output=True, text=True, check=False)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality, dataset.PhotometricInterpretation = "MR", photometric
    dataset.SamplesPerPixel, dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 16, 16, 15
    dataset.PixelRepresentation = 0
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    if frames > 1:
        dataset.NumberOfFrames = frames
        pixels = np.stack([pixels] * frames)
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_dicom_is_rescaled_inverted_for_monochrome1_and_scaled_to_8_bits(tmp_path):
    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 1000
    plain = dicom_to_uint8(write_dicom(tmp_path / "a.dcm", pixels))
    assert plain.dtype == np.uint8 and plain.min() == 0 and plain.max() == 255
    inverted = dicom_to_uint8(write_dicom(tmp_path / "b.dcm", pixels, "MONOCHROME1"))
    np.testing.assert_array_equal(inverted, 255 - plain)
    rescaled = dicom_to_uint8(write_dicom(tmp_path / "c.dcm", pixels, slope=-2.0, intercept=100.0))
    np.testing.assert_array_equal(rescaled, 255 - plain)  # a negative slope turns the values round too
    assert pydicom.dcmread(tmp_path / "a.dcm").Modality == "MR"
    image, reason = read_input((str(write_dicom(tmp_path / "d.dcm", pixels, frames=3)), 32))
    assert image is None and "multi-frame" in reason


@pytest.mark.slow  # runs the command: seconds to import torch each time
def test_the_60_unlabelled_br35h_images_are_predicted_a_png_named_jpg_included(shared_data, checkpoint, tmp_path):
    result = predict("--model", checkpoint, shared_data / "br35h" / "pred", "--out", tmp_path / "p.csv")
    assert result.returncode == 0, result.stderr
    found = rows(tmp_path / "p.csv")
    assert len(found) == 60 and list(found[0]) == ["path", "predicted", "prob_no", "prob_yes"]
    assert {Path(r["path"]).name for r in found} == {f"pred{i}.jpg" for i in range(60)}
    assert all(abs(float(r["prob_no"]) + float(r["prob_yes"]) - 1) < 1e-4 for r in found)
    assert "not for diagnostic use" in result.stderr


@pytest.mark.slow  # runs the command: seconds to import torch each time
def test_a_folder_with_a_corrupt_file_predicts_the_rest_names_it_and_exits_non_zero(checkpoint, tmp_path):
    scans = tmp_path / "scans"
    (scans / "sub").mkdir(parents=True)
    Image.fromarray(synthetic.br35h_image(1, 1, 0)).save(scans / "a.png")
    Image.fromarray(synthetic.br35h_image(1, 0, 1)).save(scans / "sub" / "b.tif")
    image, mask, border = synthetic.figshare_slice(1, 0, "p1", 1, 64)
    (scans / "sub" / "c.mat").write_bytes(synthetic.mat_slice_bytes(image, mask, border, 1, "p1"))
    write_dicom(scans / "d.dcm", np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    (scans / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (scans / "notes.txt").write_text("not a scan")
    Image.fromarray(synthetic.br35h_image(1, 1, 2)).save(scans / ".hidden.png")
    result = predict("--model", checkpoint, scans, "--out", tmp_path / "p.csv", "--cam", tmp_path / "cams")
    assert result.returncode == 1
    assert f"{scans / 'broken.jpg'}: not predicted:" in result.stderr
    assert "1 unreadable, 1 hidden and 1 other files skipped" in result.stderr
    predicted = {Path(r["path"]).relative_to(scans).as_posix() for r in rows(tmp_path / "p.csv")}
    assert predicted == {"a.png", "sub/b.tif", "sub/c.mat", "d.dcm"}
    cams = sorted(p.relative_to(tmp_path / "cams").as_posix() for p in (tmp_path / "cams").rglob("*.png"))
    assert cams == ["scans/a.png.png", "scans/d.dcm.png", "scans/sub/b.tif.png", "scans/sub/c.mat.png"]


@pytest.mark.slow  # runs the command: seconds to import torch each time
def test_same_names_in_two_folders_get_two_overlays_and_an_old_checkpoint_its_inits_normalisation(checkpoint, tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        Image.fromarray(synthetic.br35h_image(1, 1, 0)).save(tmp_path / folder / "scan.png")
    old = torch.load(checkpoint, weights_only=True)
    del old["normalize"]
    torch.save(old, tmp_path / "old.pt")
    result = predict("--model", tmp_path / "old.pt", tmp_path / "one", tmp_path / "two", "--cam", tmp_path / "cams")
    assert result.returncode == 0, result.stderr
    assert "no normalisation recorded" in result.stderr and "scratch" in result.stderr
    assert len(result.stdout.strip().splitlines()) == 3  # the CSV on stdout: a header and two rows
    assert (tmp_path / "cams/one/scan.png.png").exists() and (tmp_path / "cams/two/scan.png.png").exists()


@pytest.mark.slow  # runs the command: seconds to import torch each time
def test_bad_calls_are_clear_errors(checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    nothing = predict("--model", checkpoint)
    assert nothing.returncode == 1 and "no PATH given" in nothing.stderr
    empty = predict("--model", checkpoint, tmp_path / "empty")
    assert empty.returncode == 1 and "no image, DICOM or .mat file" in empty.stderr and "1 other" in empty.stderr
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    foreign = predict("--model", tmp_path / "other.pt", tmp_path / "empty")
    assert foreign.returncode == 1 and "is not a tumorbench checkpoint" in foreign.stderr
    assert "Traceback" not in nothing.stderr + empty.stderr + foreign.stderr
