"""The GPU check: throughput of all 12 models, the paper grid's estimated wall
time, then a real paper-profile subset trained in the time left.

    python bench/gpu.py --data <Br35H folder with yes/ and no/> [--budget 420] [--out DIR]

1. Throughput at 224 px, batch 32, for all 12 models (our loop), and the naive
   torchvision loop for ResNet-50 and ResNet-18, in the same process.
   1b. With --compile-modes (e.g. reduce-overhead: CUDA graphs), the same
   for --compile-models under torch.compile, next to the eager rates.
   1c. With --concurrent K, K trainings of each --concurrent-models model
   timed running at once on the device, one process each (aggregate img/s).
2. The estimated wall time of the paper grid (2 datasets x 12 models x 2 inits
   x 100 epochs) from the measured rates.
3. With the time left: ResNet-18 and EfficientNet-B0 from scratch on Br35H,
   224 px, the paper's Algorithm 1 (100 epochs if they fit), and their rows
   next to the paper's Table 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import compile_setting, measure_naive, measure_ours  # noqa: E402

from tumorbench.core.catalog import MODELS, PAPER_DATASETS, paper_table  # noqa: E402
from tumorbench.core.params import COMPILE_MODES  # noqa: E402
from tumorbench.data.prepare import prepare  # noqa: E402
from tumorbench.data.prepared import class_names_of, read_index  # noqa: E402
from tumorbench.data.splits import make_split  # noqa: E402
from tumorbench.models.architectures import build_model  # noqa: E402
from tumorbench.models.evaluation import validation_metrics  # noqa: E402
from tumorbench.models.inference import predict, trained_model  # noqa: E402
from tumorbench.models.metrics import METRICS  # noqa: E402
from tumorbench.models.runtime import configure_runtime, resolved_precision  # noqa: E402
from tumorbench.models.training import TrainConfig, fit  # noqa: E402


def log(text: str, sink) -> None:
    print(text, flush=True)
    sink.write(text + "\n")
    sink.flush()


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def concurrent_worker(
    model_name: str, data_file: Path, size: int, batch: int, steps: int, barrier, results, count: int
) -> None:
    data = np.load(data_file)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configure_runtime(device)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // count))  # the workers share the cores
    r = measure_ours(
        model_name, data["x"], data["y"], size, batch, device, steps, 5, 256, barrier=barrier, evaluate=False
    )
    results.put((*r["train_window"], steps * batch))


def concurrent_train_rate(model_name: str, count: int, data_file: Path, size: int, batch: int, steps: int) -> float:
    """Images/s of `count` trainings of one model timed running at once, each in its own process:
    all images trained / (last end - first start). Small-batch steps that leave the GPU idle between
    kernel launches can overlap this way; the paper grid's 48 runs are independent."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(count), context.Queue()
    workers = [
        context.Process(
            target=concurrent_worker, args=(model_name, data_file, size, batch, steps, barrier, results, count)
        )
        for _ in range(count)
    ]
    for worker in workers:
        worker.start()
    windows = []
    while len(windows) < count:
        try:
            windows.append(results.get(timeout=5))
        except queue.Empty:
            if any(w.exitcode not in (None, 0) for w in workers):
                for w in workers:
                    w.kill()
                raise RuntimeError(f"a worker exited with {[w.exitcode for w in workers]}") from None
    for worker in workers:
        worker.join()
    return sum(w[2] for w in windows) / (max(w[1] for w in windows) - min(w[0] for w in windows))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=420, help="seconds for the whole script")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--naive", nargs="*", default=["resnet50", "resnet18"])
    parser.add_argument("--train", nargs="*", default=["resnet18", "efficientnet-b0"])
    parser.add_argument(
        "--compile-modes",
        nargs="*",
        default=[],
        choices=["true", *COMPILE_MODES],
        help="also measure these train.compile modes (compilation is not timed but takes minutes)",
    )
    parser.add_argument("--compile-models", nargs="*", default=["resnet50", "efficientnet-b0"])
    parser.add_argument(
        "--concurrent",
        type=int,
        default=0,
        help="also measure this many trainings of one model running at once (one process each)",
    )
    parser.add_argument("--concurrent-models", nargs="*", default=["efficientnet-b0", "resnet50"])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args(argv)
    start = time.time()
    found = {"rates": {}, "naive": {}, "compiled": {}, "concurrent": {}, "results": {}}

    def seconds_left() -> float:
        return args.budget - (time.time() - start)

    def save() -> None:  # after every section, so a run stopped by its timeout keeps what it measured
        (args.out / "gpu_check.json").write_text(json.dumps({"device": name, **found}, indent=1))

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configure_runtime(device)
    args.out.mkdir(parents=True, exist_ok=True)
    sink = open(args.out / "gpu_check.txt", "w")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    log(f"device: {name}; torch {torch.__version__}; budget {args.budget:.0f} s", sink)

    work = Path(tempfile.mkdtemp())
    report = prepare(args.data, work / "prepared", args.size, 0.01, "br35h")
    log(f"prepared {report['n_samples']} images at {args.size} px in {time.time() - start:.0f} s", sink)
    images = np.load(work / "prepared" / "images.npy")
    rows = read_index(work / "prepared" / "index.csv")
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    mixed_x, mixed_y = images[order], labels[order]

    log(
        f"\n## 1. Throughput, {args.size} px, batch {args.batch}, {resolved_precision('auto', device)} + "
        f"channels_last (ours)",
        sink,
    )
    log(f"{'model':<16}{'GFLOPs/img':>11}{'train img/s':>13}{'eval img/s':>12}{'train TFLOP/s':>15}", sink)
    rates = found["rates"]
    for model_name in args.models:
        r = measure_ours(model_name, mixed_x, mixed_y, args.size, args.batch, device, args.steps, 5, 256)
        rates[model_name] = r
        log(
            f"{model_name:<16}{r['gflops']:>11.2f}{r['train']:>13.0f}{r['eval']:>12.0f}"
            f"{3 * r['gflops'] * r['train'] / 1000:>15.1f}",
            sink,
        )
        free_device_memory(device)
    paths = [r["source_path"] for r in rows]
    for model_name in args.naive:
        naive = measure_naive(
            model_name,
            args.data,
            [paths[i] for i in order],
            args.size,
            args.batch,
            device,
            args.steps,
            5,
            len(os.sched_getaffinity(0)),
        )
        ours = rates.get(model_name) or measure_ours(
            model_name, mixed_x, mixed_y, args.size, args.batch, device, args.steps, 5, 256
        )
        log(
            f"naive {model_name}: train {naive['train']:.0f} img/s, eval {naive['eval']:.0f} img/s; "
            f"ratio ours/naive train: {ours['train'] / naive['train']:.2f}, eval: {ours['eval'] / naive['eval']:.2f}",
            sink,
        )
        found["naive"][model_name] = naive
    save()

    for mode in args.compile_modes:
        log(f"\n## 1b. torch.compile mode {mode} (train.compile), {args.size} px, batch {args.batch}", sink)
        for model_name in args.compile_models:
            if seconds_left() < 150:  # compiling takes a minute or two; keep time for the sections after
                log(f"{model_name}: skipped, {seconds_left():.0f} s of the budget left", sink)
                continue
            began = time.time()
            try:
                r = measure_ours(
                    model_name,
                    mixed_x,
                    mixed_y,
                    args.size,
                    args.batch,
                    device,
                    args.steps,
                    5,
                    256,
                    compile_mode=compile_setting(mode),
                )
            except Exception as error:  # a mode that fails here must not cost the rest of the check
                log(f"{model_name}: compile {mode} failed: {type(error).__name__}: {str(error)[:300]}", sink)
                continue
            eager = rates.get(model_name)
            versus = (
                f"; x{r['train'] / eager['train']:.2f} train, x{r['eval'] / eager['eval']:.2f} eval vs eager"
                if eager
                else ""
            )
            log(
                f"{model_name:<16} train {r['train']:.0f} img/s, eval {r['eval']:.0f} img/s{versus} "
                f"({time.time() - began:.0f} s with compilation; timed over full batches: training's last, "
                f"partial batch compiles once more per run)",
                sink,
            )
            found["compiled"][f"{model_name} {mode}"] = r
            torch._dynamo.reset()  # drop this model's compiled code and CUDA graphs before the next
            free_device_memory(device)
        save()

    if args.concurrent > 1:
        log(f"\n## 1c. {args.concurrent} trainings at once on this device (one process each, eager)", sink)
        np.savez(work / "mixed.npz", x=mixed_x, y=mixed_y)
        free_device_memory(device)
        for model_name in args.concurrent_models:
            if seconds_left() < 120:
                log(f"{model_name}: skipped, {seconds_left():.0f} s of the budget left", sink)
                continue
            began = time.time()
            try:  # 3x the steps: several processes must overlap for most of the timed window
                together = concurrent_train_rate(
                    model_name, args.concurrent, work / "mixed.npz", args.size, args.batch, 3 * args.steps
                )
            except Exception as error:
                log(f"{model_name}: {args.concurrent} at once failed: {type(error).__name__}: {error}", sink)
                continue
            alone = rates.get(model_name)
            versus = f" = x{together / alone['train']:.2f} one training's rate" if alone else ""
            log(f"{model_name:<16} {together:.0f} train img/s in all{versus} ({time.time() - began:.0f} s)", sink)
            found["concurrent"][f"{model_name} x{args.concurrent}"] = together
        save()

    log("\n## 2. Estimated wall time of the paper grid (48 variants x 100 epochs)", sink)
    total = 0.0
    for model_name, r in rates.items():
        per_model = sum(2 * 100 * (d.num_train / r["train"] + d.num_val / r["eval"]) for d in PAPER_DATASETS.values())
        total += per_model
        log(f"{model_name:<16}{per_model / 60:>8.1f} min (both datasets, both inits)", sink)
    if len(rates) == len(MODELS):
        log(f"grid total: {total / 3600:.2f} h of training on this GPU", sink)

    log(f"\n## 3. Paper profile subset: Br35H, scratch, {args.size} px, 60/40 split (seed 42)", sink)
    split = make_split(work / "prepared" / "index.csv", work / "prepared" / "images.npy", 0.4, 42, "none", "br35h")
    position = {r["sample_id"]: i for i, r in enumerate(rows)}
    train_idx = np.array([position[s] for s in split["train"]])
    val_idx = np.array([position[s] for s in split["val"]])
    results = found["results"]
    for model_name in args.train:
        r = rates.get(model_name)
        if r is None:
            log(f"{model_name}: not in --models, so no rate to plan its epochs by; skipped", sink)
            continue
        per_epoch = len(train_idx) / r["train"] + len(val_idx) / r["eval"]
        left = args.budget - (time.time() - start) - 20
        epochs = min(args.epochs, int(left / (per_epoch * 1.15 * (len(args.train) - len(results)))))
        if epochs < 1:
            log(f"{model_name}: no time left to train", sink)
            continue
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=args.batch,
            lr=1e-3,
            step_size=30,
            gamma=0.1,
            seed=0,
            device=device.type,
            compile=False,
            rotation=20,
            hflip=0.5,
            vflip=0.5,
            mean=[0.0] * 3,
            std=[1.0] * 3,
            eval_batch_size=256,
        )
        torch.manual_seed(0)
        class_names = class_names_of(rows)
        model, _ = build_model(model_name, len(class_names), "scratch", args.size)
        began = time.time()
        summary = fit(
            model,
            images[train_idx],
            labels[train_idx],
            images[val_idx],
            labels[val_idx],
            cfg,
            checkpoint_path=work / f"{model_name}.pt",
            live_dir=None,
            fingerprint=model_name,
            checkpoint_meta={
                "model_name": model_name,
                "init": "scratch",
                "class_names": class_names,
                "image_size": args.size,
            },
            resume_dir=work / f"resume-{model_name}",
            progress=False,
        )
        checkpoint = torch.load(work / f"{model_name}.pt", map_location="cpu", weights_only=True)
        model = trained_model(checkpoint, device, cfg.precision)
        probs = predict(model, torch.from_numpy(images[val_idx]).to(device), cfg.mean, cfg.std)
        metrics = validation_metrics(labels[val_idx], probs.double().cpu().numpy(), class_names, args.batch)
        results[model_name] = {
            **metrics,
            "epochs": epochs,
            "best_epoch": summary["best_epoch"],
            "seconds": time.time() - began,
            "val_loss_curve": [h["val_loss"] for h in summary["history"]],
        }
        log(f"{model_name}: {epochs} epochs in {time.time() - began:.0f} s, best epoch {summary['best_epoch']}", sink)

    log(f"\n{'model':<16}{'':>6}{'accuracy':>10}{'f1':>10}{'precision':>10}{'recall':>10}{'loss':>10}", sink)
    for model_name, m in results.items():
        paper = [float(paper_table("br35h", "scratch")[model_name][k]) for k in METRICS]
        log(
            f"{model_name:<16}{'ours':>6}" + "".join(f"{m[k]:>10.6f}" for k in METRICS),
            sink,
        )
        log(f"{'':<16}{'paper':>6}" + "".join(f"{v:>10.6f}" for v in paper), sink)
    save()
    log(f"\ntotal {time.time() - start:.0f} s", sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
