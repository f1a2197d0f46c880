"""Errors a user can fix, and how a stage reports them.

Bad params, unusable raw data, a damaged checkpoint, missing ImageNet weights: each is raised as a
UserError whose message names the file and the fix. A stage prints that message, prefixed with
the stage's name as dvc.yaml spells it, and exits 1, without the traceback that would bury it.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """An input the user can fix; the message says which file and how. `exit_code` is the stage's exit
    status when it ends with this error."""

    exit_code = 1


def run_stage(main: Callable[..., None]) -> None:
    """main(*command-line arguments), a UserError turned into `<stage>: <message>` on stderr and exit
    status 1 (or the error's exit_code). <stage> is the name DVC runs it as ($DVC_STAGE), else
    <script>@<args joined by ->."""
    args = sys.argv[1:]
    name = os.environ.get("DVC_STAGE") or Path(sys.argv[0]).stem + (f"@{'-'.join(args)}" if args else "")
    try:
        main(*args)
    except UserError as error:
        print(f"{name}: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
