"""The evidence behind duplicates.threshold: what each pHash distance links, on a real dataset.

    python bench/duplicate_threshold.py ../shared/data/br35h [--sheets DIR]
    python bench/duplicate_threshold.py ../shared/data/figshare-jpg

Hashes every labelled image as the duplicates stage does (tumorbench.data.duplicates.image_hashes), then
for thresholds 0..10, with and without matching rotations and flips: how many images end up in
groups, the largest group, pairs whose classes differ, pairs across patients (where the dataset
has patient ids), and, for the pairs at each exact distance, the median Pearson correlation of the
two images (64 px grayscale, aligned by the rotation or flip that matched), against random pairs.
Last, under random stratified 60/40 splits (20 seeds): the share of validation images with a copy in
training at threshold 4. --sheets writes contact sheets of random pairs at distance 4, 6 and 8 and of
the pairs whose classes differ, to look at.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tumorbench.core.parallel import parallel_map
from tumorbench.data.duplicates import (
    DIHEDRAL,
    components,
    hash_rows,
    image_hashes,
    loader_of,
    phash_matrix,
    self_pairs,
)
from tumorbench.data.readers import open_sample, read_samples
from tumorbench.data.splits import stratified_val_ids


def thumbnail(job: tuple[str, str]) -> np.ndarray:
    path, loader = job
    return np.asarray(open_sample(path, loader).convert("L").resize((64, 64), Image.Resampling.BILINEAR), np.float32)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def turned(image: np.ndarray, variant: int) -> np.ndarray:
    """The thumbnail as DIHEDRAL[variant] turns an image (PIL's transpose on the array)."""
    turn = DIHEDRAL[variant]
    return image if turn is None else np.asarray(Image.fromarray(image).transpose(turn))


def best_variant(hashes: np.ndarray, a: int, b: int) -> int:
    return int(np.argmin([bin(int(hashes[a, v]) ^ int(hashes[b, 0])).count("1") for v in range(hashes.shape[1])]))


def sheet(pairs: list[tuple[int, int, int]], records: list[dict], thumbs: np.ndarray, path: Path) -> None:
    canvas = Image.new("L", (4 * 140, 72 * ((len(pairs) + 1) // 2) + 4), 255)
    draw = ImageDraw.Draw(canvas)
    for k, (a, b, d) in enumerate(pairs):
        x, y = (k % 2) * 280, (k // 2) * 72
        canvas.paste(Image.fromarray(thumbs[a].astype(np.uint8)), (x, y))
        canvas.paste(Image.fromarray(thumbs[b].astype(np.uint8)), (x + 66, y))
        draw.text((x + 134, y + 10), f"{records[a]['sample_id']}\n{records[b]['sample_id']}\nd={d}", fill=0)
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--sheets", type=Path)
    args = parser.parse_args()

    records, _, reader = read_samples(args.folder)
    jobs = [(r["path"], loader_of(r["path"])) for r in records]
    rows = hash_rows([r["sample_id"] for r in records], list(parallel_map(image_hashes, jobs, "hash")))
    thumbs = np.stack(list(parallel_map(thumbnail, jobs, "thumbnails")))
    labels = np.array([r["label"] for r in records])
    patients = np.array([r["patient_id"] for r in records])
    has_patients = bool(patients[0])
    print(f"{args.folder} ({reader} reader): {len(records)} labelled images")

    rng = np.random.default_rng(0)
    random_pairs = rng.integers(0, len(records), (2000, 2))
    random_r = [correlation(thumbs[a], thumbs[b]) for a, b in random_pairs if a != b]
    print(f"random pairs: median correlation {np.median(random_r):.3f}")

    for flips in (False, True):
        hashes = phash_matrix(rows, flips)
        a_all, b_all, d_all = self_pairs(hashes, 10)
        print(f"\n{'with' if flips else 'without'} rotations and flips")
        print("t   pairs  in groups  groups  largest  class-conflict pairs  cross-patient pairs  r median at d=t")
        for t in range(0, 11, 2):
            keep = d_all <= t
            a, b = a_all[keep], b_all[keep]
            groups = components(len(records), a, b)
            sizes = np.array([len(g) for g in groups] or [0])
            at_t = [(x, y) for x, y, d in zip(a_all, b_all, d_all) if d == t]
            r = [correlation(turned(thumbs[x], best_variant(hashes, x, y)), thumbs[y]) for x, y in at_t[:500]]
            cross = int(np.sum(patients[a] != patients[b])) if has_patients else "-"
            print(
                f"{t:<3} {len(a):>6}  {int(sizes.sum()):>9}  {len(groups):>6}  "
                f"{int(sizes.max()):>7}  {int(np.sum(labels[a] != labels[b])):>20}  {cross!s:>19}  "
                f"{np.median(r) if r else float('nan'):.3f} ({len(at_t)} pairs)"
            )
        if flips and args.sheets:
            args.sheets.mkdir(parents=True, exist_ok=True)
            for t in (4, 6, 8):
                at_t = [(int(x), int(y), int(d)) for x, y, d in zip(a_all, b_all, d_all) if d == t]
                chosen = [at_t[k] for k in rng.choice(len(at_t), min(12, len(at_t)), replace=False)] if at_t else []
                sheet(chosen, records, thumbs, args.sheets / f"pairs_d{t}.png")
            conflicts = [(int(x), int(y), int(d)) for x, y, d in zip(a_all, b_all, d_all) if labels[x] != labels[y]]
            sheet(sorted(conflicts, key=lambda p: p[2])[:16], records, thumbs, args.sheets / "class_conflicts.png")

    hashes = phash_matrix(rows, True)
    a, b, _ = self_pairs(hashes, 4)
    neighbours: dict[int, set[int]] = {}
    for x, y in zip(a, b):
        neighbours.setdefault(int(x), set()).add(int(y))
        neighbours.setdefault(int(y), set()).add(int(x))
    index = [{"sample_id": str(k), "label": int(labels[k])} for k in range(len(records))]
    shares = []
    for seed in range(20):
        val = {int(s) for s in stratified_val_ids(index, 0.4, np.random.default_rng(seed))}
        train = set(range(len(records))) - val
        shares.append(np.mean([bool(neighbours.get(k, set()) & train) for k in val]))
    print(
        f"\nrandom stratified 60/40 splits, 20 seeds: {np.mean(shares):.3f} of validation images have a copy "
        f"(threshold 4, rotations and flips) in training (min {min(shares):.3f}, max {max(shares):.3f})"
    )


if __name__ == "__main__":
    main()
