import ctypes
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tumorbench.core.fileio import md5_file
from tumorbench.models.architectures import build_model
from tumorbench.models.runtime import compiled, prepare_model, resolved_precision
from tumorbench.models.stopping import STOPPED_EXIT, TrainingStopped
from tumorbench.models.training import TrainConfig, fit, make_optimizer


def config(**overrides) -> TrainConfig:
    values = dict(
        epochs=3,
        batch_size=16,
        lr=1e-3,
        step_size=30,
        gamma=0.1,
        seed=0,
        device="cpu",
        compile=False,
        rotation=20.0,
        hflip=0.5,
        vflip=0.5,
        mean=[0.0] * 3,
        std=[1.0] * 3,
        eval_batch_size=64,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_optimizer_is_the_papers_adam_up_to_rounding():
    torch.manual_seed(0)
    ours, plain = nn.Linear(8, 3), nn.Linear(8, 3)
    plain.load_state_dict(ours.state_dict())
    start = ours.weight.detach().clone()
    optimizer, _ = make_optimizer(ours, config())
    reference = torch.optim.Adam(plain.parameters(), lr=1e-3, foreach=False)
    for _ in range(50):
        x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
        for model, opt in ((ours, optimizer), (plain, reference)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    assert (ours.weight - start).abs().max() > 1e-3  # the weights moved
    for a, b in zip(ours.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_learning_rate_follows_the_papers_step_schedule():
    optimizer, scheduler = make_optimizer(nn.Linear(2, 2), config())
    rates = []
    for _ in range(90):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == rates[29] == pytest.approx(1e-3)
    assert rates[30] == rates[59] == pytest.approx(1e-4)
    assert rates[60] == rates[89] == pytest.approx(1e-5)


class ScriptedValidationLoss(nn.Module):
    """A model whose validation loss in epoch e is losses[e] (labels all 0, two classes)."""

    def __init__(self, losses):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.register_buffer("evaluations", torch.zeros((), dtype=torch.long))
        self.losses = losses

    def forward(self, x):
        if self.training:
            return self.weight * x.flatten(1)[:, :2]
        loss = self.losses[int(self.evaluations)]
        self.evaluations += 1
        margin = -math.log(math.expm1(loss))  # cross-entropy of logits [margin, 0] for label 0
        return torch.tensor([margin, 0.0]).repeat(len(x), 1)


def test_best_checkpoint_is_the_last_epoch_with_the_lowest_validation_loss(tmp_path):
    losses = [0.5, 0.4, 0.4, 0.6, 0.3, 0.3, 0.35]
    images = np.zeros((8, 3, 8, 8), dtype=np.uint8)
    labels = np.zeros(8, dtype=np.int64)
    summary = fit(
        ScriptedValidationLoss(losses),
        images,
        labels,
        images,
        labels,
        config(epochs=len(losses)),
        checkpoint_path=tmp_path / "best.pt",
        live_dir=tmp_path / "live",
        fingerprint="x",
        checkpoint_meta={},
        resume_dir=tmp_path / "resume",
        progress=False,
    )
    checkpoint = torch.load(tmp_path / "best.pt", weights_only=True)
    assert summary["best_epoch"] == checkpoint["epoch"] == 5  # the tie at epoch 5 replaces epoch 4
    assert checkpoint["val_loss"] == pytest.approx(0.3, abs=1e-6)
    assert int(checkpoint["model"]["evaluations"]) == 6  # the weights saved are those of epoch 5
    assert [round(r["val_loss"], 6) for r in summary["history"]] == losses


def blobs(n: int, seed: int, size: int = 32):
    """Images whose class is a bright square's presence: learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, 3, size, size), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64) % 2
    for i in np.flatnonzero(labels):
        y, x = rng.integers(4, size - 12, size=2)
        images[i, :, y : y + 8, x : x + 8] = 220
    return images, labels


def run_fit(tmp_path, name, stop_after=None, epochs=3, on_model=None, **overrides):
    torch.manual_seed(0)
    model, _ = build_model("resnet18", 2, "scratch", 32)
    if on_model is not None:
        on_model(model)
    train_x, train_y = blobs(48, seed=1)
    val_x, val_y = blobs(32, seed=2)
    return fit(
        model,
        train_x,
        train_y,
        val_x,
        val_y,
        config(epochs=epochs, **overrides),
        checkpoint_path=tmp_path / name,
        live_dir=tmp_path / "live",
        fingerprint="same-inputs",
        checkpoint_meta={},
        resume_dir=tmp_path / "resume",
        progress=False,
        stop_after=stop_after,
    )


@pytest.mark.slow
def test_same_seed_gives_identical_results_on_cpu(tmp_path):
    first = run_fit(tmp_path, "a.pt")
    second = run_fit(tmp_path, "b.pt")
    assert first["history"] == second["history"]
    assert md5_file(tmp_path / "a.pt") == md5_file(tmp_path / "b.pt")


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    uninterrupted = run_fit(tmp_path, "full.pt")
    stopped = run_fit(tmp_path, "resumed.pt", stop_after=1)
    assert stopped == {"stopped_at": 1}
    assert (tmp_path / "resume" / "state.pt").exists() and not (tmp_path / "resumed.pt").exists()
    resumed = run_fit(tmp_path, "resumed.pt")
    assert resumed["history"] == uninterrupted["history"]
    assert md5_file(tmp_path / "resumed.pt") == md5_file(tmp_path / "full.pt")
    assert not (tmp_path / "resume").exists()
    logged = (tmp_path / "live" / "plots" / "metrics" / "val" / "loss.tsv").read_text().splitlines()
    assert len(logged) == 1 + 3  # header + every epoch, the replayed ones included


def signal_at_training_forward(model: nn.Module, count: int, signum: int) -> None:
    """Send this process `signum` during the model's `count`-th forward pass in training mode, as a cluster
    would at any moment; Python runs the handler as soon as os.kill returns, inside that batch."""
    calls = []

    def hook(module, inputs):
        if module.training:
            calls.append(1)
            if len(calls) == count:
                os.kill(os.getpid(), signum)

    model.register_forward_pre_hook(hook)


@pytest.mark.slow
def test_a_stop_signal_mid_epoch_saves_the_part_epoch_and_resumes_to_the_same_result(tmp_path, capsys):
    uninterrupted = run_fit(tmp_path, "full.pt", batch_size=4)  # 12 batches an epoch
    state = tmp_path / "resume" / "state.pt"
    before = signal.getsignal(signal.SIGTERM)

    def in_epoch_2_batch_5(model):
        signal_at_training_forward(model, 12 + 5, signal.SIGTERM)

    with pytest.raises(TrainingStopped, match=r"stopped by SIGTERM after batch 5 of 12 in epoch 2 of 3") as stop:
        run_fit(tmp_path, "resumed.pt", batch_size=4, on_model=in_epoch_2_batch_5)
    assert stop.value.exit_code == STOPPED_EXIT and signal.getsignal(signal.SIGTERM) is before
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == 1 and saved["part"]["next_start"] == 5 * 4 and not (tmp_path / "resumed.pt").exists()
    capsys.readouterr()
    resumed = run_fit(tmp_path, "resumed.pt", batch_size=4)
    assert "resume: continuing from epoch 1 of 3, at batch 6 of 12" in capsys.readouterr().out
    assert resumed["history"] == uninterrupted["history"]
    assert md5_file(tmp_path / "resumed.pt") == md5_file(tmp_path / "full.pt")


@pytest.mark.slow
def test_resume_state_from_other_inputs_is_ignored(tmp_path, capsys):
    run_fit(tmp_path, "x.pt", stop_after=1)
    torch.manual_seed(0)
    model, _ = build_model("resnet18", 2, "scratch", 32)
    x, y = blobs(48, seed=1)
    result = fit(
        model,
        x,
        y,
        x,
        y,
        config(epochs=2),
        checkpoint_path=tmp_path / "y.pt",
        live_dir=tmp_path / "live",
        fingerprint="other-inputs",
        checkpoint_meta={},
        resume_dir=tmp_path / "resume",
        progress=False,
    )
    assert "ignoring" in capsys.readouterr().out
    assert [r["epoch"] for r in result["history"]] == [0, 1]


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_bf16_arithmetic():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("needs /proc/cpuinfo to know the CPU's features independently of torch")
    flags = set(cpuinfo.read_text().split())
    has_bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
    cpu = torch.device("cpu")
    assert resolved_precision("auto", cpu) == ("bf16" if has_bf16 else "fp32")
    assert resolved_precision("fp32", cpu) == "fp32" and resolved_precision("bf16", cpu) == "bf16"


def test_cpu_bf16_trains_depthwise_convolutions_in_fp32_and_infers_them_in_bf16():
    torch.manual_seed(0)
    model, _ = build_model("efficientnet-b0", 2, "scratch", 32)
    keys = list(model.state_dict())
    model = prepare_model(model, torch.device("cpu"), "bf16")
    assert list(model.state_dict()) == keys  # checkpoints stay loadable without the wrapper
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    pointwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    assert len(depthwise) == 16 and pointwise
    dtypes = {}
    for name, module in (("depthwise", depthwise[3]), ("pointwise", pointwise[3])):
        module.register_forward_hook(lambda m, i, out, name=name: dtypes.setdefault(name, []).append(out.dtype))
    x = torch.rand(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().sum().backward()
        with torch.inference_mode():
            model.eval()(x)
    assert dtypes["depthwise"] == [torch.float32, torch.bfloat16]
    assert dtypes["pointwise"] == [torch.bfloat16, torch.bfloat16]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_fp32_models_are_left_alone():
    model, _ = build_model("efficientnet-b0", 2, "scratch", 32)
    model = prepare_model(model, torch.device("cpu"), "fp32")
    assert not any("forward" in vars(m) for m in model.modules())


def test_checkpoint_records_the_device_and_precision_it_was_trained_with(tmp_path):
    run_fit(tmp_path, "a.pt", epochs=1)
    checkpoint = torch.load(tmp_path / "a.pt", weights_only=True)
    assert checkpoint["compute"] == {"device": "cpu", "precision": resolved_precision("auto", torch.device("cpu"))}


@pytest.mark.slow
def test_compiled_training_saves_plain_state_dicts(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    x, y = blobs(40, seed=1, size=24)
    fit(
        model,
        x,
        y,
        x,
        y,
        config(epochs=1, compile=True),
        checkpoint_path=tmp_path / "c.pt",
        live_dir=None,
        fingerprint="c",
        checkpoint_meta={},
        resume_dir=tmp_path / "resume",
        progress=False,
    )
    state = torch.load(tmp_path / "c.pt", weights_only=True)["model"]
    assert not any("_orig_mod" in key for key in state)  # loadable into the uncompiled model
    model.load_state_dict(state)


def test_compile_setting_reaches_torch_compile_as_its_mode(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: calls.append(mode) or ("compiled", model))
    model = nn.Linear(2, 2)
    assert compiled(model, False) is model
    assert compiled(model, True) == ("compiled", model)
    assert compiled(model, "reduce-overhead") == ("compiled", model)
    assert calls == [None, "reduce-overhead"]


@pytest.mark.slow
def test_resume_state_from_another_precision_is_ignored(tmp_path, capsys):
    torch.manual_seed(0)
    model, _ = build_model("resnet18", 2, "scratch", 32)
    x, y = blobs(48, seed=1)
    common = dict(
        checkpoint_path=tmp_path / "p.pt",
        live_dir=None,
        fingerprint="same-inputs",
        checkpoint_meta={},
        resume_dir=tmp_path / "resume",
        progress=False,
    )
    fit(model, x, y, x, y, config(epochs=2, precision="fp32"), stop_after=1, **common)
    result = fit(model, x, y, x, y, config(epochs=2, precision="bf16"), **common)
    assert "ignoring" in capsys.readouterr().out
    assert [r["epoch"] for r in result["history"]] == [0, 1]


MALLOC_STATE = """
import ctypes, sys, torch
from tumorbench.models.runtime import configure_runtime
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "cpu runtime":
    configure_runtime(torch.device("cpu"))
start = libc.mallinfo2()
block = libc.malloc(16 << 20)
held = libc.mallinfo2()
assert block
libc.free(block)
freed = libc.mallinfo2()
print((held.hblkhd - start.hblkhd) >> 20, (held.arena - freed.arena) >> 20)
"""


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc 2.33+")
@pytest.mark.slow
def test_cpu_runtime_keeps_freed_memory_for_reuse():
    """A batch-sized block comes from malloc's heap and stays there when freed, for the next batch to
    reuse without page faults; glibc's default maps such a block and unmaps it on free."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}

    def mapped_and_released_mib(mode):
        out = subprocess.run(
            [sys.executable, "-c", MALLOC_STATE, mode], capture_output=True, text=True, check=True, env=env
        )
        return tuple(int(v) for v in out.stdout.split())

    assert mapped_and_released_mib("glibc default") == (16, 0)  # mapped, unmapped on free: the check tells them apart
    assert mapped_and_released_mib("cpu runtime") == (0, 0)  # from the heap, and not trimmed off it when freed
