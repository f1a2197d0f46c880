"""The project's set-up promises: README commands, CI and dvc.yaml agree with the code."""

import ast
import re
from pathlib import Path

import yaml

from tumorbench.core.variants import (
    CURVES,
    FIGURES,
    MODEL_CARDS,
    REPORTS,
    SUMMARY,
    TABLES_DIR,
    Variant,
    prepared_dir,
    raw_dir,
    split_path,
)

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_command = [line for line in (ROOT / ".ci/run").read_text().splitlines() if "pytest" in line and "pip" in line]
    assert len(ci_command) == 1
    assert f"    {ci_command[0]}" in readme.splitlines()


def test_dvc_yaml_paths_are_the_ones_the_library_writes():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    variant = Variant("${item.dataset}", "${item.model}", "${item.init}")
    assert str(variant.checkpoint) in stages["train"]["outs"]
    assert str(variant.live_dir) in stages["train"]["outs"]
    assert str(variant.predictions) in stages["evaluate"]["outs"]
    assert str(variant.roc_dir) in stages["evaluate"]["outs"]
    assert stages["evaluate"]["metrics"] == [str(variant.metrics)]
    assert str(raw_dir("${item.dataset}")) in stages["download"]["outs"]
    assert str(prepared_dir("${item.dataset}") / "images.npy") in stages["prepare"]["outs"]
    assert str(split_path("${item.dataset}")) in stages["split"]["outs"]
    aggregate_outs = stages["aggregate"]["outs"] + stages["aggregate"]["metrics"]
    expected = [REPORTS / "README.md", TABLES_DIR, FIGURES, MODEL_CARDS, CURVES, SUMMARY]
    assert sorted(aggregate_outs) == sorted(map(str, expected))


def project_imports(path: Path) -> set[Path]:
    """The files of our package that a Python file imports (anywhere in it, lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            file = ROOT / "src" / (name.replace(".", "/") + ".py")
            if name.startswith("tumorbench.") and file.exists():
                found.add(file)
    return found


def import_closure(script: Path) -> set[str]:
    seen, todo = set(), [script]
    while todo:
        for file in project_imports(todo.pop()) - seen:
            seen.add(file)
            todo.append(file)
    return {str(file.relative_to(ROOT)) for file in seen}


def test_every_stage_depends_on_the_modules_its_script_imports_and_on_no_others():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    data_files = {"src/tumorbench/core/paper_results.csv"}  # read by the catalog for the report
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # a foreach stage defines its stages under do:
        script = stage["cmd"].split()[1]
        deps = {dep for dep in stage["deps"] if dep.startswith("src/")} - data_files
        assert script in stage["deps"], name
        # errors.py only words messages: editing it must not rerun the grid
        assert deps == import_closure(ROOT / script) - {"src/tumorbench/core/errors.py"}, name


PACKAGE = ROOT / "src/tumorbench"
# Each subpackage may import those of a lower layer, never one of its own layer or above; report and
# cluster share the top layer and do not import each other. The modules at the top (cli, predict) may
# import everything.
LAYERS = {"core": 0, "data": 1, "models": 2, "validity": 3, "report": 4, "cluster": 4}


def subpackage_of(file: Path) -> str | None:
    parts = file.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else None


def test_every_package_init_is_a_docstring_that_defines_nothing():
    inits = sorted(PACKAGE.glob("**/__init__.py"))
    assert {init.parent.name for init in inits} == {"tumorbench", *LAYERS}
    for init in inits:
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), init
        assert all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in tree.body), init


def test_the_package_top_level_has_at_most_ten_entries():
    entries = [entry.name for entry in PACKAGE.iterdir() if entry.name != "__pycache__"]
    assert len(entries) <= 10, sorted(entries)
    assert {name for name in entries if (PACKAGE / name).is_dir()} == set(LAYERS)


def test_no_module_imports_a_subpackage_of_its_own_layer_or_above():
    wrong = []
    for file in sorted(PACKAGE.glob("**/*.py")):
        own = subpackage_of(file)
        if own is None:
            continue
        for imported in project_imports(file):
            other = subpackage_of(imported)
            if other != own and (other is None or LAYERS[other] >= LAYERS[own]):
                wrong.append(f"{file.relative_to(ROOT)} imports {imported.relative_to(ROOT)}")
    assert wrong == []


def test_resume_states_live_outside_every_declared_output():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = [o for stage in stages.values() for o in stage.get("outs", []) + stage.get("metrics", [])]
    resume = str(Variant("d", "m", "i").resume_dir)
    assert not any(resume.startswith(o.split("$")[0]) for o in outs)


def test_the_docs_name_only_tests_and_files_that_exist():
    """README and docs/ cite tests as proof (docs/RELIABILITY.md's scenario table): each must still exist."""
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path, name in re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", doc.read_text()):
            if not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
            elif name and f"def {name}(" not in (ROOT / path).read_text():
                missing.append(f"{doc.name}: {path}::{name}")
    assert not missing
