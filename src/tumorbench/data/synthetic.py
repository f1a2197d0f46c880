"""Generate the embedded sample datasets: fake brain MRI slices in the real downloads' formats.

The default pipeline runs offline on these. Each archive is written exactly
as the real download is laid out, so the same readers ingest both:

- `write_br35h_zip`: one zip with `yes/` and `no/` folders of `.jpg` files
  (and `pred/` with unlabeled ones), in the colour modes and sizes of
  Kaggle's Br35H, including PNG files hiding under a `.jpg` name and one
  `No<k>.jpg` spelled with a capital N.
- `write_figshare_zip`: one zip holding four zips of MATLAB v7.3 `.mat`
  slices (`brainTumorDataPublic_<first>-<last>.zip`), `cvind.mat` (the
  patient-wise 5-fold indices) and `README.txt`, as figshare serves
  Cheng's dataset.

Images are axial head slices drawn with numpy: scalp, skull, folded brain
tissue, ventricles, a midline, a bias field and noise, with a lesion whose
look and place depend on the class. Every random draw comes from a generator
seeded by (seed, what, index), so the output is byte-for-byte the same for
the same arguments, and adding samples leaves the earlier br35h images as
they were.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from tumorbench.core.catalog import PAPER_DATASETS
from tumorbench.core.fileio import atomic_open
from tumorbench.core.parallel import parallel_map

ZIP_DATE = (2020, 1, 1, 0, 0, 0)
MAT_HEADER_DATE = "Wed Jan 01 00:00:00 2020"
FIGSHARE_CLASSES = PAPER_DATASETS["figshare"].classes  # label codes 1, 2, 3 in the .mat files
FOLDS = 5

# Keys that separate the random streams (the second entry of each seed).
_BR35H, _FIGSHARE_LAYOUT, _FIGSHARE_PATIENT, _FIGSHARE_SLICE = 1, 2, 3, 4


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


# ------------------------------------------------------------------ drawing


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-std noise smooth over about 1/cells of the image (bicubic upsampling)."""
    low = rng.standard_normal((cells, cells)).astype(np.float32)
    field = np.asarray(Image.fromarray(low, mode="F").resize((w, h), Image.Resampling.BICUBIC))
    return (field - field.mean()) / (field.std() + 1e-6)


def _inside(t: np.ndarray, edge: float, width: float) -> np.ndarray:
    """1 where t < edge, 0 where t > edge, a linear ramp `width` wide between (anti-aliasing)."""
    return np.clip((edge - t) / width + 0.5, 0.0, 1.0)


def _head_frame(h: int, w: int, head: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in the head's frame: the head outline is u^2 + v^2 = 1.

    u runs left to right across the head, v from top (front) to bottom.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - head["cy"], xx - head["cx"]
    cos, sin = np.cos(head["angle"]), np.sin(head["angle"])
    u = (cos * dx + sin * dy) / head["ax"]
    v = (-sin * dx + cos * dy) / head["ay"]
    return u, v


def _to_pixels(head: dict, u: float, v: float) -> tuple[float, float]:
    """(row, col) of head-frame point (u, v)."""
    cos, sin = np.cos(head["angle"]), np.sin(head["angle"])
    dx, dy = u * head["ax"], v * head["ay"]
    return head["cy"] + sin * dx + cos * dy, head["cx"] + cos * dx - sin * dy


def _box(h: int, w: int, row: float, col: float, half: float) -> tuple[slice, slice]:
    """The part of an h x w image within `half` pixels of (row, col)."""
    top, left = max(0, int(row - half)), max(0, int(col - half))
    bottom, right = min(h, int(row + half) + 2), min(w, int(col + half) + 2)
    return slice(top, max(top, bottom)), slice(left, max(left, right))


def _ellipse(u, v, cu, cv, su, sv):
    return ((u - cu) / su) ** 2 + ((v - cv) / sv) ** 2


def _draw_head(rng: np.random.Generator, h: int, w: int, head: dict, level: float) -> tuple[np.ndarray, np.ndarray]:
    """An axial slice without lesion, intensities about 0..1, and the brain mask.

    `level` in [0, 1] moves through the head: larger ventricles near 0.5.
    """
    u, v = _head_frame(h, w, head)
    r = np.sqrt(u * u + v * v) * (1 + 0.015 * _smooth_noise(rng, h, w, 6))
    px = 1.0 / min(head["ax"], head["ay"])  # one pixel in head units
    inner = head["brain"]  # inner edge of the skull
    scalp = _inside(r, 1.0, px) - _inside(r, inner + 0.07, px)
    bone = _inside(r, inner + 0.07, px) - _inside(r, inner, px)
    brain_soft = _inside(r, inner, px)

    folds = _smooth_noise(rng, h, w, 18)
    matter = _smooth_noise(rng, h, w, 8)
    tissue = 0.45 + 0.07 * np.tanh(1.5 * matter) + 0.03 * folds
    sulci = np.exp(-((folds / 0.2) ** 2)) * np.clip((r - 0.35) / 0.3, 0, 1)
    tissue = tissue - head["sulci"] * sulci

    # Dark ventricles: two crescents either side of the midline, bigger mid-volume.
    vent_size = head["ventricles"] * (0.5 + np.sin(np.pi * level))
    bend = head["bend"] * (v + 0.05) ** 2  # the frontal horns curve outwards
    for side in (-1, 1):
        q = _ellipse(u - side * bend, v, side * 0.12, -0.05, 0.06 * vent_size, 0.28 * vent_size)
        tissue = tissue - 0.3 * _inside(q, 1.0, 0.2)
    tissue = tissue - 0.15 * np.exp(-((u / (1.5 * px)) ** 2)) * (np.abs(v) < 0.75)  # falx on the midline
    # Symmetric deep grey matter, brighter or darker per head, and a few bright vessels.
    deep = sum(np.exp(-_ellipse(u, v, side * 0.3, 0.05, 0.1, 0.14)) for side in (-1, 1))
    tissue = tissue + head["deep"] * deep
    for _ in range(rng.integers(0, 5)):
        row, col = _to_pixels(head, *rng.uniform(-0.6, 0.6, 2))
        box = _box(h, w, row, col, 5)
        yy, xx = np.ogrid[box]
        tissue[box] += 0.25 * np.exp(-((yy - row) ** 2 + (xx - col) ** 2) / 4.0)

    img = 0.7 * scalp * (1 + 0.1 * matter) + 0.05 * bone + brain_soft * tissue
    img = img * (1 + head["bias"] * _smooth_noise(rng, h, w, 3))
    return img.astype(np.float32), (r < inner - 0.02)


def _draw_lesion(
    rng: np.random.Generator, h: int, w: int, row: float, col: float, radius: float, irregularity: float
) -> tuple[np.ndarray, np.ndarray]:
    """A star-shaped lesion: t (pixel distance / lesion radius in that direction) and its outline.

    The outline is [x1 y1 x2 y2 ...], 1-based (x = column), as figshare's tumorBorder.
    """
    ks = np.arange(2, 6)
    amps = irregularity * rng.uniform(0.3, 1.0, ks.size) / ks
    phases = rng.uniform(0, 2 * np.pi, ks.size)
    aspect = rng.uniform(0.75, 1.0)

    def reach(phi):
        return radius * (1 + np.sum(amps[:, None] * np.cos(ks[:, None] * phi[None] + phases[:, None]), axis=0))

    # t only matters near the lesion (up to t = 2, the oedema); elsewhere it stays large.
    t = np.full((h, w), 10.0, dtype=np.float32)
    box = _box(h, w, row, col, 2 * radius * (1 + amps.sum()) + 2)
    yy, xx = np.ogrid[box]
    dy, dx = (yy - row) / aspect, xx - col
    phi = np.arctan2(dy, dx)
    t[box] = np.hypot(dy, dx) / reach(phi.ravel()).reshape(phi.shape)

    n_points = int(np.clip(2 * np.pi * radius / 2, 16, 200))
    angles = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    reach_at = reach(angles)
    xs = np.round(col + reach_at * np.cos(angles)) + 1
    ys = np.round(row + aspect * reach_at * np.sin(angles)) + 1
    border = np.stack([np.clip(xs, 1, w), np.clip(ys, 1, h)], axis=1).ravel()
    return t.astype(np.float32), border.astype(np.float64)


def _lesion_intensity(t: np.ndarray, kind: str, contrast: float, sharpness: float) -> np.ndarray:
    """How much brighter (or darker) each pixel gets, for a lesion of the given kind."""
    body = _inside(t, 1.0, sharpness)
    if kind == "ring":  # enhancing rim, necrotic core, oedema around
        core = _inside(t, 0.5, 0.15)
        oedema = _inside(t, 1.6, 0.4) - body
        return contrast * (body - 0.9 * core) + 0.12 * contrast * oedema
    return contrast * body


def _random_head(rng: np.random.Generator, h: int, w: int, fill: float, tilt: float) -> dict:
    """Head placement and anatomy: fills about `fill` of the image, rotated up to `tilt` radians."""
    size = min(h, w)
    ay = rng.uniform(0.85, 1.0) * fill * h / 2
    ax = min(ay * rng.uniform(0.72, 0.85), fill * w / 2)
    return dict(
        cy=h / 2 + rng.uniform(-0.04, 0.04) * size,
        cx=w / 2 + rng.uniform(-0.04, 0.04) * size,
        ay=ay,
        ax=ax,
        angle=rng.uniform(-tilt, tilt),
        brain=rng.uniform(0.84, 0.9),
        ventricles=rng.uniform(0.6, 1.3),
        bend=rng.uniform(0.5, 1.5),
        deep=rng.uniform(-0.06, 0.08),
        sulci=rng.uniform(0.05, 0.2),
        bias=rng.uniform(0.03, 0.15),
    )


def _add_noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Rician noise, as magnitude MR images have (never negative)."""
    real = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)


# ------------------------------------------------------------------- Br35H


def br35h_image(seed: int, label: int, index: int, stream: int | None = None) -> np.ndarray:
    """One Br35H-like slice as uint8 (H, W); label 1 = tumor, 0 = normal; size 150..400 px.

    The random draws come from (seed, stream, index); stream defaults to the label.
    """
    return br35h_slice(seed, label, index, stream)[0]


def br35h_slice(seed: int, label: int, index: int, stream: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """br35h_image's pixels and its lesion's outline, [x1 y1 x2 y2 ...] 1-based (empty without lesion)."""
    rng = _rng(seed, _BR35H, label if stream is None else stream, index)
    h, w = (int(n) for n in rng.integers(150, 401, 2))
    if rng.random() < 0.3:
        h = w  # many of the real images are square
    head = _random_head(rng, h, w, fill=rng.uniform(0.7, 0.95), tilt=np.radians(20))
    img, brain = _draw_head(rng, h, w, head, level=rng.uniform(0.2, 0.8))
    if label == 1:
        radius_u = rng.uniform(0.12, 0.3)
        dist = rng.uniform(0, head["brain"] - 0.05 - radius_u)
        theta = rng.uniform(0, 2 * np.pi)
        row, col = _to_pixels(head, dist * np.cos(theta), dist * np.sin(theta))
        t, border = _draw_lesion(rng, h, w, row, col, radius_u * min(head["ax"], head["ay"]), rng.uniform(0, 0.3))
        kind = "ring" if rng.random() < 0.3 else "solid"
        img = img + brain * _lesion_intensity(t, kind, rng.uniform(0.25, 0.55), rng.uniform(0.05, 0.3))
    img = _add_noise(rng, img, rng.uniform(0.01, 0.04))
    gamma = rng.uniform(0.8, 1.25)
    top = np.quantile(img, 0.999) * rng.uniform(0.95, 1.2)
    pixels = (255 * np.clip(img / top, 0, 1) ** gamma).astype(np.uint8)
    return pixels, (border if label == 1 else np.zeros(0))


def _encode_br35h(pixels: np.ndarray, mode: str, rng: np.random.Generator) -> bytes:
    """The file bytes of one image: JPEG for L/RGB, PNG (under the .jpg name) otherwise, as in Br35H."""
    out = io.BytesIO()
    gray = Image.fromarray(pixels, mode="L")
    if mode == "RGB":
        gray.convert("RGB").save(out, "JPEG", quality=int(rng.integers(80, 96)))
    elif mode == "L":
        gray.save(out, "JPEG", quality=int(rng.integers(80, 96)))
    elif mode == "L-png":
        gray.save(out, "PNG")
    elif mode == "RGBA":
        rgba = gray.convert("RGBA")
        rgba.save(out, "PNG")
    elif mode == "P":
        palette = Image.fromarray(pixels // 4, mode="P")  # 64 grey levels
        palette.putpalette(np.repeat(np.arange(64, dtype=np.uint8) * 4 + 2, 3).tolist())
        palette.save(out, "PNG")
    else:
        raise ValueError(f"unknown image mode {mode!r}")
    return out.getvalue()


def _br35h_modes(rng: np.random.Generator, per_class: int) -> list[str]:
    """Colour modes of one class's files: mostly RGB JPEG, a few of each quirk."""
    modes = rng.choice(["RGB", "L", "L-png", "RGBA", "P"], size=per_class, p=[0.82, 0.08, 0.04, 0.03, 0.03])
    return [str(m) for m in modes]


def _zip_info(name: str) -> zipfile.ZipInfo:
    """A zip entry with fixed timestamp and permissions, so archives are reproducible."""
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, whatever the platform that writes it
    info.external_attr = 0o644 << 16
    return info


def _write_zip(path: Path, members: list[tuple[str, bytes]]) -> None:
    with atomic_open(path, "wb") as f:
        f.write(_zip_bytes(members))


def _zip_bytes(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members:
            zf.writestr(_zip_info(name), data, compresslevel=6)
    return out.getvalue()


COPY_KINDS = ("exact", "requality", "resize", "flip", "gamma")  # how the real Br35H's copies differ
COPY_EVERY = 25  # every 25th labelled image is a copy of an earlier one (12 per class at 300)
EXTERNAL_FRESH, EXTERNAL_COPIES = 40, 8  # per class of the generated external test set
ANNOTATED = 0.6  # the share of the tumour images whose lesion annotations/annotations_all.json outlines


def _copied(pixels: np.ndarray, kind: str) -> np.ndarray:
    """The pixels of a copy of an image: re-processed as Br35H's near duplicates are (the encoding
    differs for every kind but "exact", which repeats the source's mode and encoder too)."""
    if kind == "resize":  # by the first of these factors that keeps it within this generator's 150..400 px
        h, w = pixels.shape
        factor = next((f for f in (0.75, 4 / 3, 0.9, 1.1) if min(h, w) * f >= 150 and max(h, w) * f <= 400), 1)
        size = (round(w * factor), round(h * factor))
        return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
    if kind == "flip":
        return np.ascontiguousarray(pixels[:, ::-1])
    if kind == "gamma":
        return (255 * (pixels / 255.0) ** 0.8).astype(np.uint8)
    return pixels


def _br35h_file(job: tuple) -> tuple[bytes, np.ndarray]:
    """The file's bytes, and its lesion's outline (1-based [x1 y1 ...]; empty for a copy or no lesion)."""
    seed, label, index, stream, mode, encoder_keys, kind = job
    pixels, border = br35h_slice(seed, label, index, stream)
    data = _encode_br35h(_copied(pixels, kind), mode, _rng(seed, _BR35H, *encoder_keys))
    return data, (border if kind is None else np.zeros(0))


def via_annotations(files: list[tuple[str, bytes, np.ndarray]]) -> bytes:
    """A VGG Image Annotator (VIA 2) export outlining the lesions, as the one circulating with Br35H:
    keyed by <file name><size>, each lesion a polygon in 0-based pixel coordinates."""
    entries = {}
    for name, data, border in files:
        points = border.reshape(-1, 2) - 1
        region = {
            "name": "polygon",
            "all_points_x": points[:, 0].astype(int).tolist(),
            "all_points_y": points[:, 1].astype(int).tolist(),
        }
        filename = name.rsplit("/", 1)[-1]
        entries[f"{filename}{len(data)}"] = {
            "filename": filename,
            "size": len(data),
            "file_attributes": {},
            "regions": [{"shape_attributes": region, "region_attributes": {}}],
        }
    return json.dumps(entries).encode()


def _copy_job(seed: int, label: int, source: int, source_mode: str, kind: str, keys: tuple) -> tuple:
    """A job writing a copy of labelled image `source`: an exact one repeats its mode and encoder draws."""
    if kind == "exact":
        return (seed, label, source, None, source_mode, (7, label, source), kind)
    return (seed, label, source, None, "RGB", keys, kind)


def write_br35h_zip(path: str | Path, per_class: int, seed: int, pred: int = 2) -> Path:
    """Write a Br35H-like zip: yes/y<i>.jpg and no/no<i>.jpg, per_class each, plus pred/pred<i>.jpg.

    Like the real set: one normal image is spelled No<k>.jpg, modes are
    RGB, L, RGBA and P, some `.jpg` files are really PNGs (at least one
    L, one RGBA and one P PNG are always present), and some images are copies
    of others: every COPY_EVERY-th image of a class repeats an earlier one of
    its class, byte for byte or re-encoded, resized, mirrored or brightened.
    `external/notumor/` and `external/tumor/` hold a test set from elsewhere,
    as public ones are: EXTERNAL_FRESH new images per class, and EXTERNAL_COPIES
    copies of labelled images (exact, re-encoded, resized, mirrored).
    `annotations/annotations_all.json` outlines the lesions of the first ANNOTATED
    of the tumour images (the copies excepted), as VIA annotations, the form the
    real Br35H's circulating outlines take.
    """
    if per_class < 2:
        raise ValueError(f"per_class = {per_class}: need at least 2 images per class")
    path = Path(path)
    layout = _rng(seed, _BR35H, 99)
    names, jobs = [], []
    for label, folder, prefix in ((1, "yes", "y"), (0, "no", "no")):
        modes = _br35h_modes(layout, per_class)
        if label == 1:
            modes[1] = "L-png"
            modes[0] = "L"
        else:
            modes[0] = "RGBA"
            modes[1] = "P"
        for i in range(per_class):
            name = f"{prefix}{i}.jpg"
            if label == 0 and i == per_class // 2:
                name = f"No{i}.jpg"
            names.append(f"{folder}/{name}")
            if i % COPY_EVERY == COPY_EVERY - 1:
                kind = COPY_KINDS[(i // COPY_EVERY) % len(COPY_KINDS)]
                source = i - 1 - (i // COPY_EVERY) % 5
                jobs.append(_copy_job(seed, label, source, modes[source], kind, (10, label, i)))
            else:
                jobs.append((seed, label, i, None, modes[i], (7, label, i), None))
        external = f"external/{'tumor' if label else 'notumor'}"
        for i in range(EXTERNAL_FRESH):  # another stream of the generator: images the dataset has not
            names.append(f"{external}/e{i}.jpg")
            jobs.append((seed, label, i, 3 + label, "RGB", (11, label, i), None))
        for k in range(EXTERNAL_COPIES):
            source = (7 * k + 3) % per_class
            source -= source % COPY_EVERY == COPY_EVERY - 1  # a labelled image that is not itself a copy
            names.append(f"{external}/c{k}.jpg")
            jobs.append(_copy_job(seed, label, source, modes[source], COPY_KINDS[k % 4], (12, label, k)))
    for i in range(pred):  # unlabeled: alternately with and without lesion
        names.append(f"pred/pred{i}.jpg")
        jobs.append((seed, (i + 1) % 2, i, 2, "RGB", (8, i), None))
    files = list(parallel_map(_br35h_file, jobs))
    # the first 60% of the tumour images are outlined, as y0..y800 of the real 1500 are
    outlined = [
        (name, data, border)
        for name, (data, border) in zip(names, files)
        if name.startswith("yes/") and border.size and int(name[5:-4]) < ANNOTATED * per_class
    ]
    members = [(name, data) for name, (data, _) in zip(names, files)]
    _write_zip(path, members + [("annotations/annotations_all.json", via_annotations(outlined))])
    return path


# --------------------------------------------------------------- figshare


def _figshare_patients(seed: int, per_class: list[int], patients: int) -> list[tuple[int, str, int]]:
    """(class index, patient id, fold) of every slice, in file order (ids 1..N).

    Patients are split over classes in proportion to their slice counts;
    each patient has slices of one class only. Folds (1..5) go by patient.
    """
    total = sum(per_class)
    if patients < len(per_class):
        raise ValueError(f"patients = {patients}: need at least one patient per class ({len(per_class)})")
    if patients > total:
        raise ValueError(f"patients = {patients}: more patients than slices ({total})")
    rng = _rng(seed, _FIGSHARE_LAYOUT)
    # Patients per class: proportional, at least 1, at most the class's slices.
    share = np.maximum(1, np.floor(np.array(per_class) / total * patients)).astype(int)
    share = np.minimum(share, per_class)
    while share.sum() < patients:
        room = np.where(share < per_class)[0]
        share[room[np.argmax(np.array(per_class)[room] / share[room])]] += 1
    while share.sum() > patients:
        share[np.argmax(np.where(share > 1, share, 0))] -= 1

    ids = rng.choice(np.arange(90000, 130000), size=patients, replace=False)
    pids = [str(i) for i in ids]  # 5- and 6-digit ids, as most real ones
    if patients >= 10:
        pids[patients // 2] = f"MR0{ids[patients // 2] % 100000:05d}"  # the real set has some MR... ids
    folds = np.tile(np.arange(1, FOLDS + 1), patients // FOLDS + 1)[:patients]
    rng.shuffle(folds)

    slices = []
    first = 0
    for label, (n_slices, n_patients) in enumerate(zip(per_class, share)):
        counts = 1 + rng.multinomial(n_slices - n_patients, np.ones(n_patients) / n_patients)
        for p, count in zip(range(first, first + n_patients), counts):
            slices += [(label, pids[p], int(folds[p]))] * int(count)
        first += n_patients
    return slices


def figshare_slice(seed: int, label: int, pid: str, index: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One figshare-like slice as displayed: (int16 image, bool mask, border [x1 y1 ...] 1-based).

    label: 0 meningioma (round, bright, against the skull), 1 glioma (irregular
    rim-enhancing mass inside a hemisphere), 2 pituitary (small, centre bottom).
    A patient's slices share the head and the lesion's place, varying in size.
    """
    patient = _rng(seed, _FIGSHARE_PATIENT, int.from_bytes(pid.encode(), "little") % (2**63))
    rng = _rng(seed, _FIGSHARE_SLICE, index)
    head = _random_head(patient, size, size, fill=patient.uniform(0.78, 0.92), tilt=np.radians(12))
    for key in ("cy", "cx"):
        head[key] += rng.normal(0, 0.005 * size)
    head["ay"] *= rng.uniform(0.97, 1.03)
    head["ax"] *= rng.uniform(0.97, 1.03)
    img, brain = _draw_head(rng, size, size, head, level=rng.uniform(0.1, 0.9))
    unit = min(head["ax"], head["ay"])
    grow = rng.uniform(0.7, 1.1)  # the lesion is cut at different heights
    theta = patient.uniform(0, 2 * np.pi)
    if label == 0:  # meningioma: extra-axial, touching the inner table of the skull
        radius_u = patient.uniform(0.15, 0.28) * grow
        dist = head["brain"] - radius_u * patient.uniform(0.85, 1.0)
        u, v = dist * np.cos(theta), dist * np.sin(theta)
        irregularity, kind, sharp = patient.uniform(0.0, 0.08), "solid", 0.06
        contrast = patient.uniform(0.45, 0.7)
    elif label == 1:  # glioma: intra-axial, in one hemisphere, irregular, ring
        radius_u = patient.uniform(0.16, 0.3) * grow
        side = 1 if patient.random() < 0.5 else -1
        u = side * patient.uniform(0.15, max(0.2, head["brain"] - 0.1 - radius_u))
        v = patient.uniform(-0.45, 0.45)
        irregularity, kind, sharp = patient.uniform(0.15, 0.35), "ring", 0.2
        contrast = patient.uniform(0.4, 0.65)
    else:  # pituitary: small, at the sella, centre bottom
        radius_u = patient.uniform(0.12, 0.18) * grow
        u, v = patient.uniform(-0.06, 0.06), patient.uniform(0.45, 0.6)
        irregularity, kind, sharp = patient.uniform(0.0, 0.12), "solid", 0.1
        contrast = patient.uniform(0.45, 0.7)
    u, v = u + rng.normal(0, 0.02), v + rng.normal(0, 0.02)
    if label > 0:  # keep intra-axial lesions inside the brain
        reach = head["brain"] - 0.05 - 0.8 * radius_u
        dist = np.hypot(u, v)
        if dist > reach:
            u, v = u * reach / dist, v * reach / dist
    row, col = _to_pixels(head, u, v)
    t, border = _draw_lesion(rng, size, size, row, col, max(radius_u * unit, 2.5), irregularity)
    img = img + brain * _lesion_intensity(t, kind, contrast, sharp)
    mask = (t <= 1) & brain
    img = _add_noise(rng, img, rng.uniform(0.01, 0.03))
    scale = rng.uniform(600, 1400)
    return np.clip(np.round(img * scale), 0, 32767).astype(np.int16), mask, border


def _mat_header(text: str) -> bytes:
    """The 128-byte MATLAB 7.3 header: 116 text bytes, 8 zero bytes (subsys offset), version 0x0200, 'IM'."""
    return text.encode("ascii").ljust(116, b" ")[:116] + b"\x00" * 8 + b"\x00\x02" + b"IM"


def _put_header(data: bytes) -> bytes:
    header = _mat_header(f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {MAT_HEADER_DATE} HDF5 schema 1.00 .")
    return header + data[len(header) :]


def _matlab_dataset(
    group: h5py.Group,
    name: str,
    data: np.ndarray,
    matlab_class: str,
    chunks: tuple[int, int],
    int_decode: int | None = None,
) -> None:
    """A dataset as MATLAB writes it: gzip 4, chunked, MATLAB_class (and MATLAB_int_decode) attributes."""
    dataset = group.create_dataset(
        name, data=data, chunks=chunks, compression="gzip", compression_opts=4, track_times=False
    )
    dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class)
    if int_decode is not None:
        dataset.attrs["MATLAB_int_decode"] = np.int32(int_decode)


def mat_slice_bytes(image: np.ndarray, mask: np.ndarray, border: np.ndarray, code: int, pid: str) -> bytes:
    """A figshare `.mat` file (MATLAB v7.3) for one slice given as displayed.

    HDF5 holds MATLAB's column-major arrays, so 2-D arrays are written
    transposed; vectors have the same HDF5 shapes as in the real files
    (label (1, 1), PID (len, 1) uint16 codes, tumorBorder (K, 1)).
    """
    size_r, size_c = image.shape
    image_chunks = (min(64, size_c), min(128, size_r // 4 or 1))
    mask_chunks = (min(64, size_c), min(128, size_r))
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=512) as f:
        cj = f.create_group("cjdata")
        cj.attrs["MATLAB_class"] = np.bytes_("struct")
        pid_codes = np.array([[ord(c)] for c in pid], dtype=np.uint16)
        _matlab_dataset(cj, "PID", pid_codes, "char", pid_codes.shape, int_decode=2)
        _matlab_dataset(cj, "image", np.ascontiguousarray(image.T.astype(np.int16)), "int16", image_chunks)
        _matlab_dataset(cj, "label", np.array([[float(code)]]), "double", (1, 1))
        border_column = np.asarray(border, dtype=np.float64).reshape(-1, 1)
        _matlab_dataset(cj, "tumorBorder", border_column, "double", border_column.shape)
        _matlab_dataset(
            cj, "tumorMask", np.ascontiguousarray(mask.T.astype(np.uint8)), "logical", mask_chunks, int_decode=1
        )
    return _put_header(buffer.getvalue())


def cvind_bytes(folds: list[int]) -> bytes:
    """cvind.mat: variable cvind, the fold (1..5) of every slice, shaped as in the real file."""
    buffer = io.BytesIO()
    values = np.array([folds], dtype=np.float64)
    with h5py.File(buffer, "w", userblock_size=512) as f:
        dataset = f.create_dataset(
            "cvind", data=values, chunks=values.shape, compression="gzip", compression_opts=4, track_times=False
        )
        dataset.attrs["MATLAB_class"] = np.bytes_("double")
    return _put_header(buffer.getvalue())


def _figshare_readme(n: int, patients: int, seed: int) -> str:
    return (
        f"This brain tumor dataset contains {n} SYNTHETIC slices from {patients} made-up patients, generated by\n"
        f"tumorbench.data.synthetic (seed {seed}) in the layout of Jun Cheng's figshare brain tumor dataset\n"
        "(doi:10.6084/m9.figshare.1512427). It contains no patient data.\n\n"
        "The data is organized in matlab data format (.mat file). Each file stores a struct\n"
        "containing the following fields for an image:\n\n"
        "cjdata.label: 1 for meningioma, 2 for glioma, 3 for pituitary tumor\n"
        "cjdata.PID: patient ID\n"
        "cjdata.image: image data\n"
        "cjdata.tumorBorder: a vector storing the coordinates of discrete points on tumor border.\n"
        "\t\tFor example, [x1, y1, x2, y2,...] in which x1, y1 are planar coordinates on tumor border.\n"
        "cjdata.tumorMask: a binary image with 1s indicating tumor region\n\n"
        "cvind.mat holds the 5-fold cross-validation indices (folds 1..5, split by patient).\n"
    )


def figshare_chunks(n: int) -> list[tuple[int, int]]:
    """The 1-based (first, last) ids of the four inner zips, contiguous and near-equal."""
    bounds = np.linspace(0, n, 5).round().astype(int)
    return [(int(bounds[i]) + 1, int(bounds[i + 1])) for i in range(4) if bounds[i + 1] > bounds[i]]


def _figshare_mat_file(job: tuple[int, int, str, int, int]) -> bytes:
    seed, label, pid, sample_id, size = job
    image, mask, border = figshare_slice(seed, label, pid, sample_id, size)
    return mat_slice_bytes(image, mask, border, label + 1, pid)


def write_figshare_zip(path: str | Path, per_class: list[int], patients: int, size: int, seed: int) -> Path:
    """Write a figshare-like zip: brainTumorDataPublic_<a>-<b>.zip x 4 (with <id>.mat), cvind.mat, README.txt.

    per_class: slices of (meningioma, glioma, pituitary); size: side of the square slices.
    """
    if len(per_class) != len(FIGSHARE_CLASSES):
        raise ValueError(f"per_class = {per_class}: need three counts (meningioma, glioma, pituitary)")
    if size < 32:
        raise ValueError(f"size = {size}: need at least 32 pixels")
    path = Path(path)
    slices = _figshare_patients(seed, list(per_class), patients)
    jobs = [(seed, label, pid, sample_id, size) for sample_id, (label, pid, _) in enumerate(slices, start=1)]
    files = list(parallel_map(_figshare_mat_file, jobs))
    members = []
    for first, last in figshare_chunks(len(slices)):
        inner = [(f"{sample_id}.mat", files[sample_id - 1]) for sample_id in range(first, last + 1)]
        members.append((f"brainTumorDataPublic_{first}-{last}.zip", _zip_bytes(inner)))
    members.append(("cvind.mat", cvind_bytes([fold for _, _, fold in slices])))
    members.append(("README.txt", _figshare_readme(len(slices), patients, seed).encode()))
    _write_zip(path, members)
    return path
