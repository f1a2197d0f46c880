"""Where and how a model runs: device, threads, allocator, precision, compilation, and the logger.

None of this changes the method (training.py's Algorithm 1); it makes the same computation fit the
hardware: CPU threads and malloc settings, bf16 autocast where the hardware computes it natively,
channels_last, torch.compile when asked. Training, evaluation and inference share it.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import nullcontext
from functools import cache
from pathlib import Path
from types import MethodType

import torch

from tumorbench.core.params import ParamsError


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ParamsError("params.yaml: train.device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def configure_runtime(device: torch.device) -> None:
    if device.type == "cpu":
        # More threads than cores slows training down many times over on small machines.
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
    2-core VM batches still page-faulted their buffers in afresh (docs/PERFORMANCE.md). Blocks up to 32 MiB
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
    """oneDNN's bf16 backward of depthwise convolutions is slow (docs/PERFORMANCE.md). These layers
    (EfficientNet's only) run in fp32 while gradients are recorded; inference keeps them in bf16,
    where they are fast. State dicts are unchanged: only the modules' forward is
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


def compiled(model: torch.nn.Module, mode: bool | str) -> torch.nn.Module:
    """train.compile: false -> the model as it is; true -> torch.compile's default mode; a string -> that mode
    ("reduce-overhead" replays CUDA graphs, for small batches whose steps are bound by kernel launches)."""
    if mode is False:
        return model
    return torch.compile(model, mode=None if mode is True else mode)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)  # unwrap torch.compile


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
