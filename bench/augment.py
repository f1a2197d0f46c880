"""Images per second: our batched augmentation vs torchvision's per-image PIL path.

Both augment the same uint8 images (real Br35H slices from ../shared/data/br35h,
decoded and resized once; generated noise if that folder is missing) with a
rotation of up to 20 degrees and random horizontal and vertical flips, ending
in float tensors in [0, 1]. The naive path is what a torchvision Dataset does
per image (RandomRotation, RandomHorizontalFlip, RandomVerticalFlip, ToTensor
on a PIL image; RandomRotation's default interpolation is nearest); ours is
the training loop's path: augment_batch on the uint8 batch (nearest, as
torchvision), then to_float. --interpolation bilinear measures the bilinear
variant (to_float first, then grid_sample). Both run in one process under the
training loop's runtime settings (tumorbench.models.runtime.configure_runtime).

    .venv/bin/python bench/augment.py [--size 128] [--n 512] [--batch-size 32] [--device cpu|cuda]

The last line is `ratio ours/naive augment: X.XX`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import load_images as load_br35h  # noqa: E402

from tumorbench.models.augment import augment_batch, to_float  # noqa: E402
from tumorbench.models.runtime import configure_runtime  # noqa: E402

BR35H = Path(__file__).resolve().parents[2] / "shared" / "data" / "br35h"


def load_images(folder: Path, n: int, size: int) -> tuple[np.ndarray, str]:
    """(n, 3, size, size) uint8 images of a Br35H folder, decoded as the prepare stage does, and where
    they came from; generated noise when there is no such folder."""
    if not (folder / "yes").is_dir():
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8), "generated noise (no Br35H found)"
    images, _, _ = load_br35h(folder, size, n)
    return images, f"{len(images)} Br35H images from {folder}"


def paired_seconds(first, second, repeats: int, sync) -> tuple[list[float], list[float]]:
    """Seconds of first() and second(), timed in alternation so machine noise hits both alike."""
    first(), second()  # warm-up: allocator, kernels, page faults
    sync()
    times = ([], [])
    for _ in range(repeats):
        for run, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            run()
            sync()
            out.append(time.perf_counter() - start)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32, help="images per augment_batch call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--data", type=Path, default=BR35H, help="a Br35H folder with yes/ and no/")
    parser.add_argument("--interpolation", default="nearest", choices=["nearest", "bilinear"])
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    configure_runtime(device)  # as training does: threads, and on a CPU malloc keeps freed memory
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    images, origin = load_images(args.data, args.n, args.size)
    print(f"{origin}, {args.size} px, {torch.get_num_threads()} threads, device {device}", file=sys.stderr)

    pil_images = [Image.fromarray(image.transpose(1, 2, 0)) for image in images]
    naive_transform = T.Compose([T.RandomRotation(20), T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.ToTensor()])

    def naive():
        return torch.stack([naive_transform(image) for image in pil_images])

    batch = torch.from_numpy(images).to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def ours():
        for start in range(0, args.n, args.batch_size):
            part = batch[start : start + args.batch_size]
            if args.interpolation == "nearest":
                to_float(augment_batch(part, generator, 20.0, 0.5, 0.5, "nearest"))
            else:
                augment_batch(to_float(part), generator, 20.0, 0.5, 0.5, "bilinear")

    naive_times, ours_times = paired_seconds(naive, ours, args.repeats, sync)
    print(f"naive (PIL, per image): {args.n / statistics.median(naive_times):10.0f} images/s (median)")
    print(
        f"ours (batched {args.batch_size}, {args.interpolation}, {device.type}): "
        f"{args.n / statistics.median(ours_times):10.0f} images/s (median)"
    )
    ratios = [n / o for n, o in zip(naive_times, ours_times)]
    print(
        f"ratio ours/naive augment: {statistics.median(ratios):.2f}  (median of {len(ratios)} side-by-side pairs, "
        f"{min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
