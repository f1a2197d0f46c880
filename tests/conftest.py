"""Shared fixtures: the real data beside the project, and throwaway DVC projects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "src", "profiles", ".dvc/config", ".dvc/plots", ".gitignore"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def untrained_checkpoint(normalize: dict | None = None) -> dict:
    """A checkpoint as the train stage writes one, of a ResNet-18 at 32 px that never trained (scores are not
    the point); normalize defaults to none (mean 0, std 1)."""
    import torch

    from tumorbench.models.architectures import build_model

    torch.manual_seed(0)
    model, _ = build_model("resnet18", 2, "scratch", 32)
    return {
        "model": model.state_dict(),
        "model_name": "resnet18",
        "init": "scratch",
        "class_names": ["no", "yes"],
        "image_size": 32,
        "epoch": 0,
        "normalize": normalize or {"mean": [0.0] * 3, "std": [1.0] * 3},
    }


def run(cmd: list[str], cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command with this interpreter's environment first on PATH (so DVC finds `python`)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("DVC_STAGE", None)
    env.update(kwargs.pop("env", {}))
    result = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(*args: str, cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).parent / "dvc"), *args], cwd=cwd, check=check, **kwargs)


def set_params(project: Path, **values) -> None:
    """Update params.yaml; keys are dotted paths written with "__" (train__epochs=2)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    for key, value in values.items():
        node = params
        *parents, last = key.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(dest: Path, **overrides) -> Path:
    """A fresh git + DVC project with this repo's pipeline, params updated by dotted `overrides`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)
    set_params(dest, **overrides)
    run(["git", "init", "-q"], cwd=dest)
    run(["git", "config", "user.email", "test@example.com"], cwd=dest)
    run(["git", "config", "user.name", "test"], cwd=dest)
    run(["git", "add", "-A"], cwd=dest)
    run(["git", "commit", "-qm", "init"], cwd=dest)
    return dest


TINY = dict(
    models=["resnet18"],
    data__image_size=32,
    data__synthetic__br35h_per_class=20,
    data__synthetic__figshare_per_class=[8, 10, 8],
    data__synthetic__figshare_patients=8,
    data__synthetic__figshare_size=64,
    train__epochs=2,
    grouped__group_by="duplicates",  # 8 patients: one can hold more slices than a class's validation share
    grouped__models=[],  # the validity stages run, but train nothing more; test_pipeline turns them on
    external={},
)
