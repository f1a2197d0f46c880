"""Near-duplicate search on generated 64-bit hashes: our multi-index search against all pairs.

    python bench/duplicates.py [--images 100000] [--threshold 4] [--variants 8] [--naive 5000]

Generates --images random pHash-like hashes (with --variants rotations/flips per image, as the
duplicates stage compares them), plants near copies (1% of the images, 0..threshold bits flipped),
and times tumorbench.data.duplicates.self_pairs on all of them. The all-pairs comparison it replaces is
timed on the first --naive images (a full N x N x variants distance matrix does not fit in memory at
100k: 80 GB of uint64), and the two agree on those images; the all-pairs time at --images is that
measurement scaled by (images / naive)^2, printed as an estimate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tumorbench.data.duplicates import hamming, self_pairs


def planted_hashes(n: int, variants: int, threshold: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=(n, variants), dtype=np.int64).astype(np.uint64) * np.uint64(2)
    copies = rng.choice(n, size=n // 100, replace=False)
    for i in copies:
        source = int(rng.integers(0, n))
        bits = rng.choice(64, size=int(rng.integers(0, threshold + 1)), replace=False)
        flip = np.uint64(sum(1 << int(b) for b in bits))
        hashes[i, 0] = hashes[source, int(rng.integers(0, variants))] ^ flip  # a copy of a rotation or flip
    return hashes


def all_pairs(hashes: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    """The brute force: every variant of every image against every image as it is, in blocks of rows."""
    n, variants = hashes.shape
    found = set()
    for start in range(0, n, 256):
        block = hashes[start : start + 256]
        distance = hamming(block[:, :, None], hashes[None, None, :, 0]).min(axis=1)  # (rows, n)
        for a, b in zip(*np.nonzero(distance <= threshold)):
            a = int(a) + start
            if a != int(b):
                found.add((min(a, int(b)), max(a, int(b))))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--threshold", type=int, default=4)
    parser.add_argument("--variants", type=int, default=8)
    parser.add_argument("--naive", type=int, default=5000, help="images the all-pairs search is timed on")
    args = parser.parse_args()

    hashes = planted_hashes(args.images, args.variants, args.threshold)
    began = time.perf_counter()
    a, b, _ = self_pairs(hashes, args.threshold)
    ours = time.perf_counter() - began
    print(
        f"multi-index: {args.images} images x {args.variants} variants, threshold {args.threshold}: "
        f"{len(a)} pairs in {ours:.2f} s"
    )

    subset = hashes[: args.naive]
    began = time.perf_counter()
    naive = all_pairs(subset, args.threshold)
    naive_time = time.perf_counter() - began
    began = time.perf_counter()
    sa, sb, _ = self_pairs(subset, args.threshold)
    ours_subset = time.perf_counter() - began
    assert set(zip(sa.tolist(), sb.tolist())) == naive, "the two searches disagree"
    estimate = naive_time * (args.images / args.naive) ** 2
    print(
        f"on the first {args.naive} images: all pairs {naive_time:.2f} s, multi-index {ours_subset:.3f} s, "
        f"same {len(naive)} pairs; ratio {naive_time / ours_subset:.0f}x"
    )
    print(
        f"all pairs at {args.images} images, estimated: {estimate:.0f} s; multi-index measured {ours:.2f} s; "
        f"ratio {estimate / ours:.0f}x"
    )


if __name__ == "__main__":
    main()
