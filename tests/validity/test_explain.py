"""Grad-CAM and the localisation scores: maps with a known answer, every architecture, the real VIA file."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tumorbench.core.catalog import MODELS
from tumorbench.data.readers import read_samples
from tumorbench.models.architectures import build_model
from tumorbench.validity.explain import (
    CAM_LAYERS,
    cam_layer,
    centre_prior,
    energy_in_mask,
    grad_cam,
    mean_with_ci,
    native_size,
    overlay,
    pointing_game,
    read_via,
    region_outline,
    via_mask,
    via_masks,
)

LARGE = ("efficientnet-b4", "efficientnet-b5", "efficientnet-b6", "efficientnet-b7")


def test_a_map_peaked_inside_the_mask_scores_one_and_outside_zero():
    mask = np.zeros((1, 16, 16), np.uint8)
    mask[0, 4:8, 4:8] = 1
    inside, outside = np.zeros((1, 16, 16), np.float32), np.zeros((1, 16, 16), np.float32)
    inside[0, 5, 6] = 1.0
    outside[0, 12, 12] = 1.0
    assert pointing_game(inside, mask).tolist() == [1.0] and energy_in_mask(inside, mask).tolist() == [1.0]
    assert pointing_game(outside, mask).tolist() == [0.0] and energy_in_mask(outside, mask).tolist() == [0.0]
    half = inside + outside
    assert energy_in_mask(half, mask).tolist() == [0.5]
    assert energy_in_mask(np.zeros((1, 16, 16)), mask).tolist() == [0.0]  # an all-zero map scores 0, not NaN


def test_the_centre_prior_peaks_in_the_middle_and_scores_a_central_tumour_above_a_corner_one():
    prior = centre_prior(32)
    assert np.unravel_index(prior.argmax(), prior.shape) in [(15, 15), (15, 16), (16, 15), (16, 16)]
    central, corner = np.zeros((1, 32, 32), np.uint8), np.zeros((1, 32, 32), np.uint8)
    central[0, 12:20, 12:20], corner[0, :8, :8] = 1, 1
    assert energy_in_mask(prior[None], central)[0] > 5 * energy_in_mask(prior[None], corner)[0]


def test_mean_with_ci_brackets_the_mean_and_is_none_without_images():
    values = np.array([0.0, 1.0] * 50)
    result = mean_with_ci(values, 500, 0)
    assert result["mean"] == 0.5 and result["ci"][0] < 0.5 < result["ci"][1]
    assert mean_with_ci(np.array([]), 500, 0) == {"mean": None, "ci": None}


def test_the_layer_is_the_stride_16_one_at_64_px_and_the_last_at_224():
    assert cam_layer("resnet18", 64) == ("layer3.-1", 16) and cam_layer("resnet18", 224) == ("layer4.-1", 32)
    assert set(CAM_LAYERS) == set(MODELS)
    torch.manual_seed(0)
    model, _ = build_model("resnet18", 2, "scratch", 224)
    assert native_size(model, "layer4.-1", 224) == [7, 7] and native_size(model, "layer3.-1", 64) == [4, 4]


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in LARGE else m for m in MODELS])
def test_grad_cam_runs_for_every_architecture_on_a_4x4_map_at_64_px(name):
    torch.manual_seed(0)
    model, _ = build_model(name, 3, "scratch", 64)
    layer, stride = cam_layer(name, 64)
    assert stride == 16 and native_size(model, layer, 64) == [4, 4]
    with torch.inference_mode():  # as after predict(): grad_cam must still work
        x = torch.rand(2, 3, 64, 64)
    maps = grad_cam(model, layer, x, [0, 2])
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all() and 0 <= maps.min() and maps.max() <= 1
    assert all(p.grad is None for p in model.parameters())  # the backward's gradients are cleared
    picture = overlay((x[0].numpy() * 255).astype(np.uint8), maps[0], np.ones((64, 64), np.uint8))
    assert picture.size == (256, 256)  # enlarged 4x: MIN_OVERLAY_SIDE


def polygon_area(points: list[tuple[float, float]]) -> float:
    x, y = np.array(points, dtype=float).T
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def test_via_shapes_are_filled_as_their_areas_say():
    square = {"name": "polygon", "all_points_x": [10, 90, 90, 10], "all_points_y": [10, 10, 70, 70]}
    ellipse = {"name": "ellipse", "cx": 120, "cy": 120, "rx": 40, "ry": 20, "theta": 0.5}
    circle = {"name": "circle", "cx": 40, "cy": 160, "r": 30}
    for shape, area in [(square, 80 * 60), (ellipse, np.pi * 40 * 20), (circle, np.pi * 30 * 30)]:
        filled = via_mask([shape], 200, 200).sum()
        assert abs(filled - area) / area < 0.08, shape["name"]  # the outline's pixels are filled too
    both = via_mask([square, circle], 200, 200)
    assert both.sum() == via_mask([square], 200, 200).sum() + via_mask([circle], 200, 200).sum()
    rotated = via_mask([ellipse], 200, 200)
    assert rotated[int(120 + 30 * np.sin(0.5)), int(120 + 30 * np.cos(0.5))] == 1  # along the turned long axis
    assert rotated[int(120 - 30 * np.cos(0.5)), int(120 + 30 * np.sin(0.5))] == 0  # not along the short one


@pytest.mark.slow
def test_the_real_br35h_via_file_outlines_801_tumour_images_and_its_polygons_fill_correctly(shared_data, tmp_path):
    via = read_via(shared_data / "br35h-masks" / "annotations_all.json")
    assert len(via) == 801 and set(via) == {f"y{i}.jpg" for i in range(801)}
    shapes = Counter(region["name"] for entry in via.values() for region in entry["regions"])
    assert shapes == {"polygon": 666, "ellipse": 257, "circle": 8}
    assert sum(len(entry["regions"]) > 1 for entry in via.values()) == 117
    for name in ("y0.jpg", "y100.jpg", "y500.jpg"):
        polygons = [r for r in via[name]["regions"] if r["name"] == "polygon"]
        mask = via_mask(polygons, 1000, 1000)
        expected = sum(polygon_area(region_outline(r)) for r in polygons)
        assert abs(mask.sum() - expected) / expected < 0.1
    records, _, _ = read_samples(shared_data / "br35h")
    masks, report = via_masks(via, records, shared_data / "br35h", 64)
    assert report == {"entries": 801, "matched": 801, "unmatched": [], "size_mismatch": []}
    assert all(mask.shape == (64, 64) and mask.any() for mask in masks.values())
    assert set(masks) == {f"yes/y{i}" for i in range(801)}


def test_a_small_overlay_is_enlarged_by_whole_pixels_with_the_outline_kept():
    image = np.zeros((3, 64, 64), dtype=np.uint8)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[20:30, 20:30] = 1
    picture = np.asarray(overlay(image, np.zeros((64, 64), dtype=np.float32), mask))
    assert picture.shape == (256, 256, 3)
    assert (picture[80:84, 80:84] == (0, 255, 0)).all()  # the outline's corner pixel (20, 20) as a 4x4 block
    assert not (picture[100:104, 100:104] == (0, 255, 0)).all()  # inside the outline, not on it
    large = np.asarray(overlay(np.zeros((3, 300, 300), dtype=np.uint8), np.zeros((300, 300), np.float32), None))
    assert large.shape == (300, 300, 3)
