"""Find labelled samples in a raw dataset tree and decode their pixels.

A raw tree is an extracted download (data/raw/<dataset>/); it may nest
everything under extra folders. Three layouts are recognised, by what the
files are rather than by the dataset's name (`read_samples` tries them in
this order):

- "figshare-mat": `*.mat` files holding a `cjdata` group (MATLAB v7.3, i.e.
  HDF5 behind a 512-byte header), as in Cheng's figshare brain tumor dataset.
  `cvind.mat` (the author's cross-validation folds) is not a sample.
- "br35h": a folder holding both a `yes/` and a `no/` folder (any case, at
  any depth), as in Br35H. Only image files directly inside `yes/` and `no/`
  are samples; `pred/` (unlabeled) and anything else is ignored.
- "folder": one folder per class holding image files, e.g.
  `images/glioma/12.jpg`, with an optional `metadata.csv`
  (`sample_id,pid,label[,label_name]`) anywhere in the tree. The rule for
  which folders are classes is in `find_class_folders`.

A sample record is a plain dict (picklable, so worker processes can take it):
    sample_id    unique id, e.g. "yes/y0" (br35h), "12" (figshare)
    label        int, index into class_names
    label_name   class name
    patient_id   str, "" when unknown
    source_path  path of the file relative to the raw root, posix
    path         absolute path of the file
    loader       "image" (decode_image) or "mat" (read_mat_slice)
    mask_path    the tumour mask's file ("" when none; a .mat slice holds its own):
                 for the folder layout, a file of the same name in a mask/ or
                 masks/ folder, white = tumour
    error        "" normally; the reason when the reader could not even read
                 the sample's label (a broken .mat): prepare reports those as
                 unreadable
    cv_fold      the author's cross-validation fold ("1".."5") where the tree holds
                 a `cvind.mat` (figshare: entry i is the fold of slice i + 1), else ""
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from tumorbench.core.catalog import PAPER_DATASETS
from tumorbench.core.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MASK_FOLDER_NAMES = ("mask", "masks")
CVIND_NAME = "cvind.mat"  # the author's cross-validation folds, beside the slices
FIGSHARE_CLASSES = list(PAPER_DATASETS["figshare"].classes)  # codes 1, 2, 3 in the .mat files
BR35H_CLASSES = list(PAPER_DATASETS["br35h"].classes)
LAYOUTS_EXPECTED = (
    "expected one of: (1) *.mat files with a 'cjdata' group (figshare), "
    "(2) a folder holding yes/ and no/ folders of images (Br35H), "
    "(3) one folder per class holding images, e.g. images/glioma/1.jpg (optional metadata.csv)"
)


class ReaderError(UserError, ValueError):
    """A raw tree no reader understands, or one that contradicts itself."""


def natural_key(text: str) -> tuple:
    """Sort key putting "y2" before "y10"; ties broken by the exact text."""
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)) + (text,)


# ---------------------------------------------------------------- tree walking


def _walk(root: Path) -> list[tuple[Path, list[str], list[str]]]:
    """(folder, subfolders, files) for every folder, sorted, hidden entries and __MACOSX skipped."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        files = sorted(f for f in files if not f.startswith("."))
        out.append((Path(folder), dirs, files))
    out.sort(key=lambda entry: natural_key(entry[0].as_posix()))
    return out


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _record(
    root: Path,
    path: Path,
    sample_id: str,
    label: int,
    label_name: str,
    patient_id: str = "",
    loader: str = "image",
    error: str = "",
) -> dict:
    return dict(
        sample_id=sample_id,
        label=label,
        label_name=label_name,
        patient_id=patient_id,
        source_path=_rel(path, root),
        path=str(path),
        loader=loader,
        mask_path=str(path) if loader == "mat" else "",
        error=error,
        cv_fold="",
    )


def _check_unique_ids(records: list[dict], root: Path) -> None:
    seen: dict[str, str] = {}
    for r in records:
        if r["sample_id"] in seen:
            raise ReaderError(
                f"{root}: two files give the same sample id {r['sample_id']!r}: "
                f"{seen[r['sample_id']]} and {r['source_path']}; remove one of them"
            )
        seen[r["sample_id"]] = r["source_path"]


def _sorted(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: natural_key(r["sample_id"]))


# ------------------------------------------------------------- figshare .mat


def _mat_files(tree) -> list[Path]:
    return [
        folder / f for folder, _, files in tree for f in files if f.lower().endswith(".mat") and f.lower() != CVIND_NAME
    ]


def _has_cjdata(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return "cjdata" in f
    except Exception:
        return False


def _mat_text(chars: np.ndarray) -> str:
    """MATLAB char arrays are stored as uint16 character codes."""
    return "".join(chr(int(c)) for c in np.asarray(chars).ravel() if int(c) != 0).strip()


def _mat_label_code(cj) -> int:
    code = float(np.asarray(cj["label"]).ravel()[0])
    if code not in (1.0, 2.0, 3.0):
        raise ValueError(f"label {code:g} is not 1 (meningioma), 2 (glioma) or 3 (pituitary)")
    return int(code)


def error_text(error: BaseException) -> str:
    """An error as text that is the same on every run (no memory addresses)."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", str(error)) or type(error).__name__
    return text


def scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max scale to 0..255 per image, rounding half up like MATLAB's im2uint8(mat2gray(x))."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.floor(scaled * 255 + 0.5).astype(np.uint8)


def read_mat_header(path: str | os.PathLike) -> tuple[int, str]:
    """(0-based label, patient id) of one figshare .mat slice, without reading the image."""
    with h5py.File(path, "r") as f:
        if "cjdata" not in f:
            raise ValueError("no 'cjdata' group (not a figshare slice)")
        cj = f["cjdata"]
        return _mat_label_code(cj) - 1, _mat_text(cj["PID"])


def read_mat_slice(path: str | os.PathLike) -> dict:
    """One figshare slice: image (uint8 HxW), label (0-based), code (1..3), pid, mask (bool HxW), border.

    HDF5 stores MATLAB's column-major arrays transposed, so each 2-D array is
    transposed back. The int16 image is scaled to uint8 by its own min and
    max, as the dataset author's conversion (im2uint8(mat2gray(image))) does.
    border is the tumor outline as (K, 2) points [x, y], 1-based as stored.
    """
    with h5py.File(path, "r") as f:
        if "cjdata" not in f:
            raise ValueError("no 'cjdata' group (not a figshare slice)")
        cj = f["cjdata"]
        raw = np.asarray(cj["image"]).T
        mask = np.asarray(cj["tumorMask"]).T.astype(bool)
        code = _mat_label_code(cj)
        pid = _mat_text(cj["PID"])
        border = np.asarray(cj["tumorBorder"], dtype=np.float64).ravel().reshape(-1, 2)
    if raw.ndim != 2:
        raise ValueError(f"image has shape {raw.shape}, expected a 2-D slice")
    return dict(image=scale_to_uint8(raw), label=code - 1, code=code, pid=pid, mask=mask, border=border)


def read_mat_records(root: Path, tree) -> tuple[list[dict], list[str]]:
    records = []
    for path in _mat_files(tree):
        try:
            label, pid = read_mat_header(path)
            error = ""
        except Exception as e:  # a broken file is reported by prepare, not fatal here
            label, pid, error = -1, "", error_text(e)
        name = FIGSHARE_CLASSES[label] if label >= 0 else ""
        records.append(_record(root, path, path.stem, label, name, pid, loader="mat", error=error))
    _check_unique_ids(records, root)
    return _sorted(records), list(FIGSHARE_CLASSES)


# ------------------------------------------------------------------- Br35H


def find_yes_no_parent(root: Path, tree) -> Path | None:
    """The folder holding both yes/ and no/ (any case); error if several do."""
    parents = []
    for folder, dirs, _ in tree:
        lower = {d.lower() for d in dirs}
        if {"yes", "no"} <= lower:
            parents.append(folder)
    if len(parents) > 1:
        listed = ", ".join(_rel(p, root) or "." for p in parents)
        raise ReaderError(
            f"{root}: several folders hold yes/ and no/ ({listed}); keep one copy of the dataset in the download"
        )
    return parents[0] if parents else None


def read_br35h_records(root: Path, tree) -> tuple[list[dict], list[str]]:
    parent = find_yes_no_parent(root, tree)
    records = []
    for folder, _dirs, files in tree:
        if folder.parent != parent or folder.name.lower() not in BR35H_CLASSES:
            continue
        name = folder.name.lower()
        for f in files:
            if _is_image_name(f):
                path = folder / f
                records.append(_record(root, path, f"{name}/{path.stem}", BR35H_CLASSES.index(name), name))
    _check_unique_ids(records, root)
    return _sorted(records), list(BR35H_CLASSES)


# --------------------------------------------------------- generic folders


def find_class_folders(root: Path, tree, preferred_names: set[str] | None = None) -> list[Path]:
    """The class folders of a one-folder-per-class layout.

    Rule: a folder P is the class parent when at least two of its direct
    subfolders directly contain image files; those subfolders are the
    classes. Subfolders named mask/masks are never classes (figshare-jpg's
    masks/ holds one mask per slice, not a class). If several folders
    qualify, the one whose class names equal `preferred_names` (the
    metadata's label names) wins; otherwise it is an error.
    """
    has_images = {folder for folder, _, files in tree if any(_is_image_name(f) for f in files)}
    candidates = []
    for folder, dirs, _ in tree:
        classes = [folder / d for d in dirs if d.lower() not in MASK_FOLDER_NAMES and folder / d in has_images]
        if len(classes) >= 2:
            candidates.append(classes)
    if len(candidates) > 1 and preferred_names:
        matching = [c for c in candidates if {p.name for p in c} == preferred_names]
        candidates = matching if len(matching) == 1 else candidates
    if len(candidates) > 1:
        listed = "; ".join(", ".join(_rel(p, root) for p in c) for c in candidates)
        raise ReaderError(
            f"{root}: several folders look like one-folder-per-class layouts ({listed}); "
            f"keep only one, or add a metadata.csv whose label_name column names the classes"
        )
    return candidates[0] if candidates else []


def find_metadata(root: Path, tree) -> Path | None:
    found = [folder / f for folder, _, files in tree for f in files if f.lower() == "metadata.csv"]
    if len(found) > 1:
        raise ReaderError(f"{root}: several metadata.csv files ({', '.join(_rel(p, root) for p in found)}); keep one")
    return found[0] if found else None


def read_metadata(path: Path) -> dict[str, dict]:
    """metadata.csv rows keyed by sample_id; needs columns sample_id and pid (label, label_name optional)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        if not {"sample_id", "pid"} <= columns:
            raise ReaderError(f"{path}: needs columns sample_id,pid[,label,label_name]; found {sorted(columns)}")
        rows = {}
        for row in reader:
            sample_id = row["sample_id"].strip()
            if sample_id in rows:
                raise ReaderError(f"{path}: sample_id {sample_id!r} appears twice")
            rows[sample_id] = {k: (v or "").strip() for k, v in row.items() if k}
    return rows


def _class_order_from_codes(folders: list[Path], files_of: dict, metadata: dict, meta_path: Path) -> list[Path]:
    """Order class folders by the metadata's label code; each folder must have exactly one code."""
    code_of = {}
    for folder in folders:
        codes = {metadata[p.stem]["label"] for p in files_of[folder]}
        if len(codes) != 1:
            raise ReaderError(
                f"{meta_path}: images in {folder.name}/ have label codes {sorted(codes)}; "
                f"one folder must hold one class"
            )
        code = codes.pop()
        try:
            code_of[folder] = int(float(code))
        except ValueError:
            raise ReaderError(f"{meta_path}: label {code!r} for class {folder.name} is not a number") from None
    if len(set(code_of.values())) != len(folders):
        raise ReaderError(
            f"{meta_path}: two class folders share a label code: { {f.name: c for f, c in code_of.items()} }"
        )
    return sorted(folders, key=lambda f: code_of[f])


def read_folder_records(root: Path, tree) -> tuple[list[dict], list[str]]:
    meta_path = find_metadata(root, tree)
    metadata = read_metadata(meta_path) if meta_path else {}
    names = {row.get("label_name", "") for row in metadata.values()} - {""}
    folders = find_class_folders(root, tree, preferred_names=names or None)
    files_of = {
        folder: [folder / f for f in files if _is_image_name(f)] for folder, _, files in tree if folder in folders
    }
    if metadata:
        missing = [p for folder in folders for p in files_of[folder] if p.stem not in metadata]
        if missing:
            shown = ", ".join(_rel(p, root) for p in missing[:5])
            raise ReaderError(
                f"{meta_path}: {len(missing)} images have no row (sample_id = file name "
                f"without extension), e.g. {shown}; add them or remove metadata.csv"
            )
    with_codes = bool(metadata) and all(row.get("label", "") for row in metadata.values())
    if with_codes:
        folders = _class_order_from_codes(folders, files_of, metadata, meta_path)
    else:
        folders = sorted(folders, key=lambda f: natural_key(f.name))
    class_names = [f.name for f in folders]
    records = []
    for label, folder in enumerate(folders):
        for path in files_of[folder]:
            if metadata:
                row = metadata[path.stem]
                if row.get("label_name") and row["label_name"] != folder.name:
                    raise ReaderError(
                        f"{meta_path}: sample {path.stem} is {row['label_name']!r} there "
                        f"but sits in folder {_rel(folder, root)}/"
                    )
                records.append(_record(root, path, path.stem, label, folder.name, row["pid"]))
            else:
                records.append(_record(root, path, f"{folder.name}/{path.stem}", label, folder.name))
    masks = {
        Path(f).stem: folder / f
        for folder, _, files in tree
        if folder.name.lower() in MASK_FOLDER_NAMES
        for f in files
        if _is_image_name(f)
    }
    for record in records:
        mask = masks.get(Path(record["path"]).stem)
        record["mask_path"] = str(mask) if mask else ""
    _check_unique_ids(records, root)
    return _sorted(records), class_names


# ------------------------------------------------------------ entry points


def _detect(root: Path, tree) -> str | None:
    if any(_has_cjdata(p) for p in _mat_files(tree)[:5]):
        return "figshare-mat"
    if find_yes_no_parent(root, tree) is not None:
        return "br35h"
    if find_class_folders(root, tree):
        return "folder"
    return None


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise ReaderError(f"{root} is not a folder: run the download stage first (dvc repro download@<dataset>)")


def find_cvind(tree) -> Path | None:
    found = [folder / f for folder, _, files in tree for f in files if f.lower() == CVIND_NAME]
    return found[0] if found else None


def read_cvind(path: Path) -> np.ndarray:
    """The fold (int, 1-based) of every slice, in slice order, from the variable `cvind` of a MATLAB
    v7.3 (HDF5) or older .mat file."""
    try:
        with h5py.File(path, "r") as f:
            values = np.asarray(f["cvind"][()]).ravel()
    except (OSError, KeyError):
        from scipy.io import loadmat

        try:
            values = np.asarray(loadmat(path)["cvind"]).ravel()
        except Exception as e:
            raise ReaderError(f"{path}: not a readable cvind.mat with a variable `cvind` ({error_text(e)})") from e
    if values.size == 0 or not np.all(values == np.round(values)) or values.min() < 1:
        raise ReaderError(f"{path}: `cvind` must hold fold numbers 1, 2, ...; re-download the dataset")
    return values.astype(np.int64)


def attach_cv_folds(records: list[dict], cvind_path: Path) -> None:
    """Set each record's cv_fold from cvind.mat, whose entry i is the fold of the sample with id i + 1."""
    folds = read_cvind(cvind_path)
    records = [r for r in records if not r["error"]]  # a broken file is reported unreadable, not folded
    ids = [r["sample_id"] for r in records]
    if not ids:
        return
    bad = [s for s in ids if not s.isdigit() or int(s) < 1]
    if bad:
        raise ReaderError(
            f"{cvind_path}: the folds are indexed by slice number, but sample ids such as {bad[0]!r} are not "
            "numbers; remove cvind.mat from this dataset, or name its files <slice number>.<ext>"
        )
    last = max(int(s) for s in ids)
    if folds.size < last:  # more entries than slices is a sample of the dataset, which folds fine
        raise ReaderError(
            f"{cvind_path}: {folds.size} folds, but the slices run to {last}: this cvind.mat belongs to another "
            "version of the dataset; download it again, or remove cvind.mat to get stratified group folds instead"
        )
    for record in records:
        record["cv_fold"] = str(int(folds[int(record["sample_id"]) - 1]))


def read_samples(root: str | os.PathLike) -> tuple[list[dict], list[str], str]:
    """(records sorted by sample_id in natural order, class_names ordered by label, reader name)."""
    root = Path(root).resolve()
    _check_root(root)
    tree = _walk(root)
    name = _detect(root, tree)
    if name is None:
        raise ReaderError(f"no labelled samples found under {root}: {LAYOUTS_EXPECTED}")
    read = {"figshare-mat": read_mat_records, "br35h": read_br35h_records, "folder": read_folder_records}[name]
    records, class_names = read(root, tree)
    if not records:
        raise ReaderError(f"{root}: the {name} layout was found but it holds no image files; {LAYOUTS_EXPECTED}")
    cvind = find_cvind(tree)
    if cvind is not None:
        attach_cv_folds(records, cvind)
    return records, class_names, name


# ----------------------------------------------------------------- decoding


class UnreadableImage(ValueError):
    """A file that is not a decodable image."""


def as_gray_or_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as L or RGB: alpha composited on black, 16-bit/int/float scaled by the image's min and max."""
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    if image.mode in ("I", "F"):
        image = Image.fromarray(scale_to_uint8(np.asarray(image)), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))
        black.alpha_composite(image)
        image = black
    if image.mode in ("1", "L"):
        return image.convert("L")
    return image.convert("RGB")


def square_array(image: Image.Image, size: int) -> np.ndarray:
    """An L or RGB image resized to size x size, uint8 (3, S, S).

    A plain resize to a square, as the paper does (no crop); PIL's bilinear
    filter widens with the scale factor, so downscaling is antialiased.
    """
    if image.mode == "L":  # resize one channel, then copy it: same pixels as RGB, a third of the work
        gray = np.asarray(image.resize((size, size), Image.BILINEAR))
        return np.ascontiguousarray(np.broadcast_to(gray, (3, size, size)))
    rgb = np.asarray(image.resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def open_image(source: str | os.PathLike | bytes) -> Image.Image:
    """An image file (by content, whatever its suffix) decoded at its own size, as L or RGB.

    EXIF orientation is ignored, as PIL and torchvision's loaders do.
    Raises UnreadableImage with a reason for empty, truncated or non-image data.
    """
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    if not data:
        raise UnreadableImage("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return as_gray_or_rgb(image)
    except Image.UnidentifiedImageError:
        raise UnreadableImage("not an image file (no known image format)") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"cannot decode: {error_text(e)}") from None


def open_mat(path: str | os.PathLike) -> Image.Image:
    """A figshare .mat slice as an L image (read_mat_slice's uint8 scaling)."""
    return Image.fromarray(read_mat_slice(path)["image"], mode="L")


def open_sample(path: str | os.PathLike, loader: str) -> Image.Image:
    """A sample record's file (loader "image" or "mat") decoded at its own size, as L or RGB."""
    return open_mat(path) if loader == "mat" else open_image(path)


def mask_array(path: str | os.PathLike, size: int) -> np.ndarray:
    """A tumour mask (a .mat slice's tumorMask, or an image file, white = tumour) as uint8 (size, size),
    1 = tumour: resized as the image is (bilinear), then thresholded at half."""
    if str(path).lower().endswith(".mat"):
        mask = Image.fromarray(read_mat_slice(path)["mask"].astype(np.uint8) * 255, mode="L")
    else:
        mask = open_image(path).convert("L")
    return (np.asarray(mask.resize((size, size), Image.BILINEAR)) > 127).astype(np.uint8)


def decode_image(source: str | os.PathLike | bytes, size: int) -> np.ndarray:
    """Decode an image file (by content) to uint8 (3, size, size); see open_image."""
    return square_array(open_image(source), size)


def mat_to_array(path: str | os.PathLike, size: int) -> np.ndarray:
    """A figshare .mat slice as uint8 (3, size, size), via read_mat_slice's uint8 image."""
    return square_array(open_mat(path), size)
