"""Apply a trained checkpoint to new scans: `tumorbench predict`.

Files are read by what they are, not by their names: images (JPG, PNG, TIFF, ... through PIL), DICOM
(pydicom: rescale slope and intercept, MONOCHROME1 inverted, then min-max scaled to 8 bits as the
figshare .mat reader scales) and figshare .mat slices. Each is preprocessed exactly as training's
prepare stage did (resized to the checkpoint's image size), normalised as the checkpoint records.
Research only, not for diagnostic use.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from tumorbench.core.catalog import INIT_NORMALIZATION
from tumorbench.core.errors import UserError
from tumorbench.core.parallel import parallel_map
from tumorbench.data.readers import error_text, mat_to_array, open_image, scale_to_uint8, square_array
from tumorbench.models.inference import load_checkpoint, model_input, predict, trained_model

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
KNOWN_SUFFIXES = IMAGE_SUFFIXES | DICOM_SUFFIXES | {".mat"}


class PredictError(UserError, ValueError):
    """Nothing to predict, or a checkpoint that cannot be used."""


@dataclass
class Found:
    files: list[tuple[Path, Path]] = field(default_factory=list)  # (file, the input it was found under)
    hidden: int = 0
    not_images: int = 0


def kind_of(path: Path) -> str:
    """ "dicom", "mat", "image" by the file's first bytes; "" for anything else."""
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"MATLAB"):
        return "mat"
    try:
        with Image.open(path):
            return "image"
    except Exception:  # not something PIL recognises
        return ""


def find_inputs(paths: list[Path]) -> Found:
    """Every file under the given files and folders (recursively), hidden ones (a name starting with ".")
    skipped and counted; files of no known kind are skipped and counted, unless their name says they
    should be one (then they are kept, to be reported as unreadable)."""
    if not paths:
        raise PredictError("no PATH given: name image, DICOM or .mat files, or folders holding them")
    found = Found()
    for root in paths:
        if not root.exists():
            raise PredictError(f"{root} does not exist")
        candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in candidates:
            if root.is_dir() and any(part.startswith(".") for part in path.relative_to(root).parts):
                found.hidden += 1
            elif kind_of(path) or path.suffix.lower() in KNOWN_SUFFIXES:
                found.files.append((path, root))
            else:
                found.not_images += 1
    if not found.files:
        raise PredictError(
            f"no image, DICOM or .mat file under {', '.join(map(str, paths))} "
            f"({found.hidden} hidden and {found.not_images} other files skipped)"
        )
    return found


def dicom_to_uint8(path: Path) -> np.ndarray:
    """A single-frame DICOM image as uint8 (H, W): modality rescale, MONOCHROME1 inverted, min-max to 8 bits."""
    import pydicom  # only DICOM inputs need it

    dataset = pydicom.dcmread(path)
    if int(getattr(dataset, "NumberOfFrames", 1) or 1) > 1:
        raise ValueError(f"multi-frame DICOM ({dataset.NumberOfFrames} frames): give one slice per file")
    pixels = dataset.pixel_array.astype(np.float64)
    if pixels.ndim != 2:
        raise ValueError(f"pixel data of shape {pixels.shape}, expected one grayscale slice")
    pixels = pixels * float(getattr(dataset, "RescaleSlope", 1) or 1) + float(
        getattr(dataset, "RescaleIntercept", 0) or 0
    )
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels  # bright means low: turn it round
    return scale_to_uint8(pixels)


def read_input(job: tuple[str, int]) -> tuple[np.ndarray | None, str]:
    """(uint8 (3, S, S) or None, the reason the file cannot be read); job = (path, size)."""
    path, size = Path(job[0]), job[1]
    try:
        kind = kind_of(path)
        if kind == "dicom":
            return square_array(Image.fromarray(dicom_to_uint8(path), mode="L"), size), ""
        if kind == "mat":
            return mat_to_array(path, size), ""
        if kind == "image":
            return square_array(open_image(path), size), ""
        return None, "not an image, DICOM or MATLAB file"
    except Exception as error:  # pydicom, h5py and PIL raise many kinds: reported, the others go on
        return None, error_text(error)


def normalization_of(checkpoint: dict, model_path: Path) -> dict:
    """The checkpoint's normalisation; an older checkpoint without one gets its init's default, said so."""
    if "normalize" in checkpoint:
        return checkpoint["normalize"]
    print(
        f"{model_path}: no normalisation recorded (a checkpoint from before it was); using "
        f"{checkpoint['init']}'s: {INIT_NORMALIZATION[checkpoint['init']]}",
        file=sys.stderr,
    )
    return INIT_NORMALIZATION[checkpoint["init"]]


def cam_path(cam_dir: Path, file: Path, root: Path) -> Path:
    """Where a file's overlay goes: <cam_dir>/<the input folder's name>/<its path in it>.png (or
    <cam_dir>/<name>.png for a file given directly): the input folders mirrored, so names cannot collide."""
    relative = file.relative_to(root.parent)
    return cam_dir / relative.with_name(relative.name + ".png")


def meta_path(csv_path: Path) -> Path:
    """The file beside a predictions CSV that says which model wrote it and whether it is complete."""
    return csv_path.with_name(csv_path.name + ".json")


def part_path(out: Path) -> Path:
    """Where `predict --out out` writes until it has finished; then it is renamed to `out`, so a killed or
    failed run never leaves a half CSV under the name a reader uses, nor overwrites a finished one."""
    return out.with_name(out.name + ".part")


RESUME_FIX = "rerun without --resume to predict everything again, or give another --out"


def rows_written(csv_path: Path, identity: dict) -> set[str]:
    """The paths a CSV this model wrote already holds, for --resume; a half-written last line is cut off.
    A CSV this model did not write (another model, or not ours at all) is an error, left untouched."""
    try:
        meta = json.loads(meta_path(csv_path).read_text())
    except (OSError, ValueError):
        raise PredictError(
            f"{csv_path}: cannot --resume it: {meta_path(csv_path)} is missing or unreadable, so it is not "
            f"a CSV tumorbench predict wrote; {RESUME_FIX}"
        ) from None
    if meta.get("model_md5") != identity["model_md5"] or meta.get("columns") != identity["columns"]:
        raise PredictError(
            f"{csv_path}: cannot --resume it: it holds predictions of {meta.get('model')} (md5 "
            f"{meta.get('model_md5')}), not of {identity['model']} (md5 {identity['model_md5']}); {RESUME_FIX}"
        )
    data = csv_path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    lines = list(csv.reader(io.StringIO(complete.decode("utf-8", errors="replace"))))
    if lines and (lines[0] != identity["columns"] or any(len(line) != len(lines[0]) for line in lines[1:])):
        columns = ",".join(identity["columns"])
        raise PredictError(f"{csv_path}: cannot --resume it: its rows are not {columns}; {RESUME_FIX}")
    if len(complete) < len(data):
        with open(csv_path, "r+b") as f:  # the row a kill cut in half (or a header never finished): redone
            f.truncate(len(complete))
    return {line[0] for line in lines[1:]}


def open_part(out: Path, identity: dict, resume: bool) -> tuple[object, set[str]]:
    """(the open `<out>.part` to append rows to, the paths already in it). A fresh run starts it empty;
    --resume goes on with a killed run's .part, or else with a finished `out` (new inputs added)."""
    from tumorbench.core.fileio import atomic_write_json

    part = part_path(out)
    done: set[str] = set()
    if resume and part.exists():
        done = rows_written(part, identity)
    elif resume and out.exists():
        done = rows_written(out, identity)
        shutil.copyfile(out, part)
    else:
        part.unlink(missing_ok=True)
    atomic_write_json(meta_path(part), {**identity, "complete": False})
    sink = open(part, "a", newline="", encoding="utf-8")
    if part.stat().st_size == 0:
        csv.writer(sink, lineterminator="\n").writerow(identity["columns"])
        sink.flush()
    return sink, done


def finish_part(out: Path, identity: dict, rows: int) -> None:
    """`<out>.part` becomes `out`, and its meta says complete."""
    from tumorbench.core.fileio import atomic_write_json

    part = part_path(out)
    os.replace(part, out)
    atomic_write_json(meta_path(out), {**identity, "complete": True, "rows": rows})
    meta_path(part).unlink(missing_ok=True)


def run(
    model_path: Path,
    paths: list[Path],
    out: Path | None,
    cam_dir: Path | None = None,
    batch_size: int = 64,
    device_name: str = "auto",
    resume: bool = False,
) -> int:
    """Predict every readable input, writing the CSV to `out` (or stdout) batch by batch as it goes, so
    memory does not grow with the number of inputs; `out` appears only when all is done (until then the
    rows go to `<out>.part`). With `resume`, inputs whose row the .part (or `out`) already holds are
    skipped. Returns the exit status: 0, or 1 when some file could not be read (it is reported on stderr
    and gets no row)."""
    from tumorbench.core.fileio import md5_file
    from tumorbench.models.runtime import configure_runtime, pick_device

    if resume and out is None:
        raise PredictError("--resume needs --out: the CSV a killed predict was writing")
    checkpoint = load_checkpoint(model_path)
    normalize = normalization_of(checkpoint, model_path)
    found = find_inputs(paths)
    size, classes = checkpoint["image_size"], checkpoint["class_names"]
    identity = {
        "model": str(model_path),
        "model_md5": md5_file(model_path) if out is not None else None,
        "columns": ["path", "predicted"] + [f"prob_{name}" for name in classes],
        "image_size": size,
    }
    if out is None:
        sink, done = sys.stdout, set()
        csv.writer(sink, lineterminator="\n").writerow(identity["columns"])
    else:
        sink, done = open_part(out, identity, resume)
    inputs = {str(file) for file, _ in found.files}
    if done and not done & inputs:
        print(
            f"{out}: none of its {len(done)} rows is one of the inputs given now: every input is predicted "
            "and added to it",
            file=sys.stderr,
        )
    todo = [(file, root) for file, root in found.files if str(file) not in done]
    device = pick_device(device_name)
    configure_runtime(device)
    model = trained_model(checkpoint, device, "auto")
    writer = csv.writer(sink, lineterminator="\n")
    failures, batch, written = [], [], 0

    def flush() -> None:
        nonlocal written
        images = torch.from_numpy(np.stack([pixels for _, pixels in batch])).to(device)
        probs = predict(model, images, normalize["mean"], normalize["std"], batch_size).cpu().numpy()
        if cam_dir is not None:
            from tumorbench.validity.explain import cam_layer, grad_cam, overlay

            layer, _ = cam_layer(checkpoint["model_name"], size)
            x = model_input(images, normalize["mean"], normalize["std"])
            for ((file, root), pixels), cam in zip(batch, grad_cam(model, layer, x)):
                target = cam_path(cam_dir, file, root)
                target.parent.mkdir(parents=True, exist_ok=True)
                overlay(pixels, cam, None).save(target)
        for ((file, _), _), p in zip(batch, probs):  # rows after the overlays: a row means all is done
            writer.writerow([str(file), classes[int(p.argmax())]] + [f"{v:.6g}" for v in p])
        sink.flush()
        written += len(batch)
        batch.clear()

    decoded = parallel_map(read_input, [(str(file), size) for file, _ in todo], progress=False)
    try:
        with closing(decoded):  # a failure stops the readers at once, not when the generator is collected
            for (file, root), (pixels, reason) in tqdm(
                zip(todo, decoded), total=len(todo), desc="predict", unit="image", disable=len(todo) <= 50
            ):
                if pixels is None:
                    failures.append((file, reason))
                    continue
                batch.append(((file, root), pixels))
                if len(batch) == batch_size:
                    flush()
            if batch:
                flush()
    finally:
        if sink is not sys.stdout:
            sink.close()
    if out is not None:
        finish_part(out, identity, len(done) + written)
    for file, reason in failures:
        print(f"{file}: not predicted: {reason}", file=sys.stderr)
    print(
        f"predicted {written} images{f' -> {out}' if out else ''}"
        + (f" ({len(done)} already there, skipped)" if done else "")
        + f"; {len(failures)} unreadable, {found.hidden} hidden and {found.not_images} other files skipped. "
        "Research only, not for diagnostic use.",
        file=sys.stderr,
    )
    return 1 if failures else 0
