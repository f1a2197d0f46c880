"""The two sbatch scripts of `tumorbench slurm submit`, and the options they carry (docs/SCALING.md).

A task of the job array clones the commit into node-local scratch ($SLURM_TMPDIR, else $TMPDIR), runs
`dvc repro --pull` on its share of the grid and `dvc push --run-cache`: no two tasks share a workspace or a
DVC lock, and a variant finished before is restored, not recomputed. The aggregate job, after the array,
restores every variant the DVC remote has, trains none, and runs the report. Plain bash rather than
submitit: what runs on a node is a dozen lines of git and dvc that `--dry-run` prints, and that a user can
read, rerun or change by hand, with no pickled Python in between.

The sbatch options come from flags and slurm.yaml, never from params.yaml, so no stage's hash depends on
where it ran.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path

from ruamel.yaml import YAML

from tumorbench.core.errors import UserError

DEFAULT_SIGNAL_BEFORE = 120  # seconds: a batch and a resume state's save, with Slurm's up to 60 s of slack
SLURM_DIR = Path(".slurm")  # in the submitting workspace: job records, logs, resume states (tumorbench.cluster.slurm)
CONFIG = Path("slurm.yaml")


class SlurmConfigError(UserError):
    """A bad slurm.yaml or option; the message names the key."""


@dataclass
class Options:
    """Where and how the jobs run: flags, else slurm.yaml, else Slurm's defaults. Never params.yaml, so that
    no stage's hash depends on them."""

    partition: str | None = None
    account: str | None = None
    gpus: int | None = None  # per task (--gres=gpu:N): Slurm puts one task on each GPU of a node
    cpus: int | None = None  # per task and for the aggregate (--cpus-per-task)
    mem: str | None = None  # e.g. 32G
    time: str | None = None  # e.g. 12:00:00
    signal_before: int | None = None  # seconds before the time limit Slurm signals a task (DEFAULT_SIGNAL_BEFORE)
    max_running: int | None = None  # tasks at once (the array's %N)
    sbatch: list[str] = field(default_factory=list)  # more options, one #SBATCH line each, e.g. --qos=high
    setup: str | None = None  # a shell command that sets the Python environment up, instead of this one's


def load_options(root: Path, path: Path | None, flags: dict) -> Options:
    """slurm.yaml (or `path`), then every flag given (not None) over it."""
    config = root / (path or CONFIG)
    values = {}
    if config.exists():
        values = YAML(typ="safe", pure=True).load(config.read_text()) or {}  # YAML 1.2: time: 12:00:00 is text
        known = [f.name for f in fields(Options)]
        unknown = sorted(set(values) - set(known)) if isinstance(values, dict) else ["(not a mapping)"]
        if unknown:
            raise SlurmConfigError(f"{config}: unknown keys {unknown}; the keys are {', '.join(known)}")
    elif path is not None:
        raise SlurmConfigError(f"{config} not found")
    values.update(given(flags))
    return check_options(Options(**values), config.name)


def given(flags: dict) -> dict:
    """The flags the user gave (argparse leaves the others None, or [] for a repeatable one)."""
    return {key: value for key, value in flags.items() if value not in (None, [])}


def check_options(options: Options, where: str) -> Options:
    for name in ("gpus", "cpus", "max_running", "signal_before"):
        value = getattr(options, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            flag = name.replace("_", "-")
            raise SlurmConfigError(f"{name}: {value!r} is not a whole number of at least 1 ({where} or --{flag})")
    for name in ("partition", "account", "mem", "time", "setup"):
        value = getattr(options, name)
        if value is not None and not isinstance(value, str):
            raise SlurmConfigError(f"{name}: {value!r} is not text ({where} or --{name}): quote it")
    if not isinstance(options.sbatch, list) or not all(str(o).startswith("-") for o in options.sbatch):
        raise SlurmConfigError(f"sbatch: {options.sbatch!r}: a list of sbatch options such as --qos=high ({where})")
    return options


def sbatch_lines(options: Options, gpus: bool) -> list[str]:
    flags = {
        "partition": options.partition,
        "account": options.account,
        "gres": f"gpu:{options.gpus}" if gpus and options.gpus else None,
        "cpus-per-task": options.cpus,
        "mem": options.mem,
        "time": options.time,
    }
    lines = [f"#SBATCH --{name}={value}" for name, value in flags.items() if value is not None]
    return lines + [f"#SBATCH {option}" for option in options.sbatch]


@dataclass
class Plan:
    """One submission: the commit, where the tasks get it and put their results, and each task's targets."""

    root: str  # the submitting workspace: logs, resume states and records go to its .slurm/
    commit: str
    git_remote: str
    git_url: str
    dvc_remote: str
    dvc_url: str
    tasks: list[list[str]]  # the variants (as `evaluate@<variant>`) of each array task
    variant_stages: dict[str, list[str]]  # each variant's stages after its training (evaluate, explain)
    data_stages: list[str]  # the stages no training feeds, run (restored) by the aggregate
    final_stages: list[str]  # the stages after several variants: external test sets, then aggregate
    allow_failed: bool
    options: Options
    python_bin: str  # the environment's bin/ put first on PATH, unless options.setup
    resubmit_of: str | None = None

    @property
    def targets(self) -> list[str]:
        return [target for task in self.tasks for target in task]

    def stages(self, task: list[str]) -> str:
        """What a task gives `dvc repro`: its variants' stages (their training and data stages come first)."""
        return " ".join(stage for target in task for stage in self.variant_stages[target])


def _q(value: str) -> str:
    return shlex.quote(str(value))


def environment_lines(plan: Plan) -> list[str]:
    if plan.options.setup:
        return [
            "# The setup command (slurm.yaml's setup: or --setup) provides python, dvc and tumorbench;",
            "# set +u while it runs: module and conda scripts read unset variables",
            "set +u",
            plan.options.setup,
            "set -u",
        ]
    return [
        "# The Python environment `tumorbench slurm submit` ran in (every node must see this path):",
        f'export PATH={_q(plan.python_bin)}:"$PATH"',
    ]


def clone_lines(plan: Plan, name: str) -> list[str]:
    """Clone the commit into node-local scratch and point DVC at the remote as the workspace resolves it."""
    return [
        f"commit={plan.commit}",
        f"submit_dir={_q(plan.root)}",
        "# A preempted, requeued or resubmitted training continues from its last epoch, kept on shared storage:",
        f'export TUMORBENCH_RESUME="$submit_dir/{SLURM_DIR}/resume"',
        f'work="${{SLURM_TMPDIR:-${{TMPDIR:-/tmp}}}}/tumorbench-{name}"',
        'rm -rf "$work" && trap \'rm -rf "$work"\' EXIT',
        f'git clone --quiet --no-checkout {_q(plan.git_url)} "$work"',
        'cd "$work" && git checkout --quiet "$commit"',
        'export PYTHONPATH="$work/src${PYTHONPATH:+:$PYTHONPATH}"  # the stages import this commit\'s code',
        'if [ -f "$submit_dir/.dvc/config.local" ]; then cp "$submit_dir/.dvc/config.local" .dvc/; fi',
        f"dvc config --local core.remote {_q(plan.dvc_remote)}",
        f"dvc config --local remote.{plan.dvc_remote}.url {_q(plan.dvc_url)}",
        "tumorbench slurm check-remote  # fail here, with the reason, rather than after training",
    ]


def header(job_name: str, log: Path, options: Options, gpus: bool, more: list[str]) -> list[str]:
    return [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        *more,
        f"#SBATCH --output={log}",
        "#SBATCH --open-mode=append",  # a requeued task adds to its log
        *sbatch_lines(options, gpus),
        "set -euo pipefail",
    ]


def stoppable_repro_lines(task: str) -> list[str]:
    """`dvc repro` of the task's targets, stopped cleanly on a signal; at the time limit the task requeues."""
    return [
        "# Slurm signals this script (USR1, --signal) before the time limit, and every process of the task (TERM)",
        "# at preemption, `scontrol requeue`, a node set down or scancel. dvc runs in a process group of its own so",
        "# that this script outlives it and passes the signal on: the training saves its resume state at the end of",
        "# its batch and stops (tumorbench.models.stopping); before the time limit the task then requeues itself.",
        'stopped="" repro=""',
        'on_signal() { stopped=$1; if [ -n "$repro" ]; then kill -TERM -- "-$repro" 2>/dev/null || true; fi; }',
        "trap 'on_signal USR1' USR1",
        "trap 'on_signal TERM' TERM",
        "setsid dvc repro --pull ${targets[$SLURM_ARRAY_TASK_ID]} &",
        "repro=$!",
        "while :; do  # a trapped signal ends `wait` early: wait again until dvc has exited",
        '    wait "$repro" && status=0 || status=$?',
        '    kill -0 "$repro" 2>/dev/null || break',
        "done",
        'while kill -0 -- "-$repro" 2>/dev/null; do sleep 0.2; done  # a training outliving dvc is still saving',
        'if [ "$status" -ne 0 ] && [ "$stopped" = USR1 ]; then',
        f'    echo "stopped before the time limit: requeueing {task}, which continues from its resume state"',
        f'    scontrol requeue "{task}"',
        "    exit 0",
        "fi",
        'if [ "$status" -ne 0 ]; then exit "$status"; fi',
    ]


def task_script(plan: Plan) -> str:
    logs = Path(plan.root) / SLURM_DIR / "logs"
    limit = f"%{plan.options.max_running}" if plan.options.max_running else ""
    signal_before = plan.options.signal_before or DEFAULT_SIGNAL_BEFORE
    array = [
        f"#SBATCH --array=0-{len(plan.tasks) - 1}{limit}",
        "#SBATCH --requeue",
        f"#SBATCH --signal=B:USR1@{signal_before}",
    ]
    lines = header("tumorbench", logs / "%A_%a.log", plan.options, True, array)
    task = "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
    lines += [
        f"# A task of `tumorbench slurm submit`: its share of the grid at commit {plan.commit[:8]}, results and",
        "# run-cache pushed to the DVC remote, from where the aggregate and `dvc repro --pull` restore them.",
        "targets=(",
        *[f'    "{plan.stages(task)}"  # task {k}' for k, task in enumerate(plan.tasks)],
        ")",
        *environment_lines(plan),
        *clone_lines(plan, task),
        'echo "task $SLURM_ARRAY_TASK_ID on $(hostname), requeued ${SLURM_RESTART_COUNT:-0} times:"'
        ' "${targets[$SLURM_ARRAY_TASK_ID]}"',
        *stoppable_repro_lines(task),
        "dvc push --run-cache",
    ]
    return "\n".join(lines) + "\n"


def aggregate_script(plan: Plan, array_job: str) -> str:
    slurm = Path(plan.root) / SLURM_DIR
    dependency = "afterany" if plan.allow_failed else "afterok"
    more = [f"#SBATCH --dependency={dependency}:{array_job}"]
    if not plan.allow_failed:  # a failed task cancels it instead of leaving it pending for ever
        more.append("#SBATCH --kill-on-invalid-dep=yes")
    lines = header("tumorbench-aggregate", slurm / "logs" / f"{array_job}_aggregate.log", plan.options, False, more)
    lines += [
        f"# The aggregate of job {array_job}: restores every variant whose results are on the DVC remote,",
        "# trains none (a missing one is listed in the report), runs the report and pushes it.",
        *environment_lines(plan),
        *clone_lines(plan, f"{array_job}_aggregate"),
        "finished=$(tumorbench slurm finished)",
        "missing=$(tumorbench slurm finished --missing)",
        f"dvc repro --pull $finished {' '.join(plan.data_stages)}",
        'if [ -z "$missing" ]; then',
        "    dvc repro --pull",
        "else",
        '    echo "not on the DVC remote, so not in the report (this job trains nothing): $missing"',
        f"    dvc repro --pull --single-item {' '.join(plan.final_stages)}",
        "fi",
        "dvc push --run-cache",
        f'reports="$submit_dir/{SLURM_DIR}/jobs/{array_job}/reports"  # the report, copied back beside the logs',
        'rm -rf "$reports.tmp" && cp -r reports "$reports.tmp" && rm -rf "$reports" && mv "$reports.tmp" "$reports"',
        'echo "report: $reports/README.md"',
    ]
    return "\n".join(lines) + "\n"
