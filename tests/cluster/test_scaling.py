"""Scaling out through DVC: a shared remote, the run-cache, workers running slices, queued experiments.

Every test runs the real `dvc` on throwaway projects (conftest.make_project with
the TINY params) and a local folder as the remote, as docs/SCALING.md describes.

Found with DVC 3.67: `dvc pull --run-cache` brings only the run-cache entries
(the outputs they name are fetched only for stages in a committed dvc.lock),
so a clone that has no dvc.lock assembles with `dvc repro --pull`, which pulls
each cached stage's outputs on demand.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, dvc, make_project, run

pytestmark = pytest.mark.slow  # end-to-end DVC runs and training: minutes in all

CACHED = "Stage '{}' is cached - skipping run, checking out outputs"
TRAINING_LINE = re.compile(r"best epoch \d+ val loss")  # what stages/train.py prints after training


def stage_names(datasets=("br35h", "figshare"), models=("resnet18",), inits=("scratch",)) -> list[str]:
    names = []
    for stage in ("download", "prepare", "split"):
        names += [f"{stage}@{d}" for d in datasets]
    for stage in ("train", "evaluate"):
        names += [f"{stage}@{d}-{m}-{i}" for d in datasets for m in models for i in inits]
    return names + ["aggregate"]


def results(project: Path) -> dict[str, bytes]:
    """The numbers a run ends with: every metrics/*.json and reports/tables/*.csv, by relative path."""
    files = sorted(project.glob("metrics/*.json")) + sorted(project.glob("reports/tables/*.csv"))
    return {str(p.relative_to(project)): p.read_bytes() for p in files}


def clone(origin: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(dest)], cwd=origin.parent)
    return dest


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    """Project A: the remote configured and committed, the whole TINY pipeline run once and pushed."""
    root = tmp_path_factory.mktemp("scaling")
    remote = root / "remote-a"
    remote.mkdir()
    project = make_project(root / "a", **TINY)
    dvc("remote", "add", "-d", "shared", str(remote), cwd=project)
    run(["git", "commit", "-qam", "remote"], cwd=project)
    repro = dvc("repro", cwd=project)
    push = dvc("push", "--run-cache", cwd=project)
    return {"root": root, "project": project, "remote": remote, "repro": output(repro), "push": output(push)}


def test_clone_assembles_from_run_cache_without_retraining(origin):
    a = origin["project"]
    assert len(TRAINING_LINE.findall(origin["repro"])) == 2  # A trained both variants itself
    assert len(list((origin["remote"] / "runs").rglob("*"))) > 0, origin["push"]

    b = clone(a, origin["root"] / "b")
    assert not (b / "dvc.lock").exists()  # nothing but the git content travels
    repro = output(dvc("repro", "--pull", cwd=b))

    for name in stage_names():  # every stage, download to aggregate, comes from the run-cache
        assert CACHED.format(name) in repro, f"{name} was not restored from the run-cache:\n{repro}"
    assert "Running stage" not in repro
    assert not TRAINING_LINE.search(repro)
    assert results(b) == results(a) and len(results(a)) >= 4
    for checkpoint in (a / "models").glob("*.pt"):
        assert (b / "models" / checkpoint.name).read_bytes() == checkpoint.read_bytes()
    assert "Data and pipelines are up to date" in output(dvc("repro", cwd=b))


def test_pull_run_cache_alone_fetches_no_outputs(origin):
    """Why the docs say `dvc repro --pull`: without a committed dvc.lock, `dvc pull --run-cache`
    brings the run-cache entries but not the outputs, so a plain `dvc repro` would retrain."""
    c = clone(origin["project"], origin["root"] / "c")
    pull = dvc("pull", "--run-cache", cwd=c, check=False)
    assert pull.returncode != 0 and "No file hash info found" in output(pull)
    assert list((c / ".dvc" / "cache" / "runs").rglob("*"))  # the entries did arrive
    dry = output(dvc("repro", "--dry", "download@br35h", cwd=c))
    assert "Running stage 'download@br35h'" in dry and "is cached" not in dry


def test_workers_run_disjoint_slices_and_a_clone_assembles_them(origin):
    """Two workers (two clones: two machines or two GPUs) each run half the variants and push to one
    remote; a third clone pulls and assembles tables equal to a single clone's, training nothing."""
    root, a = origin["root"], origin["project"]
    remote = root / "remote-workers"
    remote.mkdir()
    workers = [clone(a, root / f"worker{k}") for k in (1, 2, 3)]
    for worker in workers:  # another remote than A's, so nothing can come from A's run
        dvc("remote", "modify", "--local", "shared", "url", str(remote), cwd=worker)

    # Worker 1 names one stage, worker 2 a glob; both run at once, as on two machines.
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("DVC_STAGE", None)
    slices = [["dvc", "repro", "evaluate@br35h-resnet18-scratch"], ["dvc", "repro", "--glob", "evaluate@figshare-*"]]
    procs = [
        subprocess.Popen(cmd, cwd=w, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd, w in zip(slices, workers)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
    assert "train@figshare" not in logs[0] and "train@br35h" not in logs[1]  # disjoint slices
    assert len(TRAINING_LINE.findall(logs[0])) == len(TRAINING_LINE.findall(logs[1])) == 1
    for worker in workers[:2]:
        dvc("push", "--run-cache", cwd=worker)

    assembled = output(dvc("repro", "--pull", cwd=workers[2]))
    for name in stage_names()[:-1]:
        assert CACHED.format(name) in assembled, f"{name} was not restored:\n{assembled}"
    assert not TRAINING_LINE.search(assembled)
    assert "Running stage 'aggregate'" in assembled  # the one stage no worker ran
    assert results(workers[2]) == results(a)


def wait_for_queue(project: Path, timeout: float = 240) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = output(dvc("queue", "status", cwd=project))
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(2)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


def test_queued_seed_sweep_runs_and_shows_both_experiments(tmp_path):
    project = make_project(tmp_path / "sweep", **{**TINY, "datasets": ["br35h"], "train__epochs": 1})
    for seed in (1, 2):
        dvc("exp", "run", "--queue", "-S", f"train.seed={seed}", cwd=project)
    dvc("queue", "start", "--jobs", "1", cwd=project)
    try:
        status = wait_for_queue(project)
    finally:
        dvc("queue", "stop", "--kill", cwd=project, check=False)  # no worker outlives the test
    assert status.count("Success") == 2, status
    names = re.findall(r"^\w+\s+(\S+)\s+.*\bSuccess\b", status, flags=re.M)
    logs = [output(dvc("queue", "logs", name, cwd=project)) for name in names]
    assert len(logs) == 2 and all(TRAINING_LINE.search(log) for log in logs)
    # The seed changes training only: the second experiment restores the data stages from the run-cache.
    assert sum(CACHED.format("prepare@br35h") in log for log in logs) == 1, logs

    shown = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            data = experiment["revs"][0]["data"]
            seed = data["params"]["params.yaml"]["data"]["train"]["seed"]
            found[seed] = data["metrics"]["metrics/br35h-resnet18-scratch.json"]["data"]
    assert sorted(found) == [1, 2], shown
    for metrics in found.values():
        assert 0 <= metrics["accuracy"] <= 1 and metrics["num_val"] == 16
    # Different seeds train different weights.
    assert found[1]["provenance"]["checkpoint_md5"] != found[2]["provenance"]["checkpoint_md5"]


def test_grid_shares_are_disjoint_dvc_targets_covering_the_grid(tmp_path):
    project = make_project(
        tmp_path / "grid",
        **{
            **TINY,
            "models": ["resnet18", "efficientnet-b0", "googlenet"],
            "inits": ["scratch", "imagenet"],
            "grouped__models": ["resnet18"],  # one leakage-table variant
            "cv__datasets": ["br35h"],  # and ResNet-18's five folds
        },
    )
    tumorbench = str(Path(sys.executable).parent / "tumorbench")
    shares = [run([tumorbench, "grid", str(k), "5"], cwd=project).stdout.split() for k in range(5)]
    evaluate_stages = [
        s for s in dvc("stage", "list", "--name-only", cwd=project).stdout.split() if s.startswith("evaluate")
    ]
    assert len(evaluate_stages) == 12 + 1 + 5
    assert sorted(sum(shares, [])) == sorted(evaluate_stages)  # disjoint, complete, real stage names
    assert sorted(len(s) for s in shares) == [3, 3, 4, 4, 4]
    empty = run([tumorbench, "grid", "18", "19"], cwd=project, check=False)
    assert empty.returncode == 1 and not empty.stdout  # never an empty target list: that would run everything


def remote_files(remote: Path) -> tuple[list[Path], list[Path]]:
    """(files under their final, content-addressed names; DVC's partial-upload files `.<token>.tmp`)."""
    files = [p for p in (remote / "files" / "md5").rglob("*") if p.is_file()] if remote.exists() else []
    return [p for p in files if not p.name.endswith(".tmp")], [p for p in files if p.name.endswith(".tmp")]


def test_a_killed_push_leaves_only_whole_files_on_the_remote_and_the_next_push_completes(tmp_path):
    """What a task killed during `dvc push --run-cache` (node down, time limit) leaves behind: every file
    under its final name on the remote is whole (its md5 is its name), the folder's listing (.dir) is not
    there before all its files, `dvc status -c` says what is missing, and the next push sends only that."""
    project = tmp_path / "project"
    project.mkdir()
    run(["git", "init", "-q"], cwd=project)
    dvc("init", "-q", cwd=project)
    remote = tmp_path / "remote"
    dvc("remote", "add", "-d", "shared", str(remote), cwd=project)
    scans = project / "scans"
    scans.mkdir()
    for k in range(300):  # 300 files of 512 KiB: a push of a few seconds, killed in its first half
        (scans / f"{k:03}.bin").write_bytes(os.urandom(512 * 1024))
    dvc("add", "scans", cwd=project)

    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    push = subprocess.Popen(
        [str(Path(sys.executable).parent / "dvc"), "push", "-j", "2"], cwd=project, env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while len(remote_files(remote)[0]) < 20 and push.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    push.kill()
    push.wait()
    whole, partial = remote_files(remote)
    assert 20 <= len(whole) < 301, f"the push was not killed part-way: {len(whole)} files on the remote"
    for path in whole:
        assert hashlib.md5(path.read_bytes()).hexdigest() == path.parent.name + path.name.removesuffix(".dir"), path
    assert not [p for p in whole if p.name.endswith(".dir")]  # the listing is pushed after its files
    status = output(dvc("status", "-c", cwd=project, check=False))
    assert "new:" in status and "scans" in status and "in sync" not in status, status

    dvc("push", cwd=project)
    whole, _ = remote_files(remote)
    assert len(whole) == 301  # 300 files and the listing
    assert all(hashlib.md5(p.read_bytes()).hexdigest() == p.parent.name + p.name.removesuffix(".dir") for p in whole)
    assert "in sync" in output(dvc("status", "-c", cwd=project)), partial
