"""Train one variant: the paper's Algorithm 1.

Adam, StepLR stepped once per epoch, cross-entropy. After every epoch the loss
over the whole validation split; the checkpoint with the lowest validation loss
so far is kept, and an equal loss replaces it (the algorithm's `<=`).

The prepared uint8 arrays are loaded once, onto the GPU when there is one;
batches come from a seeded permutation and are augmented, scaled and
standardised on the device. A resume state is written atomically after every
epoch, so a killed run continues where it stopped and ends with the same
result as an uninterrupted one.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from types import MethodType

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tumorbench.augment import augment_batch, normalize, to_float
from tumorbench.fileio import atomic_open
from tumorbench.params import ParamsError

RESUME_ROOT = Path(".cache/resume")


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    step_size: int
    gamma: float
    seed: int
    device: str
    compile: bool | str
    rotation: float
    hflip: float
    vflip: float
    mean: list[float]
    std: list[float]
    eval_batch_size: int = 256
    interpolation: str = "nearest"
    precision: str = "auto"

    @classmethod
    def from_params(cls, params: dict, init: str) -> TrainConfig:
        t, a, n = params["train"], params["augment"], params["normalize"][init]
        return cls(
            epochs=t["epochs"],
            batch_size=t["batch_size"],
            lr=t["lr"],
            step_size=t["step_size"],
            gamma=t["gamma"],
            seed=t["seed"],
            device=t["device"],
            compile=t["compile"],
            rotation=a["rotation"],
            hflip=a["hflip"],
            vflip=a["vflip"],
            mean=n["mean"],
            std=n["std"],
            eval_batch_size=params["eval"]["batch_size"],
            interpolation=a["interpolation"],
            precision=t["precision"],
        )


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ParamsError("params.yaml: train.device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def configure_runtime(device: torch.device) -> None:
    if device.type == "cpu":
        # More threads than cores makes training ~10x slower on small machines.
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        keep_freed_memory()
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for the next batch instead of handing it back to the OS.

    PyTorch's CPU tensors come from malloc. glibc serves blocks of a few MB with mmap and unmaps
    them when freed, or trims the heap; it raises its threshold as it goes, but on this project's
    2-core VM batches still page-faulted their buffers in afresh, ~500 faults per augmented batch
    of 32 at 128 px, as long as the augmentation itself (docs/PERFORMANCE.md). Blocks up to 32 MiB
    (glibc's largest threshold; larger ones, such as a 224 px ResNet batch's first activations,
    are still mapped) now come from the heap, which is not trimmed below 1 GiB of free space, so
    the memory is reused; the process keeps its peak size. Without glibc nothing changes.
    Returns whether the settings were applied.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


@cache
def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 in hardware: CUDA GPUs from Ampere on, CPUs with AVX512-BF16 or AMX.
    Cached: autocast asks once per training step."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def resolved_precision(precision: str, device: torch.device) -> str:
    """train.precision on this device: auto is bf16 where the hardware has bf16 arithmetic, else fp32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    if resolved_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def prepare_model(
    model: torch.nn.Module, device: torch.device, precision: str, depthwise_fp32: bool = True
) -> torch.nn.Module:
    """The model on the device, channels_last; on a CPU in bf16, depthwise convolutions train in fp32
    (depthwise_fp32=False turns that off, for benchmarks)."""
    model = model.to(device).to(memory_format=torch.channels_last)
    if depthwise_fp32 and device.type == "cpu" and resolved_precision(precision, device) == "bf16":
        train_depthwise_convs_in_fp32(model)
    return model


def train_depthwise_convs_in_fp32(model: torch.nn.Module) -> None:
    """oneDNN's bf16 backward of depthwise convolutions is slow: under CPU bf16 autocast
    EfficientNet-B0 (64 px) trained at 101 images/s against 152 in fp32 (docs/PERFORMANCE.md).
    These layers (EfficientNet's only) run in fp32 while gradients are recorded; inference keeps
    them in bf16, where they are fast. State dicts are unchanged: only the modules' forward is
    wrapped, per instance, so such a model can be deep-copied but not pickled whole (we save
    state dicts only).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.in_channels > 1 and module.groups == module.in_channels:
            module.forward = MethodType(_fp32_forward_when_training, module)


def _fp32_forward_when_training(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return type(conv).forward(conv, x.float())
    return type(conv).forward(conv, x)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig):
    on_cuda = next(model.parameters()).is_cuda
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=on_cuda or None)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    return optimizer, scheduler


def is_better(val_loss: float, best_loss: float) -> bool:
    """Algorithm 1 keeps the new checkpoint when its loss is lower or equal."""
    return val_loss <= best_loss


@lru_cache(maxsize=8)
def normalization(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as tensors on the device, made once instead of copied there every batch."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def model_input(images_uint8: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None) -> torch.Tensor:
    """uint8 batch -> augmented (when a generator is given), scaled, standardised float batch."""
    x = images_uint8
    if generator is not None:
        if cfg.interpolation == "bilinear":
            x = to_float(x)
        x = augment_batch(x, generator, cfg.rotation, cfg.hflip, cfg.vflip, cfg.interpolation)
    if not x.is_floating_point():
        x = to_float(x)  # nearest-neighbour augmentation runs on uint8, a quarter of the bytes
    x = normalize(x, *normalization(tuple(cfg.mean), tuple(cfg.std), x.device))
    return x.contiguous(memory_format=torch.channels_last)


def train_one_epoch(model, optimizer, images, labels, cfg: TrainConfig, generator, progress: bool = True) -> float:
    model.train()
    device = images.device
    n = len(images)
    order = torch.randperm(n, generator=generator, device=device)
    total = torch.zeros((), device=device)
    seen = 0
    starts = range(0, n, cfg.batch_size)
    for start in tqdm(starts, desc="  train", leave=False, disable=not progress, unit="batch"):
        idx = order[start : start + cfg.batch_size]
        if len(idx) < 2 <= n:
            break  # BatchNorm cannot train on a batch of one image
        x = model_input(images[idx], cfg, generator)
        y = labels[idx]
        with autocast(device, cfg.precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)  # stays on the device: no sync per step
        seen += len(idx)
    return (total / seen).item()


@torch.inference_mode()
def predict(model, images, cfg: TrainConfig) -> torch.Tensor:
    """Softmax probabilities (float32, on the images' device) for every image, in order."""
    model.eval()
    out = []
    for start in range(0, len(images), cfg.eval_batch_size):
        x = model_input(images[start : start + cfg.eval_batch_size], cfg, None)
        with autocast(images.device, cfg.precision):
            logits = model(x)
        out.append(torch.softmax(logits.float(), dim=1))
    return torch.cat(out)


def validation_scores(model, images, labels, cfg: TrainConfig) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the whole validation split."""
    probs = predict(model, images, cfg)
    loss = F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels)
    accuracy = (probs.argmax(1) == labels).float().mean()
    return loss.item(), accuracy.item()


def compiled(model: torch.nn.Module, mode: bool | str) -> torch.nn.Module:
    """train.compile: false -> the model as it is; true -> torch.compile's default mode; a string -> that mode
    ("reduce-overhead" replays CUDA graphs, for small batches whose steps are bound by kernel launches)."""
    if mode is False:
        return model
    return torch.compile(model, mode=None if mode is True else mode)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)  # unwrap torch.compile


def save_torch(obj, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def rng_states(generator: torch.Generator) -> dict:
    states = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(generator: torch.Generator, states: dict) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def load_resume_state(resume_dir: Path, fingerprint: str) -> dict | None:
    path = resume_dir / "state.pt"
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a state we cannot read is no worse than none
        print(f"resume: ignoring unreadable {path} ({error}); starting from epoch 0")
        return None
    if state.get("fingerprint") != fingerprint:
        print(f"resume: ignoring {path}: it was made from other inputs or params; starting from epoch 0")
        return None
    return state


def fit(
    model: torch.nn.Module,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    cfg: TrainConfig,
    checkpoint_path: Path,
    live_dir: Path | None,
    fingerprint: str,
    checkpoint_meta: dict,
    resume_dir: Path,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Run Algorithm 1; write the best checkpoint to `checkpoint_path`; return a summary.

    `stop_after` ends the run after that many epochs in this call, leaving the
    resume state behind as a killed run would (used by tests).
    """
    device = pick_device(cfg.device)
    configure_runtime(device)
    model = prepare_model(model, device, cfg.precision)
    x_train = torch.from_numpy(np.ascontiguousarray(train_images)).to(device)
    y_train = torch.from_numpy(train_labels).to(device)
    x_val = torch.from_numpy(np.ascontiguousarray(val_images)).to(device)
    y_val = torch.from_numpy(val_labels).to(device)

    compute = {"device": device.type, "precision": resolved_precision(cfg.precision, device)}
    # a resume state from other hardware (another device or precision) is not continued
    fingerprint = f"{fingerprint} on {compute['device']} in {compute['precision']}"
    optimizer, scheduler = make_optimizer(model, cfg)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    start_epoch, best_loss, best_epoch, history = 0, float("inf"), -1, []

    state = load_resume_state(resume_dir, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_states(generator, state["rng"])
        start_epoch, best_loss, best_epoch, history = (
            state["epoch"],
            state["best_loss"],
            state["best_epoch"],
            state["history"],
        )
        print(f"resume: continuing from epoch {start_epoch} of {cfg.epochs} (best so far: epoch {best_epoch})")

    trained = compiled(model, cfg.compile)
    with open_live(live_dir) as live:
        for row in history:  # DVC removed the old log with the stage's outputs: replay it
            log_epoch(live, row)
        epochs = tqdm(
            range(start_epoch, cfg.epochs),
            desc=checkpoint_path.stem,
            disable=not progress,
            initial=start_epoch,
            total=cfg.epochs,
            unit="epoch",
        )
        for epoch in epochs:
            lr = optimizer.param_groups[0]["lr"]
            train_loss = train_one_epoch(trained, optimizer, x_train, y_train, cfg, generator, progress)
            val_loss, val_accuracy = validation_scores(trained, x_val, y_val, cfg)
            scheduler.step()
            if is_better(val_loss, best_loss):
                best_loss, best_epoch = val_loss, epoch
                save_torch(
                    {
                        "model": base_model(model).state_dict(),
                        "epoch": epoch,
                        "val_loss": val_loss,
                        "compute": compute,
                        **checkpoint_meta,
                    },
                    resume_dir / "best.pt",
                )
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "lr": lr,
            }
            history.append(row)
            log_epoch(live, row)
            save_torch(
                {
                    "fingerprint": fingerprint,
                    "epoch": epoch + 1,
                    "model": base_model(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_states(generator),
                    "best_loss": best_loss,
                    "best_epoch": best_epoch,
                    "history": history,
                },
                resume_dir / "state.pt",
            )
            epochs.set_postfix(
                train_loss=f"{train_loss:.4f}",
                val_loss=f"{val_loss:.4f}",
                val_acc=f"{val_accuracy:.4f}",
                best=best_epoch,
            )
            if stop_after is not None and epoch + 1 - start_epoch >= stop_after and epoch + 1 < cfg.epochs:
                return {"stopped_at": epoch + 1}

    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(resume_dir / "best.pt", checkpoint_path.with_name(checkpoint_path.name + ".tmp"))
    os.replace(checkpoint_path.with_name(checkpoint_path.name + ".tmp"), checkpoint_path)
    shutil.rmtree(resume_dir, ignore_errors=True)
    return {"best_epoch": best_epoch, "best_val_loss": best_loss, "history": history}


class NoLog:
    """Stands in for DVCLive where it is not installed (e.g. a bare GPU machine running bench/)."""

    step = 0

    def log_metric(self, name, value):
        pass

    def next_step(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def open_live(live_dir: Path | None):
    """DVCLive logging into `live_dir`; dvc.yaml, not DVCLive, declares the plots (dvcyaml=False)."""
    if live_dir is None:
        return NoLog()
    from dvclive import Live  # slow to import; only training needs it

    return Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)


def log_epoch(live, row: dict) -> None:
    live.step = row["epoch"]
    live.log_metric("train/loss", row["train_loss"])
    live.log_metric("val/loss", row["val_loss"])
    live.log_metric("val/accuracy", row["val_accuracy"])
    live.log_metric("lr", row["lr"])
    live.next_step()
