"""Train one variant: the paper's Algorithm 1.

Adam, StepLR stepped once per epoch, cross-entropy. After every epoch the loss
over the whole validation split; the checkpoint with the lowest validation loss
so far is kept, and an equal loss replaces it (the algorithm's `<=`).

The prepared uint8 arrays are loaded once, onto the GPU when there is one;
batches come from a seeded permutation and are augmented, scaled and
standardised on the device. A resume state is written atomically after every
epoch, so a killed run continues where it stopped and ends with the same
result as an uninterrupted one. Asked to stop (SIGTERM, SIGINT, SIGUSR1:
tumorbench.models.stopping), it finishes the batch it is in and saves the
part-epoch too, so a preempted or time-limited task loses at most one batch.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tumorbench.core.fileio import atomic_open
from tumorbench.models.augment import augment_batch, to_float
from tumorbench.models.inference import model_input, predict
from tumorbench.models.runtime import (
    autocast,
    base_model,
    compiled,
    configure_runtime,
    open_live,
    pick_device,
    prepare_model,
    resolved_precision,
)
from tumorbench.models.stopping import StopRequest, TrainingStopped


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


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig):
    # The fused kernel is Adam's update in one pass over each tensor, on CPU and CUDA alike: the same
    # result up to float rounding, several times faster than the per-tensor loop PyTorch picks on a CPU.
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    return optimizer, scheduler


def is_better(val_loss: float, best_loss: float) -> bool:
    """Algorithm 1 keeps the new checkpoint when its loss is lower or equal."""
    return val_loss <= best_loss


def augmented(images_uint8: torch.Tensor, cfg: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """The paper's augmentation of a training batch: rotation and flips, drawn per image."""
    x = to_float(images_uint8) if cfg.interpolation == "bilinear" else images_uint8  # nearest stays uint8
    return augment_batch(x, generator, cfg.rotation, cfg.hflip, cfg.vflip, cfg.interpolation)


@dataclass
class PartEpoch:
    """Where an epoch stopped part-way: its order, the first batch not trained, the loss summed so far."""

    order: torch.Tensor
    next_start: int
    total: torch.Tensor
    seen: int

    def state(self) -> dict:
        return {"order": self.order.cpu(), "next_start": self.next_start, "total": self.total.cpu(), "seen": self.seen}


def train_one_epoch(
    model, optimizer, images, labels, cfg: TrainConfig, generator, progress: bool = True, part=None, stop=None
) -> float | PartEpoch:
    """One pass over the training images in a seeded random order; the mean training loss.

    `part` (a PartEpoch) continues an epoch stopped part-way. When `stop` is true after a batch with
    more to go, the epoch ends there and its PartEpoch is returned instead of the loss."""
    model.train()
    device = images.device
    n = len(images)
    if part is None:
        order = torch.randperm(n, generator=generator, device=device)
        total, seen, first = torch.zeros((), device=device), 0, 0
    else:
        order, total, seen, first = part.order.to(device), part.total.to(device), part.seen, part.next_start
    starts = range(first, n, cfg.batch_size)
    batches = tqdm(starts, desc="  train", leave=False, disable=not progress, unit="batch", total=len(starts))
    for start in batches:
        idx = order[start : start + cfg.batch_size]
        if len(idx) < 2 <= n:
            break  # BatchNorm cannot train on a batch of one image
        x = model_input(augmented(images[idx], cfg, generator), cfg.mean, cfg.std)
        y = labels[idx]
        with autocast(device, cfg.precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)  # stays on the device: no sync per step
        seen += len(idx)
        if stop and start + cfg.batch_size < n:
            return PartEpoch(order, start + cfg.batch_size, total, seen)
    return (total / seen).item()


def validation_scores(model, images, labels, cfg: TrainConfig) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the whole validation split."""
    probs = predict(model, images, cfg.mean, cfg.std, cfg.eval_batch_size, cfg.precision)
    loss = F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels)
    accuracy = (probs.argmax(1) == labels).float().mean()
    return loss.item(), accuracy.item()


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

    part = None
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
        part = PartEpoch(**state["part"]) if state.get("part") else None
        where = f", at batch {batches_done(part, cfg) + 1} of {batch_count(len(x_train), cfg)}" if part else ""
        print(f"resume: continuing from epoch {start_epoch} of {cfg.epochs}{where} (best so far: epoch {best_epoch})")

    def save_state(epoch: int, part: PartEpoch | None) -> None:
        """Resume state: `epoch` epochs finished, and `part` of the next one."""
        save_torch(
            {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "part": part.state() if part else None,
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

    trained = compiled(model, cfg.compile)
    with open_live(live_dir) as live, StopRequest() as stop:
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
            train_loss = train_one_epoch(trained, optimizer, x_train, y_train, cfg, generator, progress, part, stop)
            part = None
            if isinstance(train_loss, PartEpoch):
                save_state(epoch, train_loss)
                done = f"batch {batches_done(train_loss, cfg)} of {batch_count(len(x_train), cfg)}"
                raise TrainingStopped(stopped_message(stop.signal, f"{done} in epoch {epoch + 1}", cfg, resume_dir))
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
            save_state(epoch + 1, None)
            epochs.set_postfix(
                train_loss=f"{train_loss:.4f}",
                val_loss=f"{val_loss:.4f}",
                val_acc=f"{val_accuracy:.4f}",
                best=best_epoch,
            )
            if stop and epoch + 1 < cfg.epochs:  # the signal came during validation
                raise TrainingStopped(stopped_message(stop.signal, f"epoch {epoch + 1}", cfg, resume_dir))
            if stop_after is not None and epoch + 1 - start_epoch >= stop_after and epoch + 1 < cfg.epochs:
                return {"stopped_at": epoch + 1}

    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(resume_dir / "best.pt", checkpoint_path.with_name(checkpoint_path.name + ".tmp"))
    os.replace(checkpoint_path.with_name(checkpoint_path.name + ".tmp"), checkpoint_path)
    shutil.rmtree(resume_dir, ignore_errors=True)
    return {"best_epoch": best_epoch, "best_val_loss": best_loss, "history": history}


def batch_count(n: int, cfg: TrainConfig) -> int:
    return -(-n // cfg.batch_size)


def batches_done(part: PartEpoch, cfg: TrainConfig) -> int:
    return part.next_start // cfg.batch_size


def stopped_message(signal_name: str, after: str, cfg: TrainConfig, resume_dir: Path) -> str:
    return (
        f"stopped by {signal_name} after {after} of {cfg.epochs}; the resume state is saved in {resume_dir}: "
        "rerun (dvc repro) to continue from there"
    )


def log_epoch(live, row: dict) -> None:
    live.step = row["epoch"]
    live.log_metric("train/loss", row["train_loss"])
    live.log_metric("val/loss", row["val_loss"])
    live.log_metric("val/accuracy", row["val_accuracy"])
    live.log_metric("lr", row["lr"])
    live.next_step()
