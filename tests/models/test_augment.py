import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from tumorbench.models.augment import (
    affine_grid,
    augment_batch,
    border_for_rotation,
    flip,
    normalize,
    rotate_and_flip,
    rotate_and_flip_nearest,
    rotation_flip_matrices,
    source_pixels,
    to_float,
)


def images(b=4, c=3, h=16, w=16, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_to_float_scales_uint8_to_unit_range():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    out = to_float(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 0.2, 1.0]))


def test_normalize_per_channel():
    x = torch.ones(2, 3, 4, 4)
    out = normalize(x, [0.5, 0.0, 1.0], [0.5, 2.0, 1.0])
    assert torch.equal(out[:, 0], torch.full((2, 4, 4), 1.0))
    assert torch.equal(out[:, 1], torch.full((2, 4, 4), 0.5))
    assert torch.equal(out[:, 2], torch.zeros(2, 4, 4))


def test_zero_rotation_and_probabilities_is_identity():
    x = images()
    assert torch.equal(augment_batch(x, seeded(), 0.0, 0.0, 0.0), x)


def test_flips_with_probability_one_equal_torch_flip():
    x = images()
    assert torch.equal(augment_batch(x, seeded(), 0.0, 1.0, 0.0), torch.flip(x, [-1]))
    assert torch.equal(augment_batch(x, seeded(), 0.0, 0.0, 1.0), torch.flip(x, [-2]))
    assert torch.equal(augment_batch(x, seeded(), 0.0, 1.0, 1.0), torch.flip(x, [-2, -1]))


def test_flips_folded_into_the_affine_matrix_equal_torch_flip():
    # angle 0 through grid_sample: pixel centres map onto pixel centres, so flips are exact
    x = images(h=12, w=20)
    zero = torch.zeros(4)
    yes, no = torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)
    assert torch.allclose(rotate_and_flip(x, zero, yes, no), torch.flip(x, [-1]), atol=1e-6)
    assert torch.allclose(rotate_and_flip(x, zero, no, yes), torch.flip(x, [-2]), atol=1e-6)
    assert torch.allclose(rotate_and_flip(x, zero, no, no), x, atol=1e-6)


def test_plus_90_degrees_is_counter_clockwise_like_rot90():
    x = images(h=15, w=15)
    out = rotate_and_flip(x, torch.full((4,), 90.0), torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool))
    assert torch.allclose(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)
    assert not torch.allclose(out, torch.rot90(x, -1, dims=(-2, -1)), atol=1e-2)


def test_rotation_matches_torchvision_rotate_per_image():
    x = images(b=4, h=32, w=32)
    angles = torch.tensor([-17.0, 3.5, 20.0, 45.0])
    no = torch.zeros(4, dtype=torch.bool)
    out = rotate_and_flip(x, angles, no, no)
    for i, angle in enumerate(angles.tolist()):
        # fill=None: torchvision's plain zero-padded grid_sample (a fill value adds a mask blend at the edges)
        expected = TF.rotate(x[i], angle, interpolation=InterpolationMode.BILINEAR, fill=None)
        assert torch.allclose(out[i], expected, atol=1e-4), angle


def test_non_square_rotation_keeps_the_aspect():
    # a 90 degree turn of a W x H picture inside a W x H frame: a centred square patch turns like rot90
    x = torch.zeros(1, 1, 20, 40)
    x[0, 0, 6:14, 16:24] = torch.arange(64.0).view(8, 8)
    out = rotate_and_flip(x, torch.tensor([90.0]), torch.tensor([False]), torch.tensor([False]))
    assert torch.allclose(out[0, 0, 6:14, 16:24], torch.rot90(x[0, 0, 6:14, 16:24], 1), atol=1e-4)


def test_each_image_gets_its_own_draw():
    x = images(b=1).expand(16, -1, -1, -1).contiguous()
    out = augment_batch(x, seeded(), 20.0, 0.5, 0.5)
    distinct = {tuple(o.flatten()[:50].tolist()) for o in out}
    assert len(distinct) > 8


def test_flip_draws_follow_the_probability():
    x = torch.arange(2.0).view(1, 1, 1, 2).expand(4000, 3, 1, 2).contiguous()
    out = augment_batch(x, seeded(), 0.0, 0.3, 0.0)
    flipped = (out[:, 0, 0, 0] == 1).float().mean().item()
    assert abs(flipped - 0.3) < 0.03


def test_angles_are_uniform_within_the_limit():
    # the matrix of angle a has sin(a) at [1, 0]: recover the angles from the same draws
    generator = seeded(3)
    angles = (torch.rand(4000, generator=generator) * 2 - 1) * 20.0
    theta = rotation_flip_matrices(
        angles, torch.zeros(4000, dtype=torch.bool), torch.zeros(4000, dtype=torch.bool), 8, 8
    )
    degrees = torch.rad2deg(torch.asin(theta[:, 1, 0]))
    assert degrees.abs().max() <= 20.0 + 1e-4
    assert degrees.abs().max() > 19.9
    assert abs(degrees.mean().item()) < 0.5


def test_same_seed_same_output_different_seed_different_output():
    x = images()
    a = augment_batch(x, seeded(5), 20.0, 0.5, 0.5)
    b = augment_batch(x, seeded(5), 20.0, 0.5, 0.5)
    c = augment_batch(x, seeded(6), 20.0, 0.5, 0.5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_rotation_fills_corners_with_zero():
    x = torch.ones(1, 3, 32, 32)
    out = rotate_and_flip(x, torch.tensor([45.0]), torch.tensor([False]), torch.tensor([False]))
    assert out[0, :, 0, 0].abs().max() == 0
    assert torch.allclose(out[0, :, 16, 16], torch.ones(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rotation", [0.0, 20.0])
def test_shape_dtype_and_memory_format_preserved(dtype, channels_last, rotation):
    x = images(b=4, h=16, w=24).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = augment_batch(x, seeded(), rotation, 0.5, 0.5)
    assert out.shape == x.shape and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    reference = augment_batch(x.float().contiguous(), seeded(), rotation, 0.5, 0.5)
    assert torch.allclose(out.float(), reference, atol=1e-2)


def test_matrices_match_the_definition():
    theta = rotation_flip_matrices(torch.tensor([30.0]), torch.tensor([True]), torch.tensor([False]), 10, 20)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    expected = torch.tensor([[[-c, -s * 10 / 20, 0.0], [-s * 20 / 10, c, 0.0]]])
    assert torch.allclose(theta, expected, atol=1e-6)


@pytest.mark.parametrize("height, width", [(16, 16), (10, 20), (7, 3), (1, 5)])
def test_affine_grid_equals_torch_affine_grid(height, width):
    theta = torch.randn(5, 2, 3, generator=seeded())
    grid = affine_grid(theta, height, width)
    assert grid.shape == (5, height, width, 2) and grid.is_contiguous()
    assert torch.allclose(grid, F.affine_grid(theta, [5, 3, height, width], align_corners=False), atol=1e-6)


def test_flip_helper_flips_only_selected_images():
    x = images(b=3)
    out = flip(x, torch.tensor([True, False, False]), torch.tensor([False, False, True]))
    assert torch.equal(out[0], x[0].flip(-1))
    assert torch.equal(out[1], x[1])
    assert torch.equal(out[2], x[2].flip(-2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_is_reproducible():
    x = images(b=8, h=64, w=64)
    angles = torch.linspace(-20, 20, 8)
    flips = torch.tensor([True, False] * 4), torch.tensor([True, True, False, False] * 2)
    on_cpu = rotate_and_flip(x, angles, *flips)
    on_gpu = rotate_and_flip(x.cuda(), angles.cuda(), flips[0].cuda(), flips[1].cuda())
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-4)

    def gpu_seeded():
        return torch.Generator(device="cuda").manual_seed(1)

    a = augment_batch(x.cuda(), gpu_seeded(), 20.0, 0.5, 0.5)
    b = augment_batch(x.cuda(), gpu_seeded(), 20.0, 0.5, 0.5)
    assert a.is_cuda and torch.equal(a, b)
    bf16 = augment_batch(
        x.cuda().bfloat16().contiguous(memory_format=torch.channels_last), gpu_seeded(), 20.0, 0.5, 0.5
    )
    assert bf16.dtype == torch.bfloat16 and bf16.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(bf16.float(), a, atol=1e-2)


@pytest.mark.parametrize("height, width", [(32, 32), (24, 40)])
def test_nearest_rotation_equals_grid_sample_nearest_and_works_on_uint8(height, width):
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (6, 3, height, width), dtype=torch.uint8, generator=g)
    angles = torch.tensor([-20.0, -7.5, 0.0, 3.0, 13.0, 20.0])
    flip_h = torch.tensor([True, False, True, False, True, False])
    flip_v = torch.tensor([False, False, True, True, False, True])
    ours = rotate_and_flip_nearest(x, angles, flip_h, flip_v)
    theta = rotation_flip_matrices(angles, flip_h, flip_v, height, width)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    reference = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    assert ours.dtype == torch.uint8
    assert torch.equal(ours.float(), reference)


def test_nearest_augment_batch_is_seeded_and_keeps_channels_last():
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    first = augment_batch(x, torch.Generator().manual_seed(5), 20, 0.5, 0.5, "nearest")
    second = augment_batch(x, torch.Generator().manual_seed(5), 20, 0.5, 0.5, "nearest")
    assert torch.equal(first, second) and not torch.equal(first, x)
    assert first.is_contiguous(memory_format=torch.channels_last)


def tie_tolerant_mismatches(ours: torch.Tensor, reference: torch.Tensor, theta: torch.Tensor) -> int:
    """Pixels where ours and grid_sample differ although neither source position is a float32 tie."""
    b, c, h, w = reference.shape
    grid = F.affine_grid(theta.double(), [b, c, h, w], align_corners=False)
    col = ((grid[..., 0] + 1) * w - 1) / 2
    row = ((grid[..., 1] + 1) * h - 1) / 2
    near_tie = ((col - col.floor() - 0.5).abs() < 1e-3) | ((row - row.floor() - 0.5).abs() < 1e-3)
    differ = (ours.float() != reference).any(1)
    return int((differ & ~near_tie).sum())


@pytest.mark.parametrize("height, width", [(64, 64), (40, 72), (72, 40)])
@pytest.mark.parametrize("max_degrees", [0.5, 20.0, 45.0, 90.0, 180.0])
def test_nearest_rotation_stays_inside_its_border_at_every_angle_up_to_the_maximum(height, width, max_degrees):
    g = torch.Generator().manual_seed(int(max_degrees * 10) + height)
    x = torch.randint(1, 256, (12, 3, height, width), dtype=torch.uint8, generator=g)
    angles = torch.cat([torch.tensor([max_degrees, -max_degrees]), (torch.rand(10, generator=g) * 2 - 1) * max_degrees])
    flip_h = torch.rand(12, generator=g) < 0.5
    flip_v = torch.rand(12, generator=g) < 0.5
    ours = rotate_and_flip_nearest(x, angles, flip_h, flip_v, max_degrees=max_degrees)
    theta = rotation_flip_matrices(angles, flip_h, flip_v, height, width)
    pad = border_for_rotation(max_degrees, height, width)
    row, col = source_pixels(theta, height, width, pad)
    assert 0 <= row.min() and row.max() < height + 2 * pad  # every read lies inside the bordered image
    assert 0 <= col.min() and col.max() < width + 2 * pad
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    reference = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    assert tie_tolerant_mismatches(ours, reference, theta) == 0
    # a turn by 20 or 45 degrees reads zeros from the border (0.5 stays inside; 90 and 180 may fit exactly)
    if max_degrees in (20.0, 45.0):
        assert (ours[0] == 0).all(0).any()


def test_border_is_as_narrow_as_the_turn_allows():
    assert border_for_rotation(0, 128, 128) == 2
    # a 20-degree turn of a 128-pixel square carries a corner 64 * (cos 20 + sin 20 - 1) = 18.0 px out
    assert (
        border_for_rotation(20, 128, 128)
        == math.ceil(64 * (math.cos(math.radians(20)) + math.sin(math.radians(20)) - 1)) + 2
    )
    # from 45 degrees on the corner's full reach, half the diagonal
    assert (
        border_for_rotation(45, 128, 128) == border_for_rotation(180, 128, 128) == math.ceil(64 * math.sqrt(2) - 64) + 2
    )


def test_nearest_rotation_refuses_angles_beyond_its_border():
    x = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    no_flip = torch.tensor([False, False])
    with pytest.raises(ValueError, match="max_degrees=5"):
        rotate_and_flip_nearest(x, torch.tensor([3.0, -30.0]), no_flip, no_flip, max_degrees=5)
