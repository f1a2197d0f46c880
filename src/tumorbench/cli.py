"""The `tumorbench` command: tools a user runs beside `dvc` (the pipeline's stages live in stages/).

tumorbench profile paper          write profiles/paper.yaml's keys into params.yaml
tumorbench grid WORKER WORKERS    one worker's share of the grid, as targets for `dvc repro`
tumorbench predict --model models/<variant>.pt PATH...   a checkpoint applied to new scans
tumorbench slurm submit           the grid as a Slurm job array and an aggregate job (docs/SCALING.md)
tumorbench slurm status JOBID     each variant's state: Slurm's while it knows the job, the DVC remote's
tumorbench slurm resubmit JOBID   submit again what the DVC remote lacks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tumorbench.core.errors import UserError


def cmd_profile(args) -> int:
    from tumorbench.core.profiles import apply_profile, profile_path

    profile = profile_path(args.name)
    changed = apply_profile(profile, Path(args.params))
    print(f"{args.params}: {len(changed)} keys set from {profile}: {', '.join(changed) or 'none (already applied)'}")
    return 0


def cmd_grid(args) -> int:
    from tumorbench.cluster.grid import share
    from tumorbench.core.params import load_params

    if not 0 <= args.worker < args.workers:
        raise UserError(f"worker {args.worker} of {args.workers}: need 0 <= WORKER < WORKERS")
    targets = share(args.worker, args.workers, load_params())
    if not targets:  # an empty list would make `dvc repro $(...)` run the whole pipeline
        raise UserError(
            f"worker {args.worker} of {args.workers} has no variant: the grid is smaller than {args.workers}"
        )
    print(" ".join(targets))
    return 0


def cmd_predict(args) -> int:
    from tumorbench.predict import run

    return run(args.model, args.paths, args.out, args.cam, args.batch_size, args.device, args.resume)


def cmd_slurm_submit(args) -> int:
    from tumorbench.cluster.gitcheck import project_root
    from tumorbench.cluster.slurm import submit
    from tumorbench.cluster.slurm_scripts import load_options

    root = project_root(Path.cwd())
    options = load_options(root, args.config, sbatch_flags(args))
    print(submit(root, args.glob, args.tasks, args.allow_failed, options, args.git_remote, args.dry_run))
    return 0


def cmd_slurm_status(args) -> int:
    from tumorbench.cluster.gitcheck import project_root
    from tumorbench.cluster.slurm import status

    print(status(project_root(Path.cwd()), args.job))
    return 0


def cmd_slurm_resubmit(args) -> int:
    from tumorbench.cluster.gitcheck import project_root
    from tumorbench.cluster.slurm import resubmit

    print(resubmit(project_root(Path.cwd()), args.job, args.dry_run, sbatch_flags(args)))
    return 0


def cmd_slurm_finished(args) -> int:
    from tumorbench.cluster.gitcheck import project_root
    from tumorbench.cluster.slurm import aggregate_inputs

    print(aggregate_inputs(project_root(Path.cwd()), args.missing))
    return 0


def cmd_slurm_check_remote(args) -> int:
    from tumorbench.cluster.gitcheck import project_root
    from tumorbench.cluster.runcache import check_remote

    print(check_remote(project_root(Path.cwd())))
    return 0


def sbatch_flags(args) -> dict:
    names = ("partition", "account", "gpus", "cpus", "mem", "time", "signal_before", "max_running", "sbatch", "setup")
    return {name: getattr(args, name) for name in names}


def add_sbatch_flags(parser: argparse.ArgumentParser) -> None:
    from tumorbench.cluster.slurm_scripts import DEFAULT_SIGNAL_BEFORE

    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--gpus", type=int, help="GPUs per task (--gres=gpu:N); Slurm runs a task per GPU")
    parser.add_argument("--cpus", type=int, help="CPUs per task and for the aggregate (--cpus-per-task)")
    parser.add_argument("--mem", help="memory per task and for the aggregate, e.g. 32G")
    parser.add_argument("--time", help="time limit per task and for the aggregate, e.g. 12:00:00")
    parser.add_argument(
        "--signal-before",
        type=int,
        metavar="SECONDS",
        help="Slurm signals a task this long before its time limit; its training saves and it requeues itself "
        f"(default {DEFAULT_SIGNAL_BEFORE})",
    )
    parser.add_argument("--max-running", type=int, metavar="N", help="at most N tasks at once (the array's %%N)")
    parser.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTION",
        help="one more sbatch option for both scripts, e.g. --sbatch=--qos=high (repeatable)",
    )
    parser.add_argument(
        "--setup",
        metavar="COMMAND",
        help="a shell command setting up python, dvc and tumorbench on a node (default: put this Python "
        "environment's bin/ first on PATH)",
    )


def slurm_parser(commands) -> None:
    slurm = commands.add_parser(
        "slurm", help="run the grid on a Slurm cluster", description="Run the grid on Slurm (docs/SCALING.md)."
    )
    actions = slurm.add_subparsers(dest="action", required=True, metavar="ACTION")

    submit = actions.add_parser(
        "submit",
        help="submit the grid as a job array and an aggregate job",
        description="Submit the selected variants of HEAD as a Slurm job array (one task per variant, or "
        "--tasks shares), and an aggregate job after it. Options come from flags, else slurm.yaml.",
    )
    submit.add_argument(
        "--glob",
        action="append",
        default=[],
        metavar="PATTERN",
        help="variants to run, e.g. 'evaluate@figshare-*' (repeatable; default: the whole grid)",
    )
    submit.add_argument("--tasks", type=int, help="split the variants into this many tasks (default: one each)")
    submit.add_argument(
        "--allow-failed",
        action="store_true",
        help="run the aggregate after the array whatever the tasks' outcome (afterany); it reports "
        "the missing variants and trains none",
    )
    submit.add_argument("--dry-run", action="store_true", help="print the two sbatch scripts; submit nothing")
    submit.add_argument(
        "--git-remote",
        metavar="NAME",
        help="the git remote the tasks clone from (default: the branch's upstream, else origin)",
    )
    submit.add_argument("--config", type=Path, metavar="PATH", help="the sbatch options file (default: slurm.yaml)")
    add_sbatch_flags(submit)
    submit.set_defaults(run=cmd_slurm_submit)

    status = actions.add_parser("status", help="each variant's state in Slurm and on the DVC remote")
    status.add_argument("job", metavar="JOBID", help="the job id `submit` printed")
    status.set_defaults(run=cmd_slurm_status)

    resubmit = actions.add_parser(
        "resubmit",
        help="submit again the variants the DVC remote lacks",
        description="Submit again, at the job's commit and with its options but those given, the job's "
        "variants whose results the DVC remote lacks; nothing if none is missing.",
    )
    resubmit.add_argument("job", metavar="JOBID", help="the job id `submit` printed")
    resubmit.add_argument("--dry-run", action="store_true", help="print the scripts; submit nothing")
    add_sbatch_flags(resubmit)
    resubmit.set_defaults(run=cmd_slurm_resubmit)

    finished = actions.add_parser(
        "finished", help="(the aggregate job's) the stages of the grid's variants whose results are on the DVC remote"
    )
    finished.add_argument("--missing", action="store_true", help="the variants whose results are not")
    finished.set_defaults(run=cmd_slurm_finished)

    check = actions.add_parser("check-remote", help="fail, saying why, if this machine cannot write to the DVC remote")
    check.set_defaults(run=cmd_slurm_check_remote)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="tumorbench", description=__doc__.split("\n")[0])
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    profile = commands.add_parser("profile", help="write a profile's keys into params.yaml")
    profile.add_argument("name", help="a profile in profiles/ (e.g. paper) or a path to a .yaml file")
    profile.add_argument("--params", default="params.yaml", help="the params file to change (default: %(default)s)")
    profile.set_defaults(run=cmd_profile)

    grid = commands.add_parser(
        "grid", help="print one worker's share of the variant grid", description=__doc__.split("\n")[3].strip()
    )
    grid.add_argument("worker", type=int, help="this worker's number, 0 .. WORKERS-1")
    grid.add_argument("workers", type=int, help="how many workers share the grid")
    grid.set_defaults(run=cmd_grid)

    predict = commands.add_parser(
        "predict",
        help="apply a trained checkpoint to images, DICOM or .mat files (research only, not for diagnostic use)",
    )
    predict.add_argument("--model", type=Path, required=True, help="a checkpoint: models/<variant>.pt")
    predict.add_argument("paths", type=Path, nargs="*", metavar="PATH", help="files, or folders read recursively")
    predict.add_argument(
        "--out",
        type=Path,
        help="the CSV path,predicted,prob_<class>..., written as it goes (default: stdout); <out>.json says "
        "which model wrote it and whether it is complete",
    )
    predict.add_argument("--cam", type=Path, metavar="DIR", help="also write a Grad-CAM overlay per image here")
    predict.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run: skip the inputs whose row --out already holds (same model only)",
    )
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    predict.set_defaults(run=cmd_predict)

    slurm_parser(commands)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as error:
        command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
        print(f"tumorbench {command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
