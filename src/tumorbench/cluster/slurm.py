"""`tumorbench slurm`: submit the grid as a job array and an aggregate job, follow it, resubmit what is missing.

`submit` refuses what a task could not run (changed tracked files, a commit not on the git remote the tasks
clone from, no DVC remote; tumorbench.cluster.gitcheck, tumorbench.cluster.runcache), then submits the array and the
aggregate (tumorbench.cluster.slurm_scripts), or neither. Everything stays in .slurm/ of the submitting workspace
(git-ignored, on storage every node sees):

    .slurm/jobs/<job>/job.json   what was submitted: commit, remotes, each task's targets, options
    .slurm/jobs/<job>/task.sh, aggregate.sh, reports/ (the aggregate's reports/, copied back)
    .slurm/logs/<job>_<task>.log, <job>_aggregate.log
    .slurm/resume/<variant>/     training resume states (TUMORBENCH_RESUME): a requeued or resubmitted task
                                 continues from the last finished epoch

`status` reads squeue while Slurm knows the job (never sacct, which needs a Slurm database) and the DVC
remote always; `resubmit` submits what the DVC remote still lacks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, fields, replace
from datetime import datetime
from pathlib import Path

from tumorbench.cluster.gitcheck import check_clean, check_on_remote, checkout, clone_url, head_commit, remote_name
from tumorbench.cluster.grid import select_targets, variant_targets
from tumorbench.cluster.runcache import RemoteError, default_remote, finished_stages, layout, use_remote
from tumorbench.cluster.slurm_scripts import (
    SLURM_DIR,
    Options,
    Plan,
    aggregate_script,
    check_options,
    given,
    task_script,
)
from tumorbench.core.errors import UserError
from tumorbench.core.fileio import atomic_write_json, atomic_write_text
from tumorbench.core.params import load_params

LIVE_STATES = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED")
ENDED_BADLY = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE")


class SlurmError(UserError):
    """A Slurm command missing or failing, a job still running, an unknown job; the message says what to do."""


# ---------------------------------------------------------------- Slurm commands


def slurm_command(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SlurmError(f"{name} not found on PATH: run this on a Slurm login node, where the Slurm commands are")
    return path


def require_sbatch() -> None:
    """Before anything else: without sbatch nothing can be submitted, so nothing is."""
    try:
        slurm_command("sbatch")
    except SlurmError as error:
        raise SlurmError(f"{error}; nothing was submitted") from None


def sbatch(script: Path, root: Path) -> str:
    result = subprocess.run(
        [slurm_command("sbatch"), "--parsable", str(script)], cwd=root, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SlurmError(f"sbatch {script} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip().split(";")[0]


def squeue(job: str) -> dict[str, tuple[str, str]] | None:
    """{job or job_task: (state, reason)} of a job Slurm still knows (finished ones for MinJobAge seconds), else
    None."""
    result = subprocess.run(
        [slurm_command("squeue"), "--jobs", job, "--states", "all", "--noheader", "--array", "--format", "%i|%T|%r"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return None
        raise SlurmError(f"squeue --jobs {job} failed: {result.stderr.strip()}")
    states = {}
    for line in result.stdout.splitlines():
        job_id, state, reason = line.strip().split("|")
        states[job_id] = (state, reason)
    return states or None


# ---------------------------------------------------------------- submitting


def job_dir(root: Path, job: str) -> Path:
    return root / SLURM_DIR / "jobs" / job


def plan_for(root: Path, patterns: list[str], tasks: int | None, allow_failed: bool, options: Options, git_remote):
    """Check the workspace, the git remote and the DVC remote; refuse what the tasks could not run."""
    params = load_params(root / "params.yaml")
    grid = list(variant_targets(params))
    targets = select_targets(grid, patterns) if patterns else grid
    count = tasks or len(targets)
    if not 1 <= count <= len(targets):
        raise SlurmError(f"--tasks {count}: between 1 and the {len(targets)} variants selected")
    commit = head_commit(root)
    check_clean(root, commit)
    name = remote_name(root, git_remote)
    url = clone_url(root, name)
    check_on_remote(root, commit, name, url)
    dvc_remote, dvc_url = default_remote(root)
    pipeline = layout(root, grid)
    return Plan(
        root=str(root),
        commit=commit,
        git_remote=name,
        git_url=url,
        dvc_remote=dvc_remote,
        dvc_url=dvc_url,
        tasks=[targets[k::count] for k in range(count)],
        variant_stages={target: pipeline.variants[target] for target in targets},
        data_stages=pipeline.data,
        final_stages=pipeline.final,
        allow_failed=allow_failed,
        options=options,
        python_bin=str(Path(sys.executable).parent),
    )


def describe(plan: Plan, array_job: str, aggregate_job: str) -> str:
    limit = f", at most {plan.options.max_running} at a time" if plan.options.max_running else ""
    waits = "afterany: runs on what finished" if plan.allow_failed else "afterok: runs when every task succeeded"
    env = (
        f"setup command: {plan.options.setup}" if plan.options.setup else f"this Python environment, {plan.python_bin}"
    )
    logs = Path(plan.root) / SLURM_DIR / "logs"
    return "\n".join(
        [
            f"job {array_job}: {len(plan.targets)} variants of commit {plan.commit[:8]} in {len(plan.tasks)} tasks"
            f"{limit}; aggregate job {aggregate_job} ({waits})",
            f"tasks clone it from git remote '{plan.git_remote}' ({plan.git_url}), push to DVC remote "
            f"'{plan.dvc_remote}' ({plan.dvc_url}) and use {env}",
            f"logs: {logs}/{array_job}_<task>.log, {array_job}_aggregate.log",
            f"follow: tumorbench slurm status {array_job}; when it is done: dvc repro --pull",
        ]
    )


def launch(plan: Plan, dry_run: bool) -> str:
    """Submit the array, then the aggregate; print the scripts instead with dry_run. Any failure leaves
    nothing submitted."""
    root = Path(plan.root)
    if dry_run:
        return (
            f"# task.sh (sbatch --parsable task.sh)\n{task_script(plan)}\n"
            f"# aggregate.sh, <job> being the array's job id\n{aggregate_script(plan, '<job>')}"
        )
    (root / SLURM_DIR / "logs").mkdir(parents=True, exist_ok=True)
    staging = root / SLURM_DIR / "jobs" / f".submitting-{os.getpid()}-{time.time_ns()}"
    atomic_write_text(staging / "task.sh", task_script(plan))
    array_job = sbatch(staging / "task.sh", root)
    try:
        atomic_write_text(staging / "aggregate.sh", aggregate_script(plan, array_job))
        aggregate_job = sbatch(staging / "aggregate.sh", root)
    except BaseException:
        subprocess.run([slurm_command("scancel"), array_job], capture_output=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    submitted = datetime.now().astimezone().isoformat(timespec="seconds")
    record = {**asdict(plan), "array_job": array_job, "aggregate_job": aggregate_job, "submitted": submitted}
    atomic_write_json(staging / "job.json", record)
    staging.rename(job_dir(root, array_job))
    return describe(plan, array_job, aggregate_job)


def submit(root: Path, patterns, tasks, allow_failed, options, git_remote, dry_run) -> str:
    if not dry_run:
        require_sbatch()
    return launch(plan_for(root, patterns, tasks, allow_failed, options, git_remote), dry_run)


# ---------------------------------------------------------------- jobs after submission


def load_job(root: Path, job: str) -> dict:
    """A job's record, by its array or its aggregate job id."""
    jobs = root / SLURM_DIR / "jobs"
    path = job_dir(root, job) / "job.json"
    if path.exists():
        return json.loads(path.read_text())
    records = [json.loads(p.read_text()) for p in sorted(jobs.glob("*/job.json"))] if jobs.exists() else []
    for record in records:
        if record["aggregate_job"] == job:
            return record
    known = ", ".join(r["array_job"] for r in records) or "none"
    raise SlurmError(
        f"unknown job {job}: no {path.relative_to(root)} (jobs submitted from {root}: {known}); "
        "pass the job id `tumorbench slurm submit` printed"
    )


def plan_of(record: dict) -> Plan:
    values = {f.name: record[f.name] for f in fields(Plan) if f.name in record}
    return Plan(**{**values, "options": Options(**record["options"])})


def finished_variants(root: Path, stages: dict[str, list[str]]) -> list[str]:
    """The variants (evaluate@<v>) whose every stage has its results on the DVC remote of the workspace at
    `root`."""
    done = set(finished_stages(root, [stage for names in stages.values() for stage in names]))
    return [target for target, names in stages.items() if set(names) <= done]


def finished_on_remote(root: Path, plan: Plan) -> list[str]:
    """The job's variants whose results the job's DVC remote holds, for the job's commit, seen as its tasks
    see it: the workspace's .dvc/config.local, and the remote's URL as it was submitted."""
    with checkout(root, plan.commit) as clone:
        config_local = root / ".dvc" / "config.local"
        if config_local.exists():
            shutil.copy(config_local, clone / ".dvc" / "config.local")
        use_remote(clone, plan.dvc_remote, plan.dvc_url)
        return finished_variants(clone, plan.variant_stages)


def aggregate_inputs(root: Path, missing: bool) -> str:
    """For the aggregate job, in its clone: the stages of the grid's variants that are on the DVC remote
    (to restore), or with `missing` the variants that are not."""
    grid = list(variant_targets(load_params(root / "params.yaml")))
    stages = layout(root, grid).variants
    finished = set(finished_variants(root, stages))
    if missing:
        return " ".join(target for target in grid if target not in finished)
    return " ".join(stage for target in grid if target in finished for stage in stages[target])


def failure_reason(log: Path) -> str | None:
    """The last error a task's log reports (DVC's `ERROR:`, ours, git's `fatal:`, Slurm's `error:`), else its
    last line."""
    if not log.exists():
        return None
    lines = [line.strip() for line in re.split(r"[\r\n]+", log.read_text(errors="replace")) if line.strip()]
    # Slurm's own message can follow a progress bar on the same line
    errors = [re.search(r"(ERROR:|fatal:|tumorbench [\w-]+ [\w-]+:|[\w-]+: error:).*", line) for line in lines]
    return ([e.group(0) for e in errors if e] or lines or [None])[-1]


def variant_name(target: str) -> str:
    """evaluate@x -> x, evaluate_grouped@x -> x-grouped, evaluate_cv@x-3 -> x-cv3: the variant's name, as its
    resume folder is named (the inverse of Variant.stage)."""
    stage, _, name = target.partition("@")
    protocol = stage.removeprefix("evaluate").lstrip("_")
    if protocol == "cv":
        name, _, fold = name.rpartition("-")
        return f"{name}-cv{fold}"
    return f"{name}-{protocol}" if protocol else name


def slurm_states(*jobs: str) -> tuple[dict[str, tuple[str, str]], str | None]:
    """squeue's states of the jobs' tasks, and why there are none if squeue cannot tell."""
    try:
        return {task: state for job in jobs for task, state in (squeue(job) or {}).items()}, None
    except SlurmError as error:
        return {}, f"no states from Slurm here: {error}"


def state_of(live: dict[str, tuple[str, str]], job_id: str) -> str:
    """A task's state as squeue gives it, with the reason when there is one; (gone) once Slurm forgot it."""
    state, reason = live.get(job_id, ("(gone)", "None"))
    return state if reason in ("None", "") else f"{state} ({reason})"


def reason_lines(live: dict[str, tuple[str, str]], job_id: str, log: Path, gone_is_bad: bool) -> list[str]:
    """The reason from its log, indented, for a task that ended badly (or is gone, when that is bad)."""
    state = state_of(live, job_id).split()[0]
    reason = failure_reason(log) if state in ENDED_BADLY or (state == "(gone)" and gone_is_bad) else None
    return [f"{'':<12} {reason}"] if reason else []


def status(root: Path, job: str) -> str:
    """A line per variant: its task's state in Slurm (while Slurm knows the job), whether its results are
    on the DVC remote, and for a task that ended badly the reason from its log."""
    record = load_job(root, job)
    plan, array_job, aggregate_job = plan_of(record), record["array_job"], record["aggregate_job"]
    logs, resume = root / SLURM_DIR / "logs", root / SLURM_DIR / "resume"
    live, slurm_note = slurm_states(array_job, aggregate_job)
    try:
        finished, remote_note = set(finished_on_remote(root, plan)), None
    except RemoteError as error:
        finished, remote_note = None, f"no states from the DVC remote: {error}"

    again = f", resubmitting job {plan.resubmit_of}" if plan.resubmit_of else ""
    lines = [
        f"job {array_job}: {len(plan.targets)} variants of commit {plan.commit[:8]} in {len(plan.tasks)} tasks, "
        f"aggregate job {aggregate_job}{again}"
    ]
    if not live and slurm_note is None:
        lines.append(f"Slurm no longer knows job {array_job} (it forgets finished jobs): the DVC remote tells")
    lines.append(f"{'task':<12} {'Slurm':<28} {'DVC remote':<12} variant")
    missing = []
    for k, task in enumerate(plan.tasks):
        task_id = f"{array_job}_{k}"
        for target in task:
            remote = "?" if finished is None else "finished" if target in finished else "missing"
            lines.append(f"{task_id:<12} {state_of(live, task_id):<28} {remote:<12} {target}")
            if remote == "missing":
                missing.append(target)
                if (resume / variant_name(target) / "state.pt").exists():
                    lines.append(f"{'':<12} a resume state is saved: its next task continues the training")
        if finished is None or any(target not in finished for target in task):
            lines += reason_lines(live, task_id, logs / f"{task_id}.log", gone_is_bad=True)
    lines.append(f"{aggregate_job:<12} {state_of(live, aggregate_job):<28} {'':<12} aggregate")
    lines += reason_lines(live, aggregate_job, logs / f"{array_job}_aggregate.log", gone_is_bad=False)
    report = job_dir(root, array_job) / "reports" / "README.md"
    if report.exists():
        lines.append(f"report: {report}")
    lines += [note for note in (slurm_note, remote_note) if note]
    if missing and not any(state in LIVE_STATES for state, _ in live.values()):
        lines.append(f"missing {len(missing)}: tumorbench slurm resubmit {array_job} runs only those")
    return "\n".join(lines)


def resubmit(root: Path, job: str, dry_run: bool, options: dict) -> str:
    """Submit the job's variants that the DVC remote lacks, at its commit, with its options but those given;
    nothing when none is missing."""
    record = load_job(root, job)
    plan, array_job = plan_of(record), record["array_job"]
    if not dry_run:
        require_sbatch()
        running = [task for task, (state, _) in (squeue(array_job) or {}).items() if state in LIVE_STATES]
        if running:
            raise SlurmError(
                f"job {array_job} still has tasks pending or running ({', '.join(running)}): let it finish, "
                f"or cancel it first (scancel {array_job})"
            )
    finished = set(finished_on_remote(root, plan))
    missing = [target for target in plan.targets if target not in finished]
    if not missing:
        return f"job {array_job}: all {len(plan.targets)} variants are on the DVC remote; nothing to resubmit"
    count = min(len(plan.tasks), len(missing))
    again = replace(
        plan,
        tasks=[missing[k::count] for k in range(count)],
        options=check_options(replace(plan.options, **given(options)), "the job's options"),
        resubmit_of=array_job,
    )
    text = launch(again, dry_run)
    return f"job {array_job}: {len(missing)} of {len(plan.targets)} variants missing on the DVC remote\n{text}"
