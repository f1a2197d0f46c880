"""Fault injection: the pipeline killed, fed damaged files, run twice at once, given bad params.

Each test is named after its scenario; docs/RELIABILITY.md lists them with what
the pipeline does and what data could be lost (none). Kills are SIGKILL to the
whole process group of a real `dvc repro` (DVC, the stage's python and any
worker processes), then a plain `dvc repro` is run again: DVC finds the dead
process in .dvc/tmp/rwlock, prints "... had been killed. Auto removed it from
the lock file." and carries on, so a user has nothing to clean up.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, dvc, make_project, run, set_params

from tumorbench.core.fileio import md5_file
from tumorbench.core.params import load_params
from tumorbench.data.prepare import prepare
from tumorbench.models.training import TrainConfig, fit

pytestmark = pytest.mark.slow  # end-to-end DVC runs and training: minutes in all

VARIANT = "br35h-resnet18-scratch"
EPOCHS = 3
# One dataset, one model; 24 training images in batches of 8: three steps an epoch, so a kill can land mid-epoch.
FAULT = {**TINY, "datasets": ["br35h"], "train__epochs": EPOCHS, "train__batch_size": 8}
KILLED_LOCK_WARNING = "had been killed. Auto removed it from the lock file."
LOCK_MESSAGES = ("is busy, it is being blocked by", "Unable to acquire lock")
STATE = Path(".cache/resume") / VARIANT / "state.pt"


# ------------------------------------------------------------------ helpers


def tool_env() -> dict:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("DVC_STAGE", None)
    return env


class Background:
    """`dvc repro` in its own session (so one killpg reaches every process it started), output collected live."""

    def __init__(self, project: Path, *args: str):
        self.proc = subprocess.Popen(
            ["dvc", "repro", *args],
            cwd=project,
            env=tool_env(),
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            self.chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def wait_for(self, condition, what: str, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"dvc repro ended (rc {self.proc.returncode}) before {what}:\n{self.text}")
            if time.time() > deadline:
                self.kill()
                raise AssertionError(f"no {what} after {timeout} s:\n{self.text}")
            time.sleep(0.005)

    def kill(self) -> None:
        assert self.proc.poll() is None, f"dvc repro had already ended:\n{self.text}"
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.finish()
        assert self.proc.returncode == -signal.SIGKILL

    def finish(self, timeout: float = 300) -> str:
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return self.text


def copy_project(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


def results(project: Path) -> dict[str, bytes]:
    files = (
        sorted(project.glob("metrics/*.json"))
        + sorted(project.glob("reports/tables/*.csv"))
        + sorted(project.glob("models/*.pt"))
    )
    return {str(p.relative_to(project)): p.read_bytes() for p in files}


def rerun(project: Path) -> str:
    result = dvc("repro", cwd=project)
    return result.stdout + result.stderr


def assert_recovered(project: Path, reference: dict) -> None:
    assert results(project) == reference["results"]
    assert md5_file(project / "models" / f"{VARIANT}.pt") == reference["checkpoint_md5"]
    assert "Data and pipelines are up to date" in rerun(project)
    assert not (project / ".cache" / "resume" / VARIANT).exists()  # the resume state is cleaned up


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """A workspace whose data stages ran (download, prepare, split): each kill test copies it."""
    project = make_project(tmp_path_factory.mktemp("faults") / "upstream", **FAULT)
    dvc("repro", "split@br35h", cwd=project)
    return project


@pytest.fixture(scope="module")
def reference(upstream, tmp_path_factory) -> dict:
    """The same workspace run to the end without interruption."""
    project = copy_project(upstream, tmp_path_factory.mktemp("faults") / "reference")
    dvc("repro", cwd=project)
    return {
        "project": project,
        "results": results(project),
        "checkpoint_md5": md5_file(project / "models" / f"{VARIANT}.pt"),
    }


@pytest.fixture(scope="module")
def br35h_images(shared_data, tmp_path_factory) -> Path:
    """A Br35H-layout folder of 300 real images per class (enough for prepare's worker pool)."""
    return copy_real_br35h(shared_data, tmp_path_factory.mktemp("br35h-real") / "br35h", per_class=300)


def copy_real_br35h(shared_data: Path, dest: Path, per_class: int) -> Path:
    for folder in ("yes", "no"):
        (dest / folder).mkdir(parents=True)
        for name in sorted(os.listdir(shared_data / "br35h" / folder))[:per_class]:
            shutil.copy(shared_data / "br35h" / folder / name, dest / folder / name)
    return dest


def path_source(folder: Path, **more) -> dict:
    return {**FAULT, "data__br35h__source": "path", "data__br35h__path": str(folder), **more}


# ------------------------------------------------------------------ killed


def test_killed_during_prepare_reruns_to_identical_outputs(br35h_images, tmp_path):
    project = make_project(tmp_path / "project", **path_source(br35h_images))
    dvc("repro", "download@br35h", cwd=project)
    repro = Background(project, "prepare@br35h")
    decoded = re.compile(r"prepare br35h:\s+\d+%\|[^|\r\n]*\|\s*([1-9]\d*)/600")
    repro.wait_for(lambda: any(int(n) < 600 for n in decoded.findall(repro.text)), "some files decoded, not all")
    repro.kill()
    prepared = project / "data" / "prepared" / "br35h"
    assert not (prepared / "report.json").exists()  # killed before prepare finished

    result = dvc("repro", "prepare@br35h", cwd=project)
    log = result.stdout + result.stderr
    assert KILLED_LOCK_WARNING in log and "prepare@br35h: 600 samples" in log
    assert sorted(p.name for p in prepared.iterdir()) == [
        "images.npy",
        "index.csv",
        "masks.npz",
        "report.json",
    ]  # no temporary files left
    expected = tmp_path / "uninterrupted"
    prepare(project / "data" / "raw" / "br35h", expected, image_size=32, max_unreadable=0.01, dataset_name="br35h")
    for name in ("images.npy", "index.csv", "masks.npz", "report.json"):
        assert (prepared / name).read_bytes() == (expected / name).read_bytes()


def slow_optimizer_steps(project: Path, seconds: float) -> None:
    """Make each Adam step of this copy's training stage sleep first: the numbers stay the same, but an epoch
    of three steps lasts long enough for the test to see a step of it and kill mid-epoch (fused Adam made the
    tiny epoch take 0.15 s, less than the output takes to reach the test)."""
    script = project / "stages" / "train.py"
    patch = (
        "import torch\n"
        "_adam_step = torch.optim.Adam.step\n"
        f"torch.optim.Adam.step = lambda *a, **k: (time.sleep({seconds}), _adam_step(*a, **k))[1]\n"
    )
    text = script.read_text()
    assert text.count("import torch\n") == 1
    script.write_text(text.replace("import torch\n", patch))


def killed_training_resumes(upstream, reference, tmp_path, mid_epoch: bool) -> None:
    project = copy_project(upstream, tmp_path / "project")
    slow_optimizer_steps(project, seconds=0.5)
    repro = Background(project)
    repro.wait_for((project / STATE).exists, "resume state after the first epoch")
    if mid_epoch:  # wait for a progress line of the next epoch's steps: 0 < step < steps
        offset = len(repro.text)
        step = re.compile(r"train:\s+\d+%\|[^|\r\n]*\|\s*([1-9]\d*)/(\d+)")
        repro.wait_for(
            lambda: any(int(n) < int(total) for n, total in step.findall(repro.text[offset:])),
            "a training step inside the second epoch",
        )
    repro.kill()
    epoch = torch.load(project / STATE, weights_only=True)["epoch"]
    assert epoch == 1 if mid_epoch else 1 <= epoch < EPOCHS  # mid-epoch: killed one step into epoch 2
    assert not (project / "models" / f"{VARIANT}.pt").exists()

    log = rerun(project)
    assert KILLED_LOCK_WARNING in log
    assert f"resume: continuing from epoch {epoch} of {EPOCHS}" in log
    assert_recovered(project, reference)


def test_killed_at_epoch_boundary_resumes_to_identical_checkpoint(upstream, reference, tmp_path):
    killed_training_resumes(upstream, reference, tmp_path, mid_epoch=False)


def test_killed_mid_epoch_resumes_to_identical_checkpoint(upstream, reference, tmp_path):
    killed_training_resumes(upstream, reference, tmp_path, mid_epoch=True)


CV_VARIANT = "br35h-resnet18-scratch-cv1"
CV_TARGET = "train_cv@br35h-resnet18-scratch-1"  # fold 1 of 2: 20 training images, three steps an epoch


@pytest.fixture(scope="module")
def cv_upstream(tmp_path_factory) -> Path:
    project = make_project(
        tmp_path_factory.mktemp("faults") / "cv-upstream", **FAULT, cv__datasets=["br35h"], cv__folds=[1, 2]
    )
    dvc("repro", "split_cv@br35h", cwd=project)
    return project


def test_killed_fold_training_resumes_to_identical_checkpoint(cv_upstream, tmp_path):
    reference = copy_project(cv_upstream, tmp_path / "reference")
    dvc("repro", CV_TARGET, cwd=reference)
    project = copy_project(cv_upstream, tmp_path / "project")
    slow_optimizer_steps(project, seconds=0.5)
    state = project / ".cache" / "resume" / CV_VARIANT / "state.pt"
    repro = Background(project, CV_TARGET)
    repro.wait_for(state.exists, "the fold's resume state after its first epoch")
    repro.kill()
    epoch = torch.load(state, weights_only=True)["epoch"]
    assert 1 <= epoch < EPOCHS and not (project / "models" / f"{CV_VARIANT}.pt").exists()

    result = dvc("repro", CV_TARGET, cwd=project)
    assert f"resume: continuing from epoch {epoch} of {EPOCHS}" in result.stdout + result.stderr
    checkpoint = f"models/{CV_VARIANT}.pt"
    assert md5_file(project / checkpoint) == md5_file(reference / checkpoint)
    assert not state.parent.exists()


def touch_evaluate_code(project: Path) -> None:
    """A harmless edit to evaluate's code: evaluate@ must rerun, train@ stays done."""
    with open(project / "stages" / "evaluate.py", "a") as f:
        f.write("# edited\n")


def test_killed_during_evaluate_reruns_to_identical_metrics(reference, tmp_path):
    project = copy_project(reference["project"], tmp_path / "project")
    touch_evaluate_code(project)
    repro = Background(project)
    repro.wait_for(lambda: "> python stages/evaluate.py" in repro.text, "the evaluate stage")
    time.sleep(1.0)  # into evaluate.py (importing torch, predicting)
    repro.kill()
    assert not (project / "metrics" / f"{VARIANT}.json").exists()

    log = rerun(project)
    assert f"Running stage 'evaluate@{VARIANT}'" in log
    assert "Running stage 'train@" not in log and "is cached" not in log
    assert_recovered(project, reference)


def test_corrupted_resume_state_is_ignored_and_training_starts_over(tmp_path, capsys):
    """A resume state is written atomically, so a kill cannot tear it; a disk can. An unreadable one
    costs the epochs it held, never a wrong result."""
    cfg = replace(
        TrainConfig.from_params(load_params(Path(__file__).resolve().parents[1] / "params.yaml"), "scratch"),
        epochs=2,
        batch_size=8,
        device="cpu",
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(24, 3, 8, 8), dtype=np.uint8)
    labels = np.arange(24) % 2

    def train(name: str) -> str:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
        fit(
            model,
            images,
            labels,
            images,
            labels,
            cfg,
            checkpoint_path=tmp_path / name,
            live_dir=None,
            fingerprint="f",
            checkpoint_meta={},
            resume_dir=tmp_path / "resume",
            progress=False,
        )
        return md5_file(tmp_path / name)

    uninterrupted = train("a.pt")
    (tmp_path / "resume").mkdir()
    (tmp_path / "resume" / "state.pt").write_bytes(b"PK\x03\x04 torn")
    assert train("b.pt") == uninterrupted
    assert "resume: ignoring unreadable" in capsys.readouterr().out


# ------------------------------------------------------------------ damaged checkpoints


def stage_script(project: Path, command: str) -> subprocess.CompletedProcess:
    """`python stages/<command>` run by hand in the project, e.g. command "evaluate.py br35h resnet18 scratch"."""
    return run([sys.executable, f"stages/{command.split()[0]}", *command.split()[1:]], cwd=project, check=False)


def evaluate_script(project: Path) -> subprocess.CompletedProcess:
    return stage_script(project, "evaluate.py br35h resnet18 scratch")


def test_truncated_checkpoint_fails_evaluate_naming_file_and_fix(reference, tmp_path):
    project = copy_project(reference["project"], tmp_path / "project")
    checkpoint = project / "models" / f"{VARIANT}.pt"
    metrics = project / "metrics" / f"{VARIANT}.json"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    metrics.unlink()

    result = evaluate_script(project)
    assert result.returncode != 0
    assert f"models/{VARIANT}.pt is truncated or corrupted" in result.stderr
    assert "Traceback" not in result.stderr
    assert not metrics.exists()

    # The advice works as printed, in a non-interactive shell: the checkout restores the cached
    # checkpoint over the damaged one, and the retrain command retrains this variant only.
    advice = {kind: command for command, kind in re.findall(r"`(dvc (checkout|repro)[^`]*)`", result.stderr)}
    assert set(advice) == {"checkout", "repro"}, result.stderr
    dry = dvc(*shlex.split(advice["repro"])[1:], "--dry", cwd=project)
    assert f"Running stage 'train@{VARIANT}'" in dry.stdout and "Running stage 'download@" not in dry.stdout
    dvc(*shlex.split(advice["checkout"])[1:], cwd=project)
    evaluate_script(project).check_returncode()
    assert results(project) == reference["results"]


class Payload:
    """Unpickling this runs a shell command (here: one that creates a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_checkpoint_with_pickle_payload_is_refused(reference, tmp_path):
    project = copy_project(reference["project"], tmp_path / "project")
    checkpoint = project / "models" / f"{VARIANT}.pt"
    metrics = project / "metrics" / f"{VARIANT}.json"
    marker = tmp_path / "payload-ran"
    good = torch.load(checkpoint, weights_only=True)
    torch.save({**good, "extra": Payload(marker)}, checkpoint)
    torch.load(checkpoint, weights_only=False)  # the payload is live: full unpickling runs it
    assert marker.exists()
    marker.unlink()
    metrics.unlink()

    result = evaluate_script(project)
    assert result.returncode != 0
    assert f"models/{VARIANT}.pt was refused by weights_only loading" in result.stderr
    assert "could run code" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
    assert not metrics.exists()


# ------------------------------------------------------------------ damaged inputs


def add_bad_files(folder: Path) -> dict[str, str]:
    """A truncated JPEG, an empty file and a text file named .jpg; returns path -> expected reason."""
    real = next((folder / "yes").iterdir()).read_bytes()
    (folder / "yes" / "y_truncated.jpg").write_bytes(real[: len(real) // 3])
    (folder / "no" / "no_empty.jpg").write_bytes(b"")
    (folder / "yes" / "y_notes.jpg").write_text("scanner notes, not an image\n")
    return {
        "yes/y_truncated.jpg": "cannot decode",
        "no/no_empty.jpg": "empty file",
        "yes/y_notes.jpg": "not an image file",
    }


def test_unreadable_inputs_are_reported_and_excluded_then_fail_over_threshold(shared_data, tmp_path):
    folder = copy_real_br35h(shared_data, tmp_path / "br35h", per_class=20)
    bad = add_bad_files(folder)  # 3 of 43 files: 7%
    project = make_project(tmp_path / "project", **path_source(folder, data__max_unreadable=0.1))
    result = dvc("repro", "prepare@br35h", cwd=project)
    log = result.stdout + result.stderr
    assert "prepare@br35h: 40 samples (no 20, yes 20)" in log and "3 unreadable" in log

    prepared = project / "data" / "prepared" / "br35h"
    report = json.loads((prepared / "report.json").read_text())
    reasons = {u["path"]: u["reason"] for u in report["unreadable"]}
    assert sorted(reasons) == sorted(bad)
    for path, reason in bad.items():
        assert reasons[path].startswith(reason), reasons[path]
    index = (prepared / "index.csv").read_text()
    assert not any(path in index for path in bad)

    set_params(project, data__max_unreadable=0.05)
    failed = dvc("repro", "prepare@br35h", cwd=project, check=False)
    message = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "3 of 43 files are unreadable" in message and "data.max_unreadable = 0.05" in message
    for path in bad:
        assert path in message
    # Nothing lost: the last good outputs are still in the cache for `dvc checkout`.
    set_params(project, data__max_unreadable=0.1)
    dvc("checkout", "--force", "prepare@br35h", cwd=project)
    assert json.loads((prepared / "report.json").read_text()) == report


# ------------------------------------------------------------------ concurrency


def test_two_repro_at_once_one_refused_nothing_corrupted(reference, tmp_path):
    project = copy_project(reference["project"], tmp_path / "project")
    touch_evaluate_code(project)  # evaluate@ has to run again
    first, second = Background(project), Background(project)
    logs = [first.finish(), second.finish()]
    codes = sorted([first.proc.returncode, second.proc.returncode])
    assert codes[0] == 0 and codes[1] != 0, logs
    refused = logs[[first.proc.returncode, second.proc.returncode].index(codes[1])]
    assert any(m in refused for m in LOCK_MESSAGES), refused
    assert_recovered(project, reference)


# ------------------------------------------------------------------ invalid params


@pytest.mark.parametrize(
    "override, key",
    [
        ({"models": ["resnet19"]}, "models"),
        ({"train__epochs": -1}, "train.epochs"),
        ({"train__batch_size": 0}, "train.batch_size"),
    ],
)
def test_invalid_params_fail_before_any_work_naming_the_key(tmp_path, override, key):
    project = make_project(tmp_path / "project", **{**FAULT, **override})
    result = dvc("repro", cwd=project, check=False)
    message = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"params.yaml: {key} = " in message and "is invalid; allowed:" in message
    assert "Traceback" not in message
    assert not (project / "data").exists() and not (project / "dvc.lock").exists()


def test_a_stage_failing_after_dvc_removed_its_outputs_loses_nothing(reference, tmp_path):
    # A param edited after a full run: DVC deletes the train stage's outputs, then the stage fails.
    project = copy_project(reference["project"], tmp_path / "project")
    set_params(project, train__precision="fp16")
    result = dvc("repro", cwd=project, check=False)
    assert result.returncode != 0
    assert f"train@{VARIANT}: params.yaml: train.precision = 'fp16' is invalid" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (project / "models" / f"{VARIANT}.pt").exists()
    # The last good outputs come back from the DVC cache, as docs/RELIABILITY.md says.
    run(["git", "checkout", "params.yaml"], cwd=project)
    dvc("checkout", cwd=project)
    assert_recovered(project, reference)


def assert_one_line_error(result: subprocess.CompletedProcess, start: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(start), result.stderr


def test_every_stage_reports_a_user_error_in_one_line_naming_the_stage(tmp_path):
    # A param changed after the data stages ran reaches the later stages first: each must print
    # the message on one line under its dvc.yaml name, not a traceback that buries it.
    project = make_project(tmp_path / "project", **{**FAULT, "train__precision": "fp16"})
    for command, name in [
        ("download.py br35h", "download@br35h"),
        ("prepare.py br35h", "prepare@br35h"),
        ("split.py br35h", "split@br35h"),
        ("train.py br35h resnet18 scratch", "train@br35h-resnet18-scratch"),
        ("evaluate.py br35h resnet18 scratch", "evaluate@br35h-resnet18-scratch"),
        ("aggregate.py", "aggregate"),
    ]:
        assert_one_line_error(
            stage_script(project, command), f"{name}: params.yaml: train.precision = 'fp16' is invalid; allowed:"
        )
    # Inputs an earlier stage should have written, run by hand out of order.
    set_params(project, train__precision="auto")
    assert_one_line_error(
        stage_script(project, "train.py br35h resnet18 scratch"),
        "train@br35h-resnet18-scratch: data/prepared/br35h/images.npy is missing: run `dvc repro split@br35h` first",
    )
    usage = stage_script(project, "train.py br35h resnet18")
    assert (
        usage.returncode == 1
        and usage.stderr.strip() == "usage: python stages/train.py <dataset> <model> <init> [grouped|cv<fold>]"
    )
