"""The generated sample archives: layout, formats, quirks and determinism, checked against the real files."""

import io
import zipfile
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tumorbench.data import synthetic

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL_MAT = SHARED / "figshare-mat-sample" / "1.mat"

BR35H_PER_CLASS = 12
FIGSHARE_PER_CLASS = [6, 8, 6]
FIGSHARE_PATIENTS = 10
FIGSHARE_SIZE = 64


@pytest.fixture(scope="module")
def br35h_zip(tmp_path_factory) -> Path:
    return synthetic.write_br35h_zip(tmp_path_factory.mktemp("br35h") / "br35h.zip", BR35H_PER_CLASS, seed=3)


@pytest.fixture(scope="module")
def figshare_zip(tmp_path_factory) -> Path:
    return synthetic.write_figshare_zip(
        tmp_path_factory.mktemp("figshare") / "figshare.zip",
        FIGSHARE_PER_CLASS,
        FIGSHARE_PATIENTS,
        FIGSHARE_SIZE,
        seed=3,
    )


def open_image(zf: zipfile.ZipFile, name: str) -> Image.Image:
    return Image.open(io.BytesIO(zf.read(name)))


def mat_slices(figshare_zip: Path) -> dict[int, bytes]:
    """sample id -> .mat bytes, read through the nested zips."""
    out = {}
    with zipfile.ZipFile(figshare_zip) as outer:
        for name in outer.namelist():
            if name.endswith(".zip"):
                with zipfile.ZipFile(io.BytesIO(outer.read(name))) as inner:
                    for member in inner.namelist():
                        out[int(member.removesuffix(".mat"))] = inner.read(member)
    return out


def read_cjdata(data: bytes) -> dict:
    with h5py.File(io.BytesIO(data), "r") as f:
        cj = f["cjdata"]
        return dict(
            image=cj["image"][()].T,
            mask=cj["tumorMask"][()].T.astype(bool),
            label=int(cj["label"][0, 0]),
            pid="".join(chr(c) for c in cj["PID"][()].ravel()),
            border=cj["tumorBorder"][()].ravel(),
        )


# ------------------------------------------------------------------ Br35H


def test_br35h_layout_counts_and_names(br35h_zip):
    names = zipfile.ZipFile(br35h_zip).namelist()
    yes = [n for n in names if n.startswith("yes/")]
    no = [n for n in names if n.startswith("no/")]
    pred = [n for n in names if n.startswith("pred/")]
    external = [n for n in names if n.startswith("external/")]
    assert len(yes) == len(no) == BR35H_PER_CLASS
    assert len(pred) >= 1 and len(names) == len(yes) + len(no) + len(pred) + len(external) + 1
    assert "annotations/annotations_all.json" in names
    per_class = synthetic.EXTERNAL_FRESH + synthetic.EXTERNAL_COPIES
    assert sum(n.startswith("external/tumor/") for n in external) == per_class
    assert sum(n.startswith("external/notumor/") for n in external) == per_class
    assert all(n.endswith(".jpg") for n in names if not n.startswith("annotations/"))
    assert {f"yes/y{i}.jpg" for i in range(BR35H_PER_CLASS)} == set(yes)
    capital = [n for n in no if n.startswith("no/No")]
    assert len(capital) == 1
    assert set(no) - set(capital) == {f"no/no{i}.jpg" for i in range(BR35H_PER_CLASS)} - {
        capital[0].replace("No", "no")
    }


def test_br35h_modes_sizes_and_png_under_jpg(br35h_zip):
    zf = zipfile.ZipFile(br35h_zip)
    images = [open_image(zf, n) for n in zf.namelist() if n.endswith(".jpg")]
    formats = {(im.format, im.mode) for im in images}
    assert ("PNG", "L") in formats or ("PNG", "RGBA") in formats  # a PNG hiding under a .jpg name
    assert sum(im.format == "PNG" for im in images) >= 1
    assert {"RGB", "L", "RGBA", "P"} <= {im.mode for im in images}
    sizes = {im.size for im in images}
    assert len(sizes) >= 5
    assert any(w != h for w, h in sizes)
    assert all(150 <= w <= 400 and 150 <= h <= 400 for w, h in sizes)


def test_br35h_images_look_like_head_slices(br35h_zip):
    zf = zipfile.ZipFile(br35h_zip)
    for name in ("yes/y2.jpg", "no/no3.jpg"):
        gray = np.asarray(open_image(zf, name).convert("L"), dtype=float)
        h, w = gray.shape
        corners = np.concatenate([gray[:10, :10].ravel(), gray[-10:, -10:].ravel()])
        centre = gray[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
        assert corners.mean() < 40 < centre.mean()  # dark background, tissue in the middle
        assert centre.std() > 5  # texture, ventricles: not a flat disc


def test_br35h_tumor_images_have_a_bright_lesion_more_often():
    # The lesion raises the brightest tissue: compare the 99.5th percentile inside the head, yes vs no.
    def bright(label, i):
        img = synthetic.br35h_image(5, label, i).astype(float)
        head = img > 30
        return np.percentile(img[head], 99.5) / np.median(img[head])

    yes = [bright(1, i) for i in range(12)]
    no = [bright(0, i) for i in range(12)]
    assert np.median(yes) > np.median(no)


def test_br35h_bytes_are_deterministic(br35h_zip, tmp_path):
    again = synthetic.write_br35h_zip(tmp_path / "again.zip", BR35H_PER_CLASS, seed=3)
    assert again.read_bytes() == br35h_zip.read_bytes()
    other = synthetic.write_br35h_zip(tmp_path / "other.zip", BR35H_PER_CLASS, seed=4)
    assert other.read_bytes() != br35h_zip.read_bytes()


# --------------------------------------------------------------- figshare


def test_figshare_outer_layout(figshare_zip):
    n = sum(FIGSHARE_PER_CLASS)
    names = zipfile.ZipFile(figshare_zip).namelist()
    inner = [name for name in names if name.endswith(".zip")]
    assert len(inner) == 4
    assert set(names) - set(inner) == {"cvind.mat", "README.txt"}
    ranges = [
        tuple(int(x) for x in name.removeprefix("brainTumorDataPublic_").removesuffix(".zip").split("-"))
        for name in inner
    ]
    assert ranges[0][0] == 1 and ranges[-1][1] == n
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:]))
    slices = mat_slices(figshare_zip)
    assert sorted(slices) == list(range(1, n + 1))
    with zipfile.ZipFile(figshare_zip) as outer:
        for name, (first, last) in zip(inner, ranges):
            members = zipfile.ZipFile(io.BytesIO(outer.read(name))).namelist()
            assert sorted(members) == sorted(f"{i}.mat" for i in range(first, last + 1))


def test_figshare_mat_header_and_hdf5(figshare_zip):
    data = mat_slices(figshare_zip)[1]
    assert data.startswith(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: ")
    assert b"HDF5 schema 1.00 ." in data[:116]
    assert data[116:124] == b"\x00" * 8 and data[124:128] == b"\x00\x02IM"
    assert data[512:520] == b"\x89HDF\r\n\x1a\n"
    with h5py.File(io.BytesIO(data), "r") as f:
        assert f.userblock_size == 512
        assert list(f.keys()) == ["cjdata"]


def describe(f: h5py.File) -> dict:
    """Per cjdata field: dtype, ndim, which HDF5 axis is 1 (vectors), attributes, compression."""
    out = {"group": dict(f["cjdata"].attrs)}
    for key, d in f["cjdata"].items():
        attrs = {name: (d.attrs[name], d.attrs.get_id(name).dtype) for name in d.attrs}
        out[key] = (d.dtype, d.ndim, tuple(n == 1 for n in d.shape), attrs, d.compression, d.compression_opts)
    return out


def test_figshare_mat_mirrors_the_real_file(figshare_zip):
    if not REAL_MAT.exists():
        pytest.skip(f"real sample {REAL_MAT} missing")
    with h5py.File(REAL_MAT, "r") as real, h5py.File(io.BytesIO(mat_slices(figshare_zip)[1]), "r") as ours:
        assert describe(ours) == describe(real)
        assert REAL_MAT.read_bytes()[116:128] == mat_slices(figshare_zip)[1][116:128]
        for f in (real, ours):
            cj = f["cjdata"]
            assert cj["image"].shape == cj["tumorMask"].shape and cj["image"].ndim == 2
            assert cj["label"].shape == (1, 1)
            assert cj["PID"].shape[1] == 1 and cj["tumorBorder"].shape[1] == 1


def test_figshare_cvind_mirrors_the_real_file(figshare_zip):
    real_path = SHARED / "figshare-jpg" / "cvind.mat"
    with zipfile.ZipFile(figshare_zip) as outer:
        data = outer.read("cvind.mat")
    assert data.startswith(b"MATLAB 7.3 MAT-file")
    with h5py.File(io.BytesIO(data), "r") as f:
        cvind = f["cvind"]
        assert cvind.shape == (1, sum(FIGSHARE_PER_CLASS)) and cvind.dtype == np.float64
        assert set(np.unique(cvind[()])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
        if real_path.exists():
            with h5py.File(real_path, "r") as real:
                assert list(real.keys()) == list(f.keys())
                assert dict(real["cvind"].attrs) == dict(cvind.attrs)
                assert real["cvind"].shape[0] == cvind.shape[0]


def test_figshare_patients_classes_and_folds(figshare_zip):
    slices = {i: read_cjdata(data) for i, data in mat_slices(figshare_zip).items()}
    with zipfile.ZipFile(figshare_zip) as outer, h5py.File(io.BytesIO(outer.read("cvind.mat")), "r") as f:
        folds = f["cvind"][()].ravel()
    labels_of, folds_of = defaultdict(set), defaultdict(set)
    for i, s in slices.items():
        labels_of[s["pid"]].add(s["label"])
        folds_of[s["pid"]].add(folds[i - 1])
    counts = [sum(s["label"] == code for s in slices.values()) for code in (1, 2, 3)]
    assert counts == FIGSHARE_PER_CLASS
    assert len(labels_of) == FIGSHARE_PATIENTS
    assert len(labels_of) < len(slices)  # several slices share a patient
    assert all(len(v) == 1 for v in labels_of.values())  # a patient has one class
    assert all(len(v) == 1 for v in folds_of.values())  # folds are patient-wise
    assert all(pid and pid.isalnum() for pid in labels_of)


def test_figshare_mask_is_the_bright_lesion(figshare_zip):
    for i, data in mat_slices(figshare_zip).items():
        s = read_cjdata(data)
        image, mask = s["image"].astype(float), s["mask"]
        assert s["image"].dtype == np.int16 and image.min() >= 0 and 500 < image.max() < 4000
        assert mask.any(), f"slice {i}: empty mask"
        around = ndimage.binary_dilation(mask, iterations=3) & ~mask
        assert image[mask].mean() > image[around].mean(), f"slice {i}: mask is not brighter than its surroundings"
        # The border points (1-based x = column, y = row) lie on the mask's edge.
        xs, ys = s["border"][0::2] - 1, s["border"][1::2] - 1
        near = ndimage.binary_dilation(mask, iterations=2)
        assert near[ys.astype(int), xs.astype(int)].mean() > 0.9, f"slice {i}: border far from the mask"


def test_figshare_lesion_place_depends_on_class():
    size = 64

    def centroid(label, i):
        _, mask, _ = synthetic.figshare_slice(11, label, f"{200000 + i}", i, size)
        rows, cols = np.nonzero(mask)
        return rows.mean() / size, np.hypot(rows.mean() - size / 2, cols.mean() - size / 2) / (size / 2)

    meningioma = [centroid(0, i) for i in range(10)]
    glioma = [centroid(1, i) for i in range(10)]
    pituitary = [centroid(2, i) for i in range(10)]
    assert all(row > 0.6 for row, _ in pituitary)  # below the centre
    assert np.mean([d for _, d in meningioma]) > np.mean([d for _, d in glioma])  # against the skull


def test_figshare_bytes_are_deterministic(figshare_zip, tmp_path):
    again = synthetic.write_figshare_zip(
        tmp_path / "again.zip", FIGSHARE_PER_CLASS, FIGSHARE_PATIENTS, FIGSHARE_SIZE, seed=3
    )
    assert again.read_bytes() == figshare_zip.read_bytes()


def test_figshare_rejects_impossible_patient_counts(tmp_path):
    with pytest.raises(ValueError, match="patient"):
        synthetic.write_figshare_zip(tmp_path / "x.zip", [3, 3, 3], 2, 64, seed=0)
    with pytest.raises(ValueError, match="patient"):
        synthetic.write_figshare_zip(tmp_path / "x.zip", [2, 2, 2], 7, 64, seed=0)
