"""tumorbench predict: a checkpoint applied to images, DICOM and .mat files, through the real command."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
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
from tumorbench.predict import PredictError, dicom_to_uint8, read_input
from tumorbench.predict import run as run_predict

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


def test_a_killed_predict_resumes_and_skips_the_rows_it_wrote(shared_data, checkpoint, tmp_path, capsys):
    """The state a kill leaves (whole rows flushed batch by batch into <out>.part, the last one cut in
    half): --resume predicts only the rest, and the CSV ends byte for byte as an uninterrupted run's."""
    scans = shared_data / "br35h" / "pred"
    assert run_predict(checkpoint, [scans], tmp_path / "full.csv", batch_size=8) == 0
    full = (tmp_path / "full.csv").read_bytes()
    meta = json.loads((tmp_path / "full.csv.json").read_text())
    assert meta["complete"] is True and meta["rows"] == 60
    assert not (tmp_path / "full.csv.part").exists() and not (tmp_path / "full.csv.part.json").exists()
    lines = full.splitlines(keepends=True)
    killed = tmp_path / "killed.csv"
    (tmp_path / "killed.csv.part").write_bytes(b"".join(lines[:25]) + lines[25][:10])  # header, 24 rows, a cut
    (tmp_path / "killed.csv.part.json").write_text(json.dumps({**meta, "complete": False}))
    capsys.readouterr()

    assert run_predict(checkpoint, [scans], killed, batch_size=8, resume=True) == 0
    assert "predicted 36 images -> " + str(killed) + " (24 already there, skipped)" in capsys.readouterr().err
    assert killed.read_bytes() == full
    assert json.loads((tmp_path / "killed.csv.json").read_text())["complete"] is True
    assert not (tmp_path / "killed.csv.part").exists() and not (tmp_path / "killed.csv.part.json").exists()


def test_a_failed_predict_leaves_the_previous_csv_as_it_was(shared_data, checkpoint, tmp_path):
    """The rows go to <out>.part until the run has finished: a run that fails half way (here its overlay
    folder is a file) does not leave a half CSV where the finished one was."""
    scans = shared_data / "br35h" / "pred"
    out = tmp_path / "p.csv"
    assert run_predict(checkpoint, [scans / "pred0.jpg"], out) == 0
    before, before_meta = out.read_bytes(), (tmp_path / "p.csv.json").read_bytes()
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(OSError):
        run_predict(checkpoint, [scans], out, cam_dir=tmp_path / "not-a-folder", batch_size=8)
    assert out.read_bytes() == before and (tmp_path / "p.csv.json").read_bytes() == before_meta
    assert (tmp_path / "p.csv.part").read_text().startswith("path,predicted,prob_")


def test_resume_of_a_finished_csv_adds_only_the_new_inputs(shared_data, checkpoint, tmp_path, capsys):
    scans = shared_data / "br35h" / "pred"
    out = tmp_path / "p.csv"
    assert run_predict(checkpoint, [scans / "pred0.jpg"], out) == 0
    first = out.read_bytes()
    capsys.readouterr()
    assert run_predict(checkpoint, [scans], out, batch_size=8, resume=True) == 0
    assert "predicted 59 images -> " + str(out) + " (1 already there, skipped)" in capsys.readouterr().err
    assert out.read_bytes().startswith(first) and out.read_bytes().count(b"\n") == 61
    assert json.loads((tmp_path / "p.csv.json").read_text())["rows"] == 60

    assert run_predict(checkpoint, [shared_data / "br35h" / "no" / "No12.jpg"], out, resume=True) == 0
    assert "none of its 60 rows is one of the inputs given now" in capsys.readouterr().err
    assert out.read_bytes().count(b"\n") == 62


def test_resume_refuses_a_csv_it_did_not_write_and_leaves_it_untouched(shared_data, checkpoint, tmp_path):
    scans = shared_data / "br35h" / "pred"
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("id,score\n1,0.5\n")
    with pytest.raises(PredictError, match="foreign.csv.json is missing or unreadable, so it is not a CSV"):
        run_predict(checkpoint, [scans], foreign, resume=True)
    assert foreign.read_text() == "id,score\n1,0.5\n"

    assert run_predict(checkpoint, [scans / "pred0.jpg"], tmp_path / "p.csv") == 0
    before = (tmp_path / "p.csv").read_bytes()
    other = tmp_path / "other.pt"
    torch.save({**untrained_checkpoint(), "class_names": ["no", "yes"], "epoch": 1}, other)
    with pytest.raises(PredictError, match=r"holds predictions of .*br35h-resnet18-scratch.pt \(md5 [0-9a-f]{32}\)"):
        run_predict(other, [scans], tmp_path / "p.csv", resume=True)
    assert (tmp_path / "p.csv").read_bytes() == before
    with pytest.raises(PredictError, match="--resume needs --out"):
        run_predict(checkpoint, [scans], None, resume=True)


@pytest.mark.slow  # three runs of the command over 1,500 real images
def test_predict_killed_for_real_resumes_to_the_uninterrupted_csv(shared_data, checkpoint, tmp_path):
    scans = shared_data / "br35h" / "yes"
    assert predict("--model", checkpoint, scans, "--out", tmp_path / "full.csv").returncode == 0
    out, part = tmp_path / "killed.csv", tmp_path / "killed.csv.part"
    process = subprocess.Popen([TUMORBENCH, "predict", "--model", str(checkpoint), str(scans), "--out", str(out)])
    deadline = time.time() + 120
    while not (part.exists() and part.read_bytes().count(b"\n") > 200) and time.time() < deadline:
        assert process.poll() is None, "predict ended before the test could kill it"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = part.read_bytes().count(b"\n") - 1
    assert 200 <= written < 1500 and not out.exists()  # no half CSV under the name a reader uses

    resumed = predict("--model", checkpoint, scans, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"({written} already there, skipped)" in resumed.stderr
    assert out.read_bytes() == (tmp_path / "full.csv").read_bytes()
