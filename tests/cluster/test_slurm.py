"""`tumorbench slurm`: the grid as a Slurm job array over DVC's remote and run-cache (docs/SCALING.md).

The first tests check what `submit` refuses and what it would submit, with no cluster. The tests marked
`slurm` start a real single-node Slurm cluster (tests/slurm_cluster.py: munged, slurmctld and slurmd as
processes) and run the TINY grid on it, one task at a time. Every workspace here has a bare git repository
as its git remote and a folder as its DVC remote: what a cluster with a shared filesystem looks like.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, dvc, make_project, run
from slurm_cluster import slurm_cluster, unavailable

from tumorbench.cli import main
from tumorbench.cluster.grid import variant_targets
from tumorbench.cluster.runcache import layout
from tumorbench.cluster.slurm import variant_name
from tumorbench.core.params import load_params

TRAINING_LINE = re.compile(r"(\S+): best epoch \d+ val loss")  # what stages/train.py prints after training
CACHED = "Stage '{}' is cached - skipping run, checking out outputs"
# Three epochs of three steps: a task can be stopped after an epoch with two more to go.
EMBEDDED = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
SLURM_PARAMS = {**TINY, "train__epochs": 3, "train__batch_size": 8}
# Figshare first: task 1, the one cancelled, trains Br35H, whose models the embedded external test set tests.
SLURM_GRID = {**SLURM_PARAMS, "datasets": ["figshare", "br35h"], "external": EMBEDDED["external"]}
MIN_JOB_AGE = 10  # seconds Slurm keeps a finished job: status must then read the DVC remote


def workspace_with_remotes(root: Path, **params) -> Path:
    """A project pushed to a bare git repository (origin, the branch's upstream), with a DVC remote folder
    committed as its default."""
    project = make_project(root / "workspace", **params)
    run(["git", "init", "-q", "--bare", str(root / "origin.git")], cwd=root)
    dvc("remote", "add", "-d", "shared", str(root / "dvc-remote"), cwd=project)
    run(["git", "commit", "-qam", "DVC remote"], cwd=project)
    run(["git", "remote", "add", "origin", str(root / "origin.git")], cwd=project)
    run(["git", "push", "-q", "-u", "origin", "HEAD"], cwd=project)
    return project


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    return workspace_with_remotes(
        tmp_path_factory.mktemp("slurm-origin"),
        **{**TINY, "models": ["resnet18", "efficientnet-b0"], "grouped__models": ["resnet18"]},
    )


@pytest.fixture
def project(origin, tmp_path, monkeypatch) -> Path:
    """A fresh clone of the origin workspace (same git remote and DVC remote), the current directory."""
    clone = tmp_path / "workspace"
    run(["git", "clone", "-q", str(origin.parent / "origin.git"), str(clone)], cwd=tmp_path)
    for key, value in (("user.email", "test@example.com"), ("user.name", "test")):
        run(["git", "config", key, value], cwd=clone)
    monkeypatch.chdir(clone)
    return clone


def tumorbench(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def without_slurm(tmp_path: Path, monkeypatch) -> None:
    """PATH with git and this environment's tools, but no Slurm command."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}")


# ------------------------------------------------------------------ what submit refuses and prints


def test_dry_run_prints_both_scripts_and_needs_no_slurm(project, capsys, tmp_path, monkeypatch):
    without_slurm(tmp_path, monkeypatch)
    code, out, err = tumorbench(
        capsys, "slurm", "submit", "--glob", "evaluate@figshare-*", "--tasks", "1", "--max-running", "1", "--dry-run"
    )
    assert code == 0, err
    task, aggregate = out.split("# aggregate.sh")
    commit = run(["git", "rev-parse", "HEAD"], cwd=project).stdout.strip()
    assert "#SBATCH --array=0-0%1" in task and f"commit={commit}" in task
    variants = ["figshare-resnet18-scratch", "figshare-efficientnet-b0-scratch"]
    stages = " ".join(f"evaluate@{v} explain@{v}" for v in variants)  # explain: Grad-CAM, also the variant's own
    assert f'"{stages}"  # task 0' in task
    assert "br35h" not in task.split("targets=(")[1].split(")")[0]
    for line in ("dvc repro --pull ${targets[$SLURM_ARRAY_TASK_ID]}", "dvc push --run-cache", "TUMORBENCH_RESUME="):
        assert line in task
    assert f"export PATH={Path(sys.executable).parent}:" in task  # this Python environment
    assert "#SBATCH --dependency=afterok:<job>" in aggregate and "#SBATCH --kill-on-invalid-dep=yes" in aggregate
    assert "dvc repro --pull --single-item aggregate" in aggregate  # TINY has no external test set
    assert not (project / ".slurm").exists()

    code, out, err = tumorbench(capsys, "slurm", "submit", "--allow-failed", "--dry-run")
    assert code == 0, err
    task, aggregate = out.split("# aggregate.sh")
    assert "#SBATCH --array=0-4\n" in task  # four variants of the grid and one of the leakage table, one each
    assert '"evaluate_grouped@br35h-resnet18-scratch"  # task 4' in task
    assert "#SBATCH --dependency=afterany:<job>" in aggregate and "kill-on-invalid-dep" not in aggregate


def test_sbatch_options_come_from_flags_over_slurm_yaml(project, capsys):
    options = {"partition": "gpu", "gpus": 1, "time": "2:00:00", "sbatch": ["--qos=high"], "setup": "module load tb"}
    (project / "slurm.yaml").write_text(yaml.safe_dump(options))  # untracked: the workspace is still clean
    code, out, err = tumorbench(capsys, "slurm", "submit", "--partition", "debug", "--mem", "8G", "--dry-run")
    assert code == 0, err
    task, aggregate = out.split("# aggregate.sh")
    for script in (task, aggregate):
        assert "#SBATCH --partition=debug" in script and "--partition=gpu" not in script
        assert "#SBATCH --time=2:00:00" in script and "#SBATCH --mem=8G" in script
        assert "#SBATCH --qos=high" in script and "\nset +u\nmodule load tb\nset -u\n" in script
        assert "export PATH=" not in script
    assert "#SBATCH --gres=gpu:1" in task and "--gres" not in aggregate  # the aggregate trains nothing

    (project / "slurm.yaml").write_text("partition: gpu\ngpu: 1\n")
    code, _, err = tumorbench(capsys, "slurm", "submit", "--dry-run")
    assert code == 1 and "slurm.yaml: unknown keys ['gpu']" in err and "gpus" in err


def test_no_sbatch_is_an_error_and_nothing_is_submitted(project, capsys, tmp_path, monkeypatch):
    without_slurm(tmp_path, monkeypatch)
    code, out, err = tumorbench(capsys, "slurm", "submit")
    assert code == 1 and not out
    assert "tumorbench slurm submit: sbatch not found on PATH" in err and "nothing was submitted" in err
    assert not (project / ".slurm").exists()


def test_unknown_glob_lists_the_grid(project, capsys):
    code, _, err = tumorbench(capsys, "slurm", "submit", "--glob", "evaluate@kaggle-*", "--dry-run")
    assert code == 1 and "'evaluate@kaggle-*' matches no variant" in err
    assert "evaluate@br35h-resnet18-scratch" in err and "evaluate_grouped@br35h-resnet18-scratch" in err


def test_refuses_changed_tracked_files_but_not_untracked_ones(project, capsys):
    (project / "dvc.lock").write_text("schema: '2.0'\n")  # untracked, as after a local run
    assert tumorbench(capsys, "slurm", "submit", "--dry-run")[0] == 0
    with open(project / "params.yaml", "a") as f:
        f.write("\n")
    code, _, err = tumorbench(capsys, "slurm", "submit", "--dry-run")
    assert code == 1 and "tracked files differ from commit" in err and "M params.yaml" in err and "git stash" in err


def test_refuses_a_commit_the_tasks_cannot_clone(project, capsys):
    run(["git", "commit", "-q", "--allow-empty", "-m", "not pushed"], cwd=project)
    code, _, err = tumorbench(capsys, "slurm", "submit", "--dry-run")
    assert code == 1 and "is not on git remote 'origin'" in err and "git push origin HEAD" in err

    run(["git", "remote", "set-url", "origin", str(project.parent / "gone.git")], cwd=project)
    code, _, err = tumorbench(capsys, "slurm", "submit", "--dry-run")
    assert code == 1 and "gone.git, which does not exist" in err


def test_refuses_a_workspace_without_a_dvc_remote(project, capsys):
    dvc("remote", "remove", "shared", cwd=project)
    run(["git", "commit", "-qam", "no DVC remote"], cwd=project)
    run(["git", "push", "-q"], cwd=project)
    code, _, err = tumorbench(capsys, "slurm", "submit", "--dry-run")
    assert code == 1 and "no default DVC remote" in err and "dvc remote add -d" in err


def test_unknown_job_is_an_error(project, capsys):
    for action in ("status", "resubmit"):
        code, _, err = tumorbench(capsys, "slurm", action, "4242")
        assert code == 1 and "unknown job 4242: no .slurm/jobs/4242/job.json" in err


def test_the_pipeline_splits_at_training_into_data_variant_and_final_stages(tmp_path):
    """From DVC's graph of the committed dvc.yaml and params.yaml: what a task runs per variant, what the
    aggregate restores, and what it runs alone when variants are missing."""
    project = make_project(tmp_path / "embedded")
    grid = list(variant_targets(load_params(project / "params.yaml")))
    pipeline = layout(project, grid)
    assert pipeline.variants["evaluate@br35h-resnet18-scratch"] == [
        "evaluate@br35h-resnet18-scratch",
        "explain@br35h-resnet18-scratch",
    ]
    assert pipeline.variants["evaluate_grouped@br35h-resnet18-scratch"] == ["evaluate_grouped@br35h-resnet18-scratch"]
    assert pipeline.final == ["external@generated", "aggregate"]  # after several variants' training, in order
    assert {"download@br35h", "prepare@figshare", "duplicates@br35h", "split_grouped@figshare"} <= set(pipeline.data)
    assert not [stage for stage in pipeline.data if stage.startswith(("train", "evaluate", "explain"))]


def test_cross_validation_folds_are_variants_of_the_grid(tmp_path):
    project = make_project(tmp_path / "cv", cv__datasets=["br35h"], cv__folds=[1, 2])
    grid = variant_targets(load_params(project / "params.yaml"))
    folds = [target for target in grid if target.startswith("evaluate_cv@")]
    assert folds == ["evaluate_cv@br35h-resnet18-scratch-1", "evaluate_cv@br35h-resnet18-scratch-2"]
    assert [variant_name(target) for target in folds] == ["br35h-resnet18-scratch-cv1", "br35h-resnet18-scratch-cv2"]
    assert [grid[target].name for target in folds] == ["br35h-resnet18-scratch-cv1", "br35h-resnet18-scratch-cv2"]
    assert variant_name("evaluate_grouped@br35h-resnet18-scratch") == "br35h-resnet18-scratch-grouped"
    pipeline = layout(project, list(grid))
    assert pipeline.variants[folds[0]] == [folds[0]]
    assert "split_cv@br35h" in pipeline.data


# ------------------------------------------------------------------ on a real Slurm cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with slurm_cluster(tmp_path_factory.mktemp("cluster"), min_job_age=MIN_JOB_AGE) as started:
        yield started


class User:
    """Commands as a user types them in the workspace: `tumorbench`, `dvc`, `squeue`, with the cluster's
    SLURM_CONF, and a node-local scratch folder as TMPDIR (jobs get the submitter's environment)."""

    def __init__(self, cluster: dict, project: Path, scratch: Path):
        scratch.mkdir(exist_ok=True)
        self.env = {**cluster["env"], "TMPDIR": str(scratch)}
        self.project = project

    def __call__(self, *args: str, check: bool = True) -> str:
        tool = args[0] if args[0] in ("dvc", "tumorbench") else None
        command = [str(Path(sys.executable).parent / tool), *args[1:]] if tool else list(args)
        result = run(command, cwd=self.project, env=self.env, check=check)
        return result.stdout + result.stderr

    def states(self, job: str) -> dict[str, str]:
        out = self(
            "squeue", "--jobs", job, "--states", "all", "--noheader", "--array", "--format", "%i %T", check=False
        )
        return dict(line.split() for line in out.splitlines() if re.match(r"\d", line))

    def wait(self, *jobs: str, timeout: float = 300) -> None:
        """Until no task of `jobs` is pending or running."""
        deadline = time.monotonic() + timeout
        while any(s in ("PENDING", "RUNNING", "COMPLETING") for job in jobs for s in self.states(job).values()):
            assert time.monotonic() < deadline, f"jobs {jobs} not done after {timeout} s: {self.states(jobs[0])}"
            time.sleep(1)


def submitted(out: str) -> tuple[str, str]:
    array_job, aggregate_job = re.search(r"job (\d+): .* aggregate job (\d+)", out).groups()
    return array_job, aggregate_job


def training_process(array_job: str, task: int) -> int | None:
    """The pid of stages/train.py run by that array task (found by the SLURM_ARRAY_* it inherits)."""
    needles = {f"SLURM_ARRAY_JOB_ID={array_job}".encode(), f"SLURM_ARRAY_TASK_ID={task}".encode()}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"stages/train.py" in cmdline and needles <= set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")):
                return int(pid)
        except OSError:
            continue
    return None


def wait_until(condition, what: str, timeout: float = 240, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(poll)
    return value


def results(project: Path) -> dict[str, bytes]:
    """What a run ends with: metrics, tables, summary and checkpoints, by relative path."""
    patterns = (
        "metrics/*.json",
        "metrics/explain/*.json",
        "reports/tables/*.csv",
        "reports/summary.json",
        "models/*.pt",
    )
    return {str(p.relative_to(project)): p.read_bytes() for pattern in patterns for p in sorted(project.glob(pattern))}


def log(project: Path, name: str) -> str:
    return (project / ".slurm" / "logs" / f"{name}.log").read_text(errors="replace")


@pytest.mark.slurm
@pytest.mark.slow
def test_grid_on_slurm_equals_a_local_run_and_a_cancelled_task_reruns_alone(cluster, tmp_path):
    timings = {"cluster start": cluster["start_s"]}
    project = workspace_with_remotes(tmp_path, **SLURM_GRID)
    user = User(cluster, project, tmp_path / "scratch")

    # The reference: a plain local `dvc repro` of the same commit, before the cluster runs (two cores).
    start = time.monotonic()
    local = tmp_path / "local"
    run(["git", "clone", "-q", str(tmp_path / "origin.git"), str(local)], cwd=tmp_path)
    dvc("repro", cwd=local)
    timings["local dvc repro"] = time.monotonic() - start

    start = time.monotonic()
    out = user("tumorbench", "slurm", "submit", "--max-running", "1", "--allow-failed")
    array_job, aggregate_job = submitted(out)
    timings["submit"] = time.monotonic() - start
    assert f"this Python environment, {Path(sys.executable).parent}" in out
    status = user("tumorbench", "slurm", "status", array_job)
    assert re.search(rf"{array_job}_1 +PENDING", status) and re.search(rf"{aggregate_job} +PENDING", status), status

    # Task 1 stopped mid-training, as preemption would find it: frozen after an epoch, then cancelled.
    state = project / ".slurm" / "resume" / "br35h-resnet18-scratch" / "state.pt"
    pid = wait_until(lambda: training_process(array_job, 1), "training in task 1", poll=0.05)
    wait_until(state.exists, "resume state after an epoch", poll=0.005)
    os.kill(pid, signal.SIGSTOP)
    user("scancel", f"{array_job}_1")
    wait_until(lambda: user.states(array_job).get(f"{array_job}_1") == "CANCELLED", "task 1 cancelled")
    status = user("tumorbench", "slurm", "status", array_job)  # while Slurm knows the job: squeue's states
    # (gone: Slurm forgets a finished task after MinJobAge, here 10 s)
    assert re.search(rf"{array_job}_0 +(COMPLETED|\(gone\)) +finished +evaluate@figshare-resnet18-scratch", status), (
        status
    )
    assert re.search(rf"{array_job}_1 +CANCELLED +missing +evaluate@br35h-resnet18-scratch", status), status
    assert re.search(r"\n +slurmstepd\S*: error: \*\*\* JOB \d+ ON \S+ CANCELLED AT", status), status  # its log
    assert "a resume state is saved: its next task continues the training" in status
    assert re.search(rf"{aggregate_job} +(PENDING|RUNNING)", status), status  # afterany: it runs all the same
    print(f"\n$ tumorbench slurm status {array_job}\n{status}")
    user.wait(array_job, aggregate_job)
    timings["array, one task cancelled, and the aggregate"] = time.monotonic() - start
    assert state.exists()  # left on shared storage for the next task
    status = user("tumorbench", "slurm", "status", array_job)
    assert f"missing 1: tumorbench slurm resubmit {array_job} runs only those" in status, status
    # --allow-failed: the aggregate ran on what finished, trained nothing, and its report names what is missing
    aggregate_log = log(project, f"{array_job}_aggregate")
    assert not TRAINING_LINE.search(aggregate_log) and "Running stage 'train@" not in aggregate_log
    assert "external@generated: left out, no checkpoint (not trained here): br35h-resnet18-scratch" in aggregate_log
    partial = project / ".slurm" / "jobs" / array_job / "reports"
    assert "**Missing variants**: 1 variant of params.yaml's grid has no results" in (partial / "README.md").read_text()
    assert json.loads((partial / "summary.json").read_text())["missing_variants"] == ["br35h-resnet18-scratch"]

    start = time.monotonic()
    out = user("tumorbench", "slurm", "resubmit", array_job, "--time", "30:00")  # the job's options, but this
    assert f"job {array_job}: 1 of 2 variants missing on the DVC remote" in out
    again, again_aggregate = submitted(out)
    resubmitted = (project / ".slurm" / "jobs" / again / "task.sh").read_text()
    assert "#SBATCH --array=0-0%1" in resubmitted and "#SBATCH --time=30:00" in resubmitted
    assert '"evaluate@br35h-resnet18-scratch explain@br35h-resnet18-scratch"  # task 0' in resubmitted
    user.wait(again, again_aggregate)
    timings["resubmitted task and its aggregate"] = time.monotonic() - start
    rerun = log(project, f"{again}_0")
    assert re.search(r"resume: continuing from epoch [12] of 3", rerun), rerun
    assert TRAINING_LINE.findall(rerun) == ["br35h-resnet18-scratch"]  # that variant only
    assert "@figshare" not in rerun
    trained = [TRAINING_LINE.findall(path.read_text()) for path in (project / ".slurm" / "logs").glob("*.log")]
    assert sorted(sum(trained, [])) == ["br35h-resnet18-scratch", "figshare-resnet18-scratch"]  # each once
    assert not TRAINING_LINE.search(log(project, f"{again}_aggregate"))
    # the resubmission's aggregate, with every variant now on the remote, wrote the report a local run writes
    report = project / ".slurm" / "jobs" / again / "reports"
    assert (report / "summary.json").read_bytes() == (local / "reports" / "summary.json").read_bytes()

    jobs = sorted(os.listdir(project / ".slurm" / "jobs"))
    out = user("tumorbench", "slurm", "resubmit", array_job)
    assert f"job {array_job}: all 2 variants are on the DVC remote; nothing to resubmit" in out
    assert sorted(os.listdir(project / ".slurm" / "jobs")) == jobs == sorted([array_job, again])

    # The user's workspace gets everything from the DVC remote: nothing runs, and it equals the local run.
    start = time.monotonic()
    assembled = user("dvc", "repro", "--pull")
    timings["dvc repro --pull in the workspace"] = time.monotonic() - start
    assert "Running stage" not in assembled and CACHED.format("aggregate") in assembled, assembled
    assert results(project) == results(local) and len(results(local)) >= 8

    # Once Slurm has forgotten the jobs, status reads the DVC remote.
    wait_until(lambda: not user.states(array_job) and not user.states(again), "jobs forgotten", timeout=60)
    status = user("tumorbench", "slurm", "status", array_job)
    assert f"Slurm no longer knows job {array_job}" in status and "missing" not in status, status
    assert len(re.findall(r"\(gone\) +finished +evaluate@", status)) == 2, status
    print("\n".join(f"{name}: {seconds:.1f} s" for name, seconds in timings.items()))


@pytest.mark.slurm
@pytest.mark.slow
def test_remote_unreachable_from_a_task_fails_it_with_the_reason(cluster, tmp_path):
    project = workspace_with_remotes(tmp_path, **SLURM_PARAMS)
    user = User(cluster, project, tmp_path / "scratch")
    (tmp_path / "a-file").write_text("")  # a DVC remote below a file: no task can write there
    dvc("remote", "modify", "--local", "shared", "url", str(tmp_path / "a-file" / "remote"), cwd=project)

    out = user("tumorbench", "slurm", "submit", "--glob", "evaluate@br35h-*")
    array_job, aggregate_job = submitted(out)
    user.wait(array_job, aggregate_job, timeout=120)
    task_log = log(project, f"{array_job}_0")
    reason = "tumorbench slurm check-remote: cannot write to DVC remote 'shared'"
    assert reason in task_log and "Not a directory" in task_log and "Running stage" not in task_log

    status = user("tumorbench", "slurm", "status", array_job)
    assert re.search(rf"{array_job}_0 +FAILED", status) and reason in status, status
    # afterok with --kill-on-invalid-dep: the failed task cancels the aggregate, which never runs
    assert re.search(rf"{aggregate_job} +CANCELLED \(DependencyNeverSatisfied\)", status), status
    assert not (project / ".slurm" / "logs" / f"{array_job}_aggregate.log").exists()


# A task of about 90 s on two cores (a training of 50 s): long enough to be requeued mid-epoch, taken down
# with its node, and to outlast a one-minute time limit.
LONG_TRAINING = {
    **TINY,
    "datasets": ["br35h"],
    "data__image_size": 64,
    "data__synthetic__br35h_per_class": 80,
    "train__batch_size": 4,
    "train__epochs": 40,
}
RESUMED = re.compile(r"resume: continuing from epoch (\d+) of 40, at batch (\d+) of \d+")


def saved_epoch(state: Path) -> int:
    """The epochs a resume state has finished (-1 while there is none or it is being replaced)."""
    try:
        return torch.load(state, weights_only=True)["epoch"]
    except (OSError, RuntimeError, EOFError, KeyError):
        return -1


def assert_same_results(user: User, project: Path, reference: Path) -> None:
    """The workspace, assembled from the DVC remote (nothing runs), has the reference's metrics and checkpoint."""
    assembled = user("dvc", "repro", "--pull", "evaluate@br35h-resnet18-scratch")
    assert "Running stage" not in assembled, assembled
    for path in ("metrics/br35h-resnet18-scratch.json", "models/br35h-resnet18-scratch.pt"):
        assert (project / path).read_bytes() == (reference / path).read_bytes(), path
    assert "in sync" in user("dvc", "status", "-c", "evaluate@br35h-resnet18-scratch")


@pytest.mark.slurm
@pytest.mark.slow
def test_requeue_node_down_and_time_limit_need_no_user_and_change_no_result(cluster, tmp_path):
    """Slurm's own interruptions, each as a cluster does them: `scontrol requeue` mid-epoch, the node set
    down and back up, and (another submission) a time limit shorter than the training. Each task restarts
    by itself, resumes mid-epoch, and ends with the metrics and checkpoint of an uninterrupted run."""
    timings = {}
    start = time.monotonic()
    reference = make_project(tmp_path / "reference", **LONG_TRAINING)
    dvc("repro", "evaluate@br35h-resnet18-scratch", cwd=reference)
    timings["local dvc repro of the variant"] = time.monotonic() - start

    # 1 and 3: requeued mid-epoch, then its node set down while it runs again
    start = time.monotonic()
    project = workspace_with_remotes(tmp_path / "requeue", **LONG_TRAINING)
    user = User(cluster, project, tmp_path / "scratch-requeue")
    array_job, aggregate_job = submitted(user("tumorbench", "slurm", "submit", "--glob", "evaluate@br35h-*"))
    task = f"{array_job}_0"
    state = project / ".slurm" / "resume" / "br35h-resnet18-scratch" / "state.pt"
    wait_until(lambda: saved_epoch(state) >= 1, "an epoch saved", poll=0.01)
    user("scontrol", "requeue", task)
    wait_until(lambda: len(RESUMED.findall(log(project, task))) == 1, "the requeued task resuming", timeout=120)
    requeued_at = saved_epoch(state)
    node = user("sinfo", "-h", "-N", "-o", "%N").split()[0]
    wait_until(lambda: saved_epoch(state) > requeued_at, "an epoch after the requeue", poll=0.01)
    user("scontrol", "update", f"nodename={node}", "state=down", "reason=pytest")
    wait_until(lambda: user.states(array_job).get(task) != "RUNNING", "the task off its node", timeout=60)
    # the node back, as after a reboot (the test cluster's ReturnToService=2 may have done so already)
    user("scontrol", "update", f"nodename={node}", "state=resume", check=False)
    user.wait(array_job, aggregate_job, timeout=600)
    timings["requeued, then node down and up"] = time.monotonic() - start
    task_log = log(project, task)
    resumed = [(int(epoch), int(batch)) for epoch, batch in RESUMED.findall(task_log)]
    assert len(resumed) == 2 and all(batch > 1 for _, batch in resumed), task_log  # mid-epoch, twice
    assert task_log.count("stopped by SIGTERM after batch") == 2, task_log
    assert "requeued 2 times:" in task_log and "resubmit" not in task_log
    assert user.states(array_job).get(task, "COMPLETED") == "COMPLETED"
    assert_same_results(user, project, reference)

    # 2: a one-minute time limit. Slurm checks time limits every 30 s and sends --signal up to 30 s early
    # on top: with 5 s asked for, the signal comes 5 to 35 s before the limit, and the task requeues itself
    start = time.monotonic()
    project = workspace_with_remotes(tmp_path / "time-limit", **LONG_TRAINING)
    user = User(cluster, project, tmp_path / "scratch-time-limit")
    out = user("tumorbench", "slurm", "submit", "--glob", "evaluate@br35h-*", "--time", "1", "--signal-before", "5")
    array_job, aggregate_job = submitted(out)
    task = f"{array_job}_0"
    assert "#SBATCH --signal=B:USR1@5" in (project / ".slurm" / "jobs" / array_job / "task.sh").read_text()
    user.wait(array_job, aggregate_job, timeout=900)
    timings["one-minute time limit"] = time.monotonic() - start
    task_log = log(project, task)
    assert "stopped by SIGTERM after batch" in task_log and "stopped before the time limit: requeueing" in task_log
    assert RESUMED.search(task_log) and "TIME LIMIT" not in task_log, task_log
    assert_same_results(user, project, reference)
    print("\n".join(f"{name}: {seconds:.1f} s" for name, seconds in timings.items()))
