"""The project's set-up promises: README commands, CI and dvc.yaml agree with the code."""

from pathlib import Path

import yaml

from tumorbench.variants import Variant

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
    # every library module a stage imports is among its dependencies
    for name, modules in {
        "train": ["training", "models", "augment", "data"],
        "evaluate": ["evaluation", "metrics"],
    }.items():
        for module in modules:
            assert f"src/tumorbench/{module}.py" in stages[name]["deps"]


def test_resume_states_live_outside_every_declared_output():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = [o for stage in stages.values() for o in stage.get("outs", []) + stage.get("metrics", [])]
    resume = str(Variant("d", "m", "i").resume_dir)
    assert not any(resume.startswith(o.split("$")[0]) for o in outs)
