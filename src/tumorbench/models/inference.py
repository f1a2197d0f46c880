"""From prepared uint8 images to class probabilities: what evaluation, training's validation pass and
any later use of a checkpoint share, so a model is always fed exactly as it was trained."""

from __future__ import annotations

import pickle
import zipfile
from functools import lru_cache
from pathlib import Path

import torch

from tumorbench.core.errors import UserError
from tumorbench.models.architectures import build_model
from tumorbench.models.augment import normalize, to_float
from tumorbench.models.runtime import autocast, prepare_model

CHECKPOINT_KEYS = ("model", "model_name", "init", "class_names", "image_size", "epoch")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, damaged or unsafe to load."""


def load_checkpoint(path: Path, train_stage: str | None = None) -> dict:
    """A checkpoint the train stage wrote, loaded with weights_only=True; a CheckpointError naming the file
    and the fix otherwise. train_stage: for a pipeline variant, the dvc.yaml stage that retrains it
    (Variant.stage("train"): train@..., train_grouped@..., train_cv@...-<k>)."""
    path = Path(path)
    restore = (
        f"restore it with `dvc checkout --force {path}` (if the DVC cache has it) "
        f"or retrain with `dvc repro -f -s {train_stage}`"
        if train_stage
        else "use a models/<variant>.pt the train stage wrote"
    )
    if not path.exists():
        raise CheckpointError(f"{path} is missing: {restore}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} was refused by weights_only loading: it holds Python objects beyond tensors and plain "
            f"values, which could run code. Do not load it; {restore}. ({str(error).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(f"{path} is truncated or corrupted ({error}); {restore}") from None
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint] if isinstance(checkpoint, dict) else ["all"]
    if missing:
        raise CheckpointError(f"{path} is not a tumorbench checkpoint (it lacks {missing}); {restore}")
    return checkpoint


@lru_cache(maxsize=8)
def normalization(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as tensors on the device, made once instead of copied there every batch."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def model_input(images: torch.Tensor, mean, std) -> torch.Tensor:
    """A uint8 batch (or floats already in [0, 1]) -> scaled to [0, 1], standardised, channels_last."""
    x = images if images.is_floating_point() else to_float(images)
    x = normalize(x, *normalization(tuple(mean), tuple(std), x.device))
    return x.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict(model, images: torch.Tensor, mean, std, batch_size: int = 256, precision: str = "auto") -> torch.Tensor:
    """Softmax probabilities (float32, on the images' device) for every uint8 image, in order."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = model_input(images[start : start + batch_size], mean, std)
        with autocast(images.device, precision):
            logits = model(x)
        out.append(torch.softmax(logits.float(), dim=1))
    return torch.cat(out)


def trained_model(checkpoint: dict, device: torch.device, precision: str = "auto") -> torch.nn.Module:
    """The network a training checkpoint holds (its model_name, init, class_names, image_size and weights),
    on the device, ready for predict()."""
    model, _ = build_model(
        checkpoint["model_name"],
        len(checkpoint["class_names"]),
        checkpoint["init"],
        checkpoint["image_size"],
        load_weights=False,
    )
    model.load_state_dict(checkpoint["model"])
    return prepare_model(model, device, precision)
