"""Batched data augmentation on the device the images are on.

The paper's augmentation (random rotation up to 20 degrees, random horizontal
and vertical flips) is done for a whole batch at once: one sampling grid per
image from a 2x3 affine matrix that holds the rotation and the flips, then a
single bilinear `grid_sample`. No PIL, no loop over images, so it runs on the
GPU when the batch is there. Areas rotated in from outside the image are 0
(black, like the MRI background); normalisation comes after augmentation.

Convention: a positive angle turns the picture counter-clockwise as displayed
(row 0 at the top), as torchvision's `rotate` does; +90 degrees equals
`torch.rot90(x, 1, dims=(-2, -1))`. Flips are applied before the rotation;
with angles symmetric around 0 the order does not change the distribution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_float(images_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images (B, 3, H, W) -> floats in [0, 1]."""
    return images_uint8.to(dtype).div_(255)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def rotation_flip_matrices(
    angles_deg: torch.Tensor, flip_h: torch.Tensor, flip_v: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """(B, 2, 3) affine matrices: output pixel -> where to sample in the input (F.affine_grid's theta).

    In pixel units the input position is R(angle) @ F @ output position, R the inverse of a
    counter-clockwise turn (y points down) and F = diag(+-1, +-1) the flips; the aspect factors
    convert pixel units into affine_grid's [-1, 1] coordinates, which differ for x and y when H != W.
    """
    radians = angles_deg.float() * (math.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    sign_x = 1 - 2 * flip_h.float()
    sign_y = 1 - 2 * flip_v.float()
    theta = torch.zeros(len(angles_deg), 2, 3, device=angles_deg.device)
    theta[:, 0, 0] = cos * sign_x
    theta[:, 0, 1] = -sin * sign_y * (height / width)
    theta[:, 1, 0] = sin * sign_x * (width / height)
    theta[:, 1, 1] = cos * sign_y
    return theta


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """F.affine_grid(theta, (B, C, height, width), align_corners=False), faster on a CPU.

    An affine map is a sum of a term along x and a term along y, so the grid is one broadcast
    add of (B, 1, W, 2) and (B, H, 1, 2); torch's version multiplies a materialised (B, H*W, 3)
    base grid by theta, which costs more than the grid_sample that follows.
    """
    # pixel centres in [-1, 1], as align_corners=False places them
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, dtype=theta.dtype, device=theta.device)
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, dtype=theta.dtype, device=theta.device)
    along_x = theta[:, None, None, :, 0] * xs[None, None, :, None]
    along_y = theta[:, None, None, :, 1] * ys[None, :, None, None] + theta[:, None, None, :, 2]
    return along_x + along_y


def augment_batch(
    x: torch.Tensor,
    generator: torch.Generator,
    rotation: float,
    hflip: float,
    vflip: float,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Each image turned by its own angle, uniform in [-rotation, rotation] degrees, and flipped
    left-right with probability hflip and upside-down with probability vflip.

    x: (B, C, H, W), float for bilinear, any dtype (uint8 too) for nearest; generator: on x.device.
    interpolation: "nearest" (torchvision RandomRotation's default) or "bilinear".
    Returns the same shape, dtype and memory format.
    """
    b = x.shape[0]
    # Always the same three draws, so the random stream does not depend on which options are on.
    angles = (torch.rand(b, generator=generator, device=x.device) * 2 - 1) * rotation
    flip_h = torch.rand(b, generator=generator, device=x.device) < hflip
    flip_v = torch.rand(b, generator=generator, device=x.device) < vflip
    if rotation == 0:
        return flip(x, flip_h, flip_v)
    if interpolation == "nearest":
        return rotate_and_flip_nearest(x, angles, flip_h, flip_v, max_degrees=abs(rotation))
    if interpolation != "bilinear":
        raise ValueError(f"interpolation {interpolation!r}; allowed: nearest, bilinear")
    return rotate_and_flip(x, angles, flip_h, flip_v)


def flip(x: torch.Tensor, flip_h: torch.Tensor, flip_v: torch.Tensor) -> torch.Tensor:
    """Image i flipped left-right where flip_h[i] and upside-down where flip_v[i]; no resampling."""
    out = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    out = torch.where(flip_v[:, None, None, None], out.flip(-2), out)
    return out.contiguous(memory_format=memory_format_of(x))


def rotate_and_flip(
    x: torch.Tensor, angles_deg: torch.Tensor, flip_h: torch.Tensor, flip_v: torch.Tensor
) -> torch.Tensor:
    """Image i flipped as flip_h[i], flip_v[i] say, then turned by angles_deg[i] (bilinear, zero fill)."""
    b, c, h, w = x.shape
    theta = rotation_flip_matrices(angles_deg, flip_h, flip_v, h, w)
    # Low-precision sampling coordinates would be off by up to a pixel: sample in float32.
    work_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    grid = affine_grid(theta.to(work_dtype), h, w)
    out = F.grid_sample(x.to(work_dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(x.dtype).contiguous(memory_format=memory_format_of(x))


def border_for_rotation(max_degrees: float, height: int, width: int) -> int:
    """Width of a zero border that holds every position a turn of up to max_degrees samples from.

    A turn about the centre carries the corner (w/2, h/2) furthest: its x reach w/2*cos(t) + h/2*sin(t)
    peaks at t = atan2(h, w), so over [0, max] it is largest there or at an end (likewise for y).
    """
    a, b = width / 2, height / 2
    top = math.radians(min(abs(max_degrees), 180.0))
    turns = (0.0, top, min(top, math.atan2(b, a)), min(top, math.atan2(a, b)))
    reach_x = max(a * math.cos(t) + b * math.sin(t) for t in turns)
    reach_y = max(a * math.sin(t) + b * math.cos(t) for t in turns)
    return math.ceil(max(reach_x - a, reach_y - b)) + 2  # + rounding to a pixel + float error


def rotate_and_flip_nearest(
    x: torch.Tensor, angles_deg: torch.Tensor, flip_h: torch.Tensor, flip_v: torch.Tensor, max_degrees: float = 180.0
) -> torch.Tensor:
    """As rotate_and_flip, but nearest-neighbour (grid_sample(mode="nearest")'s pixels, up to
    float rounding at exact half-pixel ties), done as one gather of source pixels, so it works on
    uint8 batches and is faster on a CPU (docs/PERFORMANCE.md). Every |angle| must be <= max_degrees: the
    images get a zero border just wide enough for that turn, so no position needs a bounds check
    (checked on a CPU; on a GPU the check would wait for the device, and a larger angle fails
    there with an out-of-bounds index)."""
    b, c, h, w = x.shape
    if x.device.type == "cpu" and b and float(angles_deg.abs().max()) > max_degrees:
        raise ValueError(f"angles up to {float(angles_deg.abs().max()):.2f} degrees, but max_degrees={max_degrees}")
    pad = border_for_rotation(max_degrees, h, w)
    theta = rotation_flip_matrices(angles_deg, flip_h, flip_v, h, w).to(torch.float32)
    row, col = source_pixels(theta, h, w, pad)
    index = row.mul_(w + 2 * pad).add_(col).long().view(b, 1, h * w)
    source = F.pad(x, (pad, pad, pad, pad)).reshape(b, c, -1)
    out = source.gather(2, index.expand(b, c, h * w)).view(b, c, h, w)
    return out.contiguous(memory_format=memory_format_of(x))


def source_pixels(theta: torch.Tensor, height: int, width: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col), each (B, H, W) whole numbers as floats: the pixel of the image framed by a `pad`
    border that each output pixel reads, for F.affine_grid's theta (B, 2, 3)."""
    h, w = height, width
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=theta.device)
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=theta.device)
    # grid_sample's pixel position ((u + 1) * size - 1) / 2 of the source point u = theta @ (x, y, 1),
    # as a part along x (B, 1, W) plus a part along y (B, H, 1), shifted by the border
    col = (theta[:, 0, 0, None] * xs * (w / 2))[:, None, :] + (
        (theta[:, 0, 1, None] * ys + theta[:, 0, 2, None] + 1) * (w / 2) - 0.5 + pad
    )[:, :, None]
    row = (theta[:, 1, 0, None] * xs * (h / 2))[:, None, :] + (
        (theta[:, 1, 1, None] * ys + theta[:, 1, 2, None] + 1) * (h / 2) - 0.5 + pad
    )[:, :, None]
    return row.round_(), col.round_()


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std with one mean and std per channel."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std
