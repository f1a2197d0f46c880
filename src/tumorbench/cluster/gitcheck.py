"""The commit cluster tasks run: the workspace's HEAD, with no change to a tracked file, on a git remote the
tasks clone it from; and a throw-away checkout of such a commit to look at its pipeline.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tumorbench.core.errors import UserError


class GitError(UserError):
    """A workspace or git remote the tasks cannot use; the message says how to fix it."""


def git(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which("git") is None:
        raise GitError("git not found on PATH: the tasks clone the commit with git")
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise GitError(f"git {' '.join(args)} (in {cwd}) failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def project_root(cwd: Path) -> Path:
    result = git(["rev-parse", "--show-toplevel"], cwd, check=False)
    if result.returncode != 0:
        raise GitError(f"{cwd} is not in a git repository: run this from a clone of the project")
    return Path(result.stdout.strip())


def head_commit(root: Path) -> str:
    return git(["rev-parse", "HEAD"], root).stdout.strip()


def check_clean(root: Path, commit: str) -> None:
    """Refuse changes to tracked files: the tasks run the commit, not the workspace. Untracked files
    (dvc.lock before its first commit, slurm.yaml, logs) do not matter to them."""
    changed = git(["status", "--porcelain", "--untracked-files=no"], root).stdout.rstrip()
    if changed:
        raise GitError(
            f"tracked files differ from commit {commit[:8]}, and the tasks would run the commit without them:\n"
            f"{changed}\ncommit and push them (git commit -am '...' && git push) or set them aside (git stash); "
            "untracked files are fine"
        )


def _is_local(url: str) -> bool:
    # git's rule: a colon before the first slash makes host:path an ssh address
    return url.startswith("file://") or ("://" not in url and not re.match(r"^[^/]+:", url))


def remote_name(root: Path, name: str | None) -> str:
    """`name`, else the current branch's upstream remote, else origin, else the only remote."""
    remotes = git(["remote"], root).stdout.split()
    if not remotes:
        raise GitError(
            f"{root} has no git remote, and the tasks clone the commit from one: add one every node reaches "
            "and push (git remote add origin URL && git push -u origin HEAD)"
        )
    if name is None:
        branch = git(["symbolic-ref", "--quiet", "--short", "HEAD"], root, check=False).stdout.strip()
        upstream = git(["config", f"branch.{branch}.remote"], root, check=False).stdout.strip() if branch else ""
        name = upstream or ("origin" if "origin" in remotes else remotes[0] if len(remotes) == 1 else None)
        if name is None:
            raise GitError(f"which git remote do the tasks clone from? Name one with --git-remote ({remotes})")
    if name not in remotes:
        raise GitError(f"no git remote '{name}' in {root} (remotes: {', '.join(remotes)})")
    return name


def clone_url(root: Path, name: str) -> str:
    """The remote's URL as the tasks use it: a local path made absolute (they clone from elsewhere)."""
    url = git(["remote", "get-url", name], root).stdout.strip()
    if not _is_local(url):
        return url
    path = (root / url.removeprefix("file://")).resolve()
    if not path.exists():
        raise GitError(f"git remote '{name}' is {url}, which does not exist ({path}); the tasks clone from it")
    return str(path)


def check_on_remote(root: Path, commit: str, name: str, url: str) -> None:
    """Refuse a commit that no branch or tag of the remote contains: a task could not check it out."""
    listing = git(["ls-remote", url], root, check=False)
    if listing.returncode != 0:
        raise GitError(f"cannot reach git remote '{name}' ({url}): {listing.stderr.strip()}")
    heads = {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}
    for sha in heads:
        if sha == commit or git(["merge-base", "--is-ancestor", commit, sha], root, check=False).returncode == 0:
            return
    raise GitError(
        f"commit {commit[:8]} is not on git remote '{name}' ({url}), where the tasks clone it from: "
        f"push it first (git push {name} HEAD)"
    )


@contextmanager
def checkout(root: Path, commit: str) -> Iterator[Path]:
    """A temporary clone of `root` at `commit` (sharing its objects: nothing is copied but the files)."""
    with tempfile.TemporaryDirectory(prefix="tumorbench-checkout-") as tmp:
        clone = Path(tmp) / "repo"
        git(["clone", "--quiet", "--shared", "--no-checkout", str(root), str(clone)], root)
        result = git(["checkout", "--quiet", commit], clone, check=False)
        if result.returncode != 0:
            raise GitError(f"commit {commit[:8]} is not in {root}: git fetch it first ({result.stderr.strip()})")
        yield clone
