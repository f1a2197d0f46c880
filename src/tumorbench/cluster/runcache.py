"""What the DVC remote holds: which stages have finished, found the way `dvc repro --pull` finds them.

A stage has finished when the remote's run-cache (`runs/` beside `files/`) has an entry with the stage's
command, the hashes of its dependencies and its params, and the outputs that entry names are on the remote.
A dependency made by another stage has the hashes of that stage's matching entries, so `evaluate@<variant>`
has finished when its whole chain has: download, prepare, split, train and evaluate. An entry counts
whichever commit pushed it, as it does for `dvc repro`. Only the entries, small YAML files, are read; no
output is downloaded.
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from dvc.config import NoRemoteError
from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from dvc.utils.serialize import parse_yaml

from tumorbench.core.errors import UserError
from tumorbench.core.fileio import md5_file


class RemoteError(UserError):
    """No DVC remote, or one this machine cannot reach; the message says which and why."""


def default_remote(root: Path) -> tuple[str, str]:
    """(name, url) of the project's default DVC remote as this workspace resolves it (config.local included;
    a relative local path made absolute)."""
    with Repo(str(root)) as repo:
        name = repo.config["core"].get("remote")
        if not name:
            raise RemoteError(
                f"{root}/.dvc/config: no default DVC remote. The tasks push their results there and the "
                "aggregate and your workspace pull them from it; add one every node reaches and commit it:\n"
                "  dvc remote add -d shared /path/every/node/mounts   (or s3://..., see docs/SCALING.md)\n"
                "  git commit .dvc/config -m 'DVC remote' && git push"
            )
        if name not in repo.config["remote"]:
            raise RemoteError(f"{root}/.dvc/config: the default remote '{name}' is not defined (dvc remote list)")
        return name, repo.config["remote"][name]["url"]


@dataclass
class Layout:
    """The pipeline around the variants, as DVC's graph of dvc.yaml orders it."""

    variants: dict[str, list[str]]  # evaluate@<v> -> the stages after its training that serve it alone
    data: list[str]  # the stages no training feeds: download, prepare, split, ...
    final: list[str]  # the stages after several variants' training (external test sets, aggregate), in order


def training_stage(target: str) -> str:
    """evaluate@v -> train@v, evaluate_grouped@v -> train_grouped@v (dvc.yaml's names)."""
    stage, _, name = target.partition("@")
    return f"{stage.replace('evaluate', 'train', 1)}@{name}"


def layout(root: Path, targets: list[str]) -> Layout:
    """Split the pipeline at `root` (its dvc.yaml and params.yaml) into the stages of each variant of `targets`
    (the whole grid), the data stages before any training and the final stages after several trainings."""
    import networkx as nx

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # an edge goes from a stage to one it depends on
        names = {stage: stage.name for stage in graph.nodes}
        by_name = {name: stage for stage, name in names.items()}
        missing = [training_stage(t) for t in targets if training_stage(t) not in by_name or t not in by_name]
        if missing:
            raise UserError(f"{root}/dvc.yaml has no stage {', '.join(missing)} (dvc stage list)")
        order = [names[stage] for stage in reversed(list(nx.topological_sort(graph)))]  # upstream first
        after = {t: {names[s] for s in nx.ancestors(graph, by_name[training_stage(t)])} for t in targets}
        trained = {training_stage(t) for t in targets}
        seen = defaultdict(int)
        for stages in after.values():
            for name in stages:
                seen[name] += 1
        return Layout(
            variants={
                t: [t] + [name for name in order if name in after[t] and seen[name] == 1 and name != t] for t in targets
            },
            data=[name for name in order if name not in seen and name not in trained],
            final=[name for name in order if seen[name] > 1],
        )


def use_remote(root: Path, name: str, url: str) -> None:
    """Make `name` at `url` the default remote of the repository at `root`, in its .dvc/config.local."""
    with Repo(str(root)) as repo, repo.config.edit("local") as config:
        config.setdefault("core", {})["remote"] = name
        config.setdefault("remote", {}).setdefault(name, {})["url"] = url


def _remote(repo: Repo):
    try:
        return repo.cloud.get_remote()
    except NoRemoteError as error:
        raise RemoteError(str(error)) from error


def check_remote(root: Path) -> str:
    """Fail, saying why, when this machine cannot write to the default DVC remote (a task checks this before
    training, since `dvc repro --pull` quietly runs everything when the remote cannot be read)."""
    with Repo(str(root)) as repo:
        remote = _remote(repo)
        where = f"DVC remote '{remote.name}' ({remote.path}) from {socket.gethostname()}"
        probe = remote.fs.join(remote.path, f".tumorbench-probe-{socket.gethostname()}-{os.getpid()}")
        try:
            remote.fs.makedirs(remote.path, exist_ok=True)
            remote.fs.pipe_file(probe, b"")
            remote.fs.rm_file(probe)
        except Exception as error:  # any backend's failure: its message is the reason
            raise RemoteError(f"cannot write to {where}: {error}") from error
        return f"{where}: reachable"


def run_cache_entries(remote) -> dict[str, list[dict]]:
    """The remote's run-cache entries, by command."""
    entries = defaultdict(list)
    runs = remote.fs.join(remote.path, "runs")
    try:
        paths = list(remote.fs.find(runs))
        for path in paths:
            entry = parse_yaml(remote.fs.cat_file(path).decode(), path)
            if isinstance(entry, dict) and "cmd" in entry:
                entries[entry["cmd"]].append(entry)
    except Exception as error:
        raise RemoteError(f"cannot read the run-cache of DVC remote '{remote.name}' ({runs}): {error}") from error
    return entries


def _matches(entry: dict, expected: dict[str, set[str]], params: dict) -> bool:
    deps = {dep["path"]: dep.get("md5") for dep in entry.get("deps") or []}
    return (
        deps.keys() == expected.keys()
        and all(deps[path] in hashes for path, hashes in expected.items())
        and (entry.get("params") or {}) == params
    )


def finished_stages(root: Path, names: list[str]) -> list[str]:
    """The stages of `names` (as `dvc stage list` names them) whose results are on the default remote, for
    the pipeline and files checked out at `root`."""
    with Repo(str(root)) as repo:
        remote = _remote(repo)
        entries = run_cache_entries(remote)
        stages = {stage.name: stage for stage in repo.index.stages}
        producers = {out.def_path: stage for stage in stages.values() for out in stage.outs}
        on_remote: dict[str, bool] = {}
        outputs: dict[str, dict[str, set[str]]] = {}  # stage -> out path -> hashes of its finished runs

        def exists(oid: str) -> bool:
            if oid not in on_remote:
                on_remote[oid] = remote.odb.exists(oid)  # a .dir object is pushed after the files it lists
            return on_remote[oid]

        def finished(stage) -> dict[str, set[str]]:
            if stage.name in outputs:
                return outputs[stage.name]
            outputs[stage.name] = found = {}
            expected, params = {}, {}
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    params[dep.def_path] = dep.read_params()
                elif dep.def_path in producers:
                    expected[dep.def_path] = finished(producers[dep.def_path]).get(dep.def_path, set())
                elif (root / dep.def_path).is_file():
                    expected[dep.def_path] = {md5_file(root / dep.def_path)}
                else:  # a folder, or a file no stage makes: not how our variant stages are built
                    return found
            if not all(expected.values()):
                return found
            for entry in entries.get(stage.cmd, []):
                if _matches(entry, expected, params) and all(exists(out["md5"]) for out in entry["outs"]):
                    for out in entry["outs"]:
                        found.setdefault(out["path"], set()).add(out["md5"])
            return found

        unknown = [name for name in names if name not in stages]
        if unknown:
            raise UserError(f"{root}/dvc.yaml has no stage {', '.join(unknown)} (dvc stage list)")
        return [name for name in names if finished(stages[name])]
