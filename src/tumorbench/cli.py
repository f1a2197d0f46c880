"""The `tumorbench` command: tools a user runs beside `dvc` (the pipeline's stages live in stages/).

tumorbench profile paper          write profiles/paper.yaml's keys into params.yaml
tumorbench grid WORKER WORKERS    one worker's share of the grid, as targets for `dvc repro`
tumorbench predict --model models/<variant>.pt PATH...   a checkpoint applied to new scans
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tumorbench.errors import UserError


def cmd_profile(args) -> int:
    from tumorbench.profiles import apply_profile, profile_path

    profile = profile_path(args.name)
    changed = apply_profile(profile, Path(args.params))
    print(f"{args.params}: {len(changed)} keys set from {profile}: {', '.join(changed) or 'none (already applied)'}")
    return 0


def cmd_grid(args) -> int:
    from tumorbench.grid import share
    from tumorbench.params import load_params

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

    return run(args.model, args.paths, args.out, args.cam, args.batch_size, args.device)


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
    predict.add_argument("--out", type=Path, help="the CSV path,predicted,prob_<class>... (default: stdout)")
    predict.add_argument("--cam", type=Path, metavar="DIR", help="also write a Grad-CAM overlay per image here")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    predict.set_defaults(run=cmd_predict)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as error:
        print(f"tumorbench {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
