"""Errors a user can fix, and how a stage reports them.

Bad params, unusable raw data, a damaged checkpoint, missing ImageNet weights: each is raised as a
UserError whose message names the file and the fix. A stage prints that message as one line,
prefixed with the stage's name as dvc.yaml spells it, and exits 1; a traceback would only bury it.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable


class UserError(Exception):
    """An input the user can fix; the message says which file and how."""


def run_stage(main: Callable[..., None], argv: list[str] | None = None) -> None:
    """main(*argv), with a UserError turned into `<stage>@<args>: <message>` on stderr and exit status 1."""
    argv = sys.argv[1:] if argv is None else argv
    name = Path(sys.argv[0]).stem + (f"@{'-'.join(argv)}" if argv else "")
    try:
        main(*argv)
    except UserError as error:
        sys.exit(f"{name}: {error}")
