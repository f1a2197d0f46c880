"""Train and eval images/s: our loop vs a naive torchvision loop, in one process.

    python bench/throughput.py --model resnet18 --size 128 --batch 32 [--device cpu|cuda] [--steps N]

Ours: prepared uint8 arrays held in memory (on the GPU when there is one),
seeded permutation, batched augmentation on the device, channels_last, bf16
autocast where the hardware has bf16 arithmetic (train.precision: auto; GPUs
from Ampere on, CPUs with AVX512-BF16 or AMX), as tumorbench.models.training trains.
Naive: torchvision ImageFolder over the raw JPGs, per-image PIL transforms in
DataLoader workers, fp32. Same model, batch size, image size and optimizer.
The last line is the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tumorbench.core.params import COMPILE_MODES
from tumorbench.data.readers import decode_image, read_samples
from tumorbench.models.architectures import build_model, model_flops
from tumorbench.models.inference import predict
from tumorbench.models.runtime import compiled, configure_runtime, pick_device, prepare_model, resolved_precision
from tumorbench.models.training import TrainConfig, make_optimizer, train_one_epoch

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "br35h"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def load_images(data: Path, size: int, count: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The first `count` labelled images, alternating classes, decoded once (the prepare stage's job)."""
    records, _, _ = read_samples(data)
    by_class = [[r for r in records if r["label"] == k] for k in (0, 1)]
    chosen = [r for pair in zip(*by_class) for r in pair][:count]
    images = np.stack([decode_image(data / r["source_path"], size) for r in chosen])
    return images, np.array([r["label"] for r in chosen], dtype=np.int64), [r["source_path"] for r in chosen]


def compile_setting(text: str) -> bool | str:
    """A command-line train.compile ("false", "true" or a torch.compile mode) as params.yaml holds it."""
    return {"false": False, "true": True}.get(text, text)


def measure_ours(
    model_name: str,
    images: np.ndarray,
    labels: np.ndarray,
    size: int,
    batch: int,
    device: torch.device,
    steps: int,
    warmup: int,
    eval_batch: int,
    precision: str = "auto",
    compile_mode: bool | str = False,
    barrier=None,
    evaluate: bool = True,
    depthwise_fp32: bool = True,
) -> dict:
    """Train (and eval) images/s of our loop. With a barrier, the timed training waits for the other
    processes holding it, so several can be timed running at once; train_window holds its wall-clock span."""
    torch.manual_seed(0)
    model, _ = build_model(model_name, 2, "scratch", size)
    cfg = TrainConfig(
        epochs=1,
        batch_size=batch,
        lr=1e-3,
        step_size=30,
        gamma=0.1,
        seed=0,
        device=device.type,
        compile=False,
        rotation=20,
        hflip=0.5,
        vflip=0.5,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        eval_batch_size=eval_batch,
        precision=precision,
    )
    model = prepare_model(model, device, precision, depthwise_fp32)
    trained = compiled(model, compile_mode)
    optimizer, _ = make_optimizer(model, cfg)  # as training builds it (fused Adam)
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.from_numpy(images).to(device)
    y = torch.from_numpy(labels).to(device)
    n = steps * batch
    train_one_epoch(trained, optimizer, x[: warmup * batch], y[: warmup * batch], cfg, generator, progress=False)
    sync(device)
    if barrier is not None:
        barrier.wait()
    began = time.time()
    start = time.perf_counter()
    train_one_epoch(trained, optimizer, x[:n], y[:n], cfg, generator, progress=False)
    sync(device)
    train_rate = n / (time.perf_counter() - start)
    result = {"train": train_rate, "train_window": (began, time.time()), "gflops": model_flops(model, size)}
    if not evaluate:
        return result
    # warm-up over the timed batch shapes: cudnn.benchmark tunes each once; a compiled model compiles,
    # then records CUDA graphs
    for _ in range(1 if compile_mode is False else 3):
        predict(trained, x[:n], cfg.mean, cfg.std, cfg.eval_batch_size, cfg.precision)
    sync(device)
    start = time.perf_counter()
    predict(trained, x[:n], cfg.mean, cfg.std, cfg.eval_batch_size, cfg.precision)
    sync(device)
    return {**result, "eval": n / (time.perf_counter() - start)}


def measure_naive(
    model_name: str,
    data: Path,
    paths: list[str],
    size: int,
    batch: int,
    device: torch.device,
    steps: int,
    warmup: int,
    workers: int,
) -> dict:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    with tempfile.TemporaryDirectory() as tmp:
        # ImageFolder over the same files, one folder per class (the raw set also has an unlabeled pred/)
        for rel in paths:
            link = Path(tmp) / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((data / rel).resolve())
        train_tf = transforms.Compose(
            [
                transforms.Resize((size, size)),
                transforms.RandomRotation(20),
                transforms.RandomHorizontalFlip(),
                transforms.RandomVerticalFlip(),
                transforms.ToTensor(),
                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )
        eval_tf = transforms.Compose(
            [
                transforms.Resize((size, size)),
                transforms.ToTensor(),
                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )
        loader_args = dict(
            batch_size=batch, num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0
        )
        rgb = lambda path: __import__("PIL.Image").Image.open(path).convert("RGB")  # noqa: E731
        train_set = datasets.ImageFolder(tmp, transform=train_tf, loader=rgb)
        eval_set = datasets.ImageFolder(tmp, transform=eval_tf, loader=rgb)

        torch.manual_seed(0)
        model, _ = build_model(model_name, 2, "scratch", size)
        model = model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def train_steps(loader, count):
            model.train()
            done = 0
            for images, labels in loader:
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                loss = F.cross_entropy(model(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss.item()  # a typical loop logs every step
                done += 1
                if done == count:
                    return

        loader = DataLoader(train_set, shuffle=True, drop_last=True, **loader_args)
        train_steps(loader, warmup)
        sync(device)
        start = time.perf_counter()
        train_steps(loader, steps)
        sync(device)
        train_rate = steps * batch / (time.perf_counter() - start)

        model.eval()
        eval_loader = DataLoader(eval_set, shuffle=False, **loader_args)
        seen = 0
        start = None
        with torch.no_grad():
            for i, (images, _) in enumerate(eval_loader):
                if i == warmup:
                    sync(device)
                    start, seen = time.perf_counter(), 0
                model(images.to(device)).argmax(1).cpu()
                seen += len(images)
                if start is not None and seen >= steps * batch:
                    break
        sync(device)
        eval_rate = seen / (time.perf_counter() - start)
    return {"train": train_rate, "eval": eval_rate}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=None, help="timed train steps (default 12 on CPU, 50 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="naive DataLoader workers (default: all cores)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a Br35H folder (yes/ and no/)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp32"],
        help="our loop's train.precision (auto: bf16 where the hardware has it)",
    )
    parser.add_argument(
        "--compile",
        default="false",
        choices=["false", "true", *COMPILE_MODES],
        help="our loop's train.compile (torch.compile the model; compilation is not timed)",
    )
    parser.add_argument(
        "--depthwise-bf16",
        action="store_true",
        help="keep depthwise convolutions in bf16 on a CPU too (plain autocast, for comparison)",
    )
    args = parser.parse_args(argv)
    compile_mode = compile_setting(args.compile)

    device = pick_device(args.device)
    configure_runtime(device)
    cores = len(os.sched_getaffinity(0))
    steps = args.steps or (50 if device.type == "cuda" else 12)
    warmup = args.warmup or (10 if device.type == "cuda" else 2)
    if not args.data.exists():
        sys.exit(f"{args.data} not found: pass --data <a Br35H folder with yes/ and no/>")
    images, labels, paths = load_images(args.data, args.size, (steps + warmup) * args.batch)
    if len(images) < (steps + warmup) * args.batch:
        sys.exit(f"{args.data} has only {len(images)} images; lower --steps or --batch")
    ours = measure_ours(
        args.model,
        images,
        labels,
        args.size,
        args.batch,
        device,
        steps,
        warmup,
        args.eval_batch,
        args.precision,
        compile_mode,
        depthwise_fp32=not args.depthwise_bf16,
    )
    name = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"CPU, {cores} cores, {torch.get_num_threads()} threads"
    )
    print(
        f"{args.model} {args.size}px batch {args.batch} on {name}; {steps} timed steps after {warmup} warm-up; "
        f"ours: precision {args.precision} = {resolved_precision(args.precision, device)}, compile {args.compile}; "
        f"naive: fp32"
    )
    print(f"model: {ours['gflops']:.3f} GFLOPs per image (forward)")
    print(f"{'loop':<8}{'train img/s':>14}{'eval img/s':>14}{'train TFLOP/s':>16}")
    rows = [("ours", ours)]
    if not args.skip_naive:
        naive = measure_naive(
            args.model,
            args.data,
            paths,
            args.size,
            args.batch,
            device,
            steps,
            warmup,
            args.workers if args.workers is not None else cores,
        )
        rows.append(("naive", naive))
    for label, r in rows:
        print(f"{label:<8}{r['train']:>14.1f}{r['eval']:>14.1f}{3 * ours['gflops'] * r['train'] / 1000:>16.3f}")
    if not args.skip_naive:
        print(f"ratio ours/naive eval: {ours['eval'] / naive['eval']:.2f}")
        print(f"ratio ours/naive train: {ours['train'] / naive['train']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
