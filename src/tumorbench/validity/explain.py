"""Where a model looks: Grad-CAM maps, scored against expert tumour outlines.

A map is Grad-CAM (the grad-cam package) at one layer per architecture (`cam_layer`), upsampled to
the image. Two localisation scores per image with an outline:

- pointing game: 1 when the map's maximum lies inside the tumour, else 0;
- energy in mask: the share of the map's total that lies inside the tumour.

Both are also computed for a centre prior (a Gaussian at the image centre, no model): a model's map
is only informative where it beats that. Outlines come from the prepared masks (figshare's tumorMask)
or from a VGG Image Annotator file (Br35H's circulating annotations: polygons, ellipses, circles).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from tumorbench.core.errors import UserError
from tumorbench.core.fileio import atomic_directory, atomic_write_json
from tumorbench.core.variants import explain_dir, explain_metrics, prepared_dir, raw_dir
from tumorbench.data.prepared import load_split_data, read_index
from tumorbench.models.inference import load_checkpoint, model_input, predict, trained_model
from tumorbench.models.runtime import configure_runtime, pick_device

# model -> (the last module at stride 16, at stride 32): at 64 px these give 4x4 and 2x2 maps, at 224 px
# 14x14 and 7x7. EfficientNet's stride-16 block is the last of the stage before the final downsampling.
CAM_LAYERS = {
    "resnet50": ("layer3.-1", "layer4.-1"),
    "resnet18": ("layer3.-1", "layer4.-1"),
    "resnext50": ("layer3.-1", "layer4.-1"),
    "googlenet": ("inception4e", "inception5b"),
    "efficientnet-b0": ("_blocks.10", "_conv_head"),
    "efficientnet-b1": ("_blocks.15", "_conv_head"),
    "efficientnet-b2": ("_blocks.15", "_conv_head"),
    "efficientnet-b3": ("_blocks.17", "_conv_head"),
    "efficientnet-b4": ("_blocks.21", "_conv_head"),
    "efficientnet-b5": ("_blocks.26", "_conv_head"),
    "efficientnet-b6": ("_blocks.30", "_conv_head"),
    "efficientnet-b7": ("_blocks.37", "_conv_head"),
}
MIN_OVERLAY_SIDE = 256  # overlays of smaller images are enlarged to at least this side
MIN_CAM_SIDE = 7  # the last layer's map (stride 32) is used when it is at least this many cells a side


class AnnotationError(UserError, ValueError):
    """An annotation file that cannot be read as VIA annotations."""


def cam_layer(model_name: str, image_size: int) -> tuple[str, int]:
    """(layer path, stride): the last layer when its map has at least MIN_CAM_SIDE cells a side at this
    image size (224 px: 7x7), else the stride-16 one (64 px: 4x4 instead of 2x2)."""
    stride16, stride32 = CAM_LAYERS[model_name]
    return (stride32, 32) if math.ceil(image_size / 32) >= MIN_CAM_SIDE else (stride16, 16)


def submodule(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """'layer3.-1' -> model.layer3[-1]: integer parts (negative ones too) index, others are attributes."""
    for part in path.split("."):
        model = model[int(part)] if part.lstrip("-").isdigit() else getattr(model, part)
    return model


def grad_cam(model: torch.nn.Module, layer: str, x: torch.Tensor, targets: list[int] | None = None) -> np.ndarray:
    """(N, H, W) Grad-CAM maps in [0, 1] at the input's size, for the given classes (None: the predicted).

    x: the model's input (normalised as in training). Runs in fp32 with gradients, whatever the caller's
    inference or autocast mode; GradCAM leaves the model in eval mode and gradients in the parameters,
    which are cleared here.
    """
    from pytorch_grad_cam import GradCAM  # imports OpenCV: only the stages that draw maps pay for it
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    chosen = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        x = x.detach().clone().float()  # a tensor made under inference_mode cannot enter autograd
        with GradCAM(model=model, target_layers=[submodule(model, layer)]) as cam:
            maps = cam(input_tensor=x, targets=chosen)
    model.zero_grad(set_to_none=True)
    return np.asarray(maps, dtype=np.float32)


def native_size(model: torch.nn.Module, layer: str, image_size: int) -> list[int]:
    """[H, W] of the layer's map for one image of image_size (the CAM's resolution before upsampling)."""
    found = []
    hook = submodule(model, layer).register_forward_hook(lambda m, i, o: found.append(list(o.shape[-2:])))
    try:
        with torch.no_grad():
            model.eval()
            parameter = next(model.parameters())
            model(torch.zeros(1, 3, image_size, image_size, device=parameter.device))
    finally:
        hook.remove()
    return found[0]


# ------------------------------------------------------------------ scores


def pointing_game(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """1.0 where a map's maximum (the first, in row-major order) is inside its mask, else 0.0."""
    flat = maps.reshape(len(maps), -1)
    peak = flat.argmax(axis=1)
    return masks.reshape(len(masks), -1)[np.arange(len(maps)), peak].astype(np.float64)


def energy_in_mask(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The share of each map's total inside its mask (0 for an all-zero map)."""
    total = maps.reshape(len(maps), -1).sum(axis=1)
    inside = (maps * (masks > 0)).reshape(len(maps), -1).sum(axis=1)
    return np.divide(inside, total, out=np.zeros_like(total, dtype=np.float64), where=total > 0)


def centre_prior(size: int, sigma: float = 0.25) -> np.ndarray:
    """A Gaussian at the image centre, sigma a quarter of the side: where a tumour is, knowing nothing."""
    axis = (np.arange(size) + 0.5) / size - 0.5
    return np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * sigma**2)).astype(np.float32)


def mean_with_ci(values: np.ndarray, n_resamples: int, seed: int) -> dict:
    """The mean and its 95% percentile bootstrap interval (resampling images)."""
    if len(values) == 0:
        return {"mean": None, "ci": None}
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "ci": [float(low), float(high)]}


# ------------------------------------------------------------------ VIA annotations


def read_via(path: Path) -> dict[str, dict]:
    """A VGG Image Annotator (VIA 2) export: filename -> {"size": file bytes, "regions": [shape_attributes]}."""
    try:
        entries = json.loads(Path(path).read_text())
        return {
            entry["filename"]: {
                "size": int(entry["size"]),
                "regions": [r["shape_attributes"] for r in entry["regions"]],
            }
            for entry in entries.values()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise AnnotationError(
            f"{path} is not a VIA annotation export (a mapping of entries with filename, size and regions): "
            f"{error}; check params.yaml explain.masks"
        ) from None


def region_outline(shape: dict, points: int = 64) -> list[tuple[float, float]]:
    """A VIA region as a polygon in pixel coordinates: polygon, ellipse (cx, cy, rx, ry, theta) or circle."""
    name = shape["name"]
    if name == "polygon":
        return list(zip(shape["all_points_x"], shape["all_points_y"]))
    if name in ("ellipse", "circle"):
        rx, ry = (shape["r"], shape["r"]) if name == "circle" else (shape["rx"], shape["ry"])
        theta = shape.get("theta", 0.0) if name == "ellipse" else 0.0
        t = np.linspace(0, 2 * np.pi, points, endpoint=False)
        x, y = rx * np.cos(t), ry * np.sin(t)
        return list(
            zip(
                shape["cx"] + x * np.cos(theta) - y * np.sin(theta), shape["cy"] + x * np.sin(theta) + y * np.cos(theta)
            )
        )
    raise AnnotationError(f"VIA region shape {name!r} is not one of polygon, ellipse, circle")


def via_mask(regions: list[dict], width: int, height: int) -> np.ndarray:
    """The union of an image's regions, filled, as uint8 (height, width), 1 = tumour."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for shape in regions:
        draw.polygon(region_outline(shape), fill=255, outline=255)
    return (np.asarray(canvas) > 0).astype(np.uint8)


# ------------------------------------------------------------------ overlays


def overlay(image_uint8: np.ndarray, cam: np.ndarray, mask: np.ndarray | None) -> Image.Image:
    """The image (3, S, S) under its map (jet colours), the tumour outline in green where there is one."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = image_uint8.transpose(1, 2, 0).astype(np.float32) / 255
    picture = Image.fromarray(show_cam_on_image(rgb, cam, use_rgb=True))
    if mask is not None and mask.any():
        edge = mask.astype(bool) & ~_eroded(mask.astype(bool))
        pixels = np.asarray(picture).copy()
        pixels[edge] = (0, 255, 0)
        picture = Image.fromarray(pixels)
    factor = -(-MIN_OVERLAY_SIDE // max(picture.size))  # a 64 px image is too small to read: enlarge
    if factor > 1:  # by whole pixels, so that every image pixel stays a visible block
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
    return picture


def _eroded(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


# ------------------------------------------------------------------ one variant


def via_masks(via: dict[str, dict], rows: list[dict], raw: Path, size: int) -> tuple[dict[str, np.ndarray], dict]:
    """sample_id -> mask (size x size) for the samples of `rows` a VIA file outlines, matched by file name;
    and what did not match: entries naming no sample, and entries whose recorded file size differs from
    the file's (another copy of the image, whose outline need not fit)."""
    by_name = {Path(row["source_path"]).name: row for row in rows}
    masks, unmatched, size_mismatch = {}, [], []
    for filename, entry in sorted(via.items()):
        row = by_name.get(filename)
        if row is None:
            unmatched.append(filename)
            continue
        path = raw / row["source_path"]
        if path.stat().st_size != entry["size"]:
            size_mismatch.append(f"{row['source_path']} ({path.stat().st_size} bytes, VIA says {entry['size']})")
            continue
        with Image.open(path) as image:
            width, height = image.size
        full = Image.fromarray(via_mask(entry["regions"], width, height) * 255)
        masks[row["sample_id"]] = (np.asarray(full.resize((size, size), Image.BILINEAR)) > 127).astype(np.uint8)
    return masks, {"entries": len(via), "matched": len(masks), "unmatched": unmatched, "size_mismatch": size_mismatch}


def explain_variant(variant, params: dict, root: Path = Path(".")) -> dict:
    """Grad-CAM of one variant on its validation images: scores on those with a tumour outline
    (explain.max_images of them at most, a seeded choice), and overlays of explain.samples images
    (half classified right, half wrong, as far as there are). Writes metrics/explain/<variant>.json and
    reports/explain/<variant>/*.png; returns the metrics."""
    settings = params["explain"]
    checkpoint = load_checkpoint(root / variant.checkpoint, variant.stage("train"))
    data = load_split_data(variant.dataset, root)
    size = checkpoint["image_size"]
    normalize = checkpoint.get("normalize") or params["normalize"][variant.init]
    device = pick_device(params["train"]["device"])
    configure_runtime(device)
    model = trained_model(checkpoint, device, "fp32")
    layer, stride = cam_layer(variant.model, size)

    rows = read_index(root / prepared_dir(variant.dataset) / "index.csv")
    val_rows = [rows[i] for i in data.val_index]
    via_file = (settings.get("masks") or {}).get(variant.dataset)
    if via_file:
        outlines, via_report = via_masks(read_via(Path(via_file)), rows, root / raw_dir(variant.dataset), size)
        masks = np.stack([outlines.get(row["sample_id"], np.zeros((size, size), np.uint8)) for row in val_rows])
        has_mask = np.array([row["sample_id"] in outlines for row in val_rows])
    else:
        prepared = np.load(root / prepared_dir(variant.dataset) / "masks.npz")
        masks, has_mask, via_report = prepared["masks"][data.val_index], prepared["has_mask"][data.val_index], None

    images = torch.from_numpy(data.val_images).to(device)
    probs = predict(model, images, normalize["mean"], normalize["std"], params["eval"]["batch_size"], "fp32")
    predicted = probs.argmax(1).cpu().numpy()
    labels = data.val_labels
    rng = np.random.default_rng(settings["seed"])
    with_mask = np.flatnonzero(has_mask)
    limit = settings["max_images"] or len(with_mask)
    scored = np.sort(rng.permutation(with_mask)[:limit])

    def maps(indices: np.ndarray, targets: np.ndarray) -> np.ndarray:
        out = [np.zeros((0, size, size), np.float32)]
        for start in range(0, len(indices), 32):
            part = indices[start : start + 32]
            x = model_input(images[torch.from_numpy(part).to(device)], normalize["mean"], normalize["std"])
            out.append(grad_cam(model, layer, x, targets[part].tolist()))
        return np.concatenate(out)

    cams = maps(scored, labels)  # where the model looks for the true class
    boot, seed = params["eval"]["bootstrap"], params["eval"]["seed"]
    prior = np.broadcast_to(centre_prior(size), (len(scored), size, size))
    scores = {
        "pointing_game": mean_with_ci(pointing_game(cams, masks[scored]), boot, seed),
        "energy_in_mask": mean_with_ci(energy_in_mask(cams, masks[scored]), boot, seed),
        "centre_prior": {
            "pointing_game": mean_with_ci(pointing_game(prior, masks[scored]), boot, seed),
            "energy_in_mask": mean_with_ci(energy_in_mask(prior, masks[scored]), boot, seed),
        },
    }

    right, wrong = np.flatnonzero(predicted == labels), np.flatnonzero(predicted != labels)
    half = settings["samples"] // 2
    shown = np.concatenate(
        [rng.permutation(wrong)[: settings["samples"] - min(half, len(right))], rng.permutation(right)[:half]]
    )
    shown = np.sort(shown[: settings["samples"]]).astype(np.int64)
    names = []
    with atomic_directory(root / explain_dir(variant)) as out:
        for k, cam in zip(shown, maps(shown, predicted)):
            name = (
                f"{data.val_ids[k].replace('/', '_')}_true-{data.class_names[labels[k]]}"
                f"_predicted-{data.class_names[predicted[k]]}.png"
            )
            overlay(data.val_images[k], cam, masks[k] if has_mask[k] else None).save(out / name)
            names.append(name)
    result = {
        "layer": layer,
        "stride": stride,
        "native_resolution": native_size(model, layer, size),
        "image_size": size,
        "target": "the true class",
        "n_val": int(len(labels)),
        "with_mask": int(len(with_mask)),
        "scored": int(len(scored)),
        "skipped_without_mask": int(len(labels) - len(with_mask)),
        **scores,
        "masks": f"VIA file {via_file}" if via_file else "the dataset's own (prepared masks.npz)",
        "via": via_report,
        "overlays": names,
    }
    atomic_write_json(root / explain_metrics(variant), result)
    return result
