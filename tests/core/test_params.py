import copy
import shutil
from pathlib import Path

import pytest
import yaml

from tumorbench.core.params import ParamsError, load_params, train_param_keys, validate
from tumorbench.core.profiles import apply_profile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_committed_profiles_are_valid(tmp_path):
    load_params(ROOT / "params.yaml")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    changed = apply_profile(ROOT / "profiles/paper.yaml", tmp_path / "params.yaml")
    paper = load_params(tmp_path / "params.yaml")
    assert len(paper["models"]) * len(paper["inits"]) * len(paper["datasets"]) == 48
    assert paper["data"]["image_size"] == 224 and paper["train"]["epochs"] == 100
    # params.yaml with the profile applied differs from params.yaml in the profile's keys, and only there
    before, after = flatten(load_params(ROOT / "params.yaml")), flatten(paper)
    differing = {key for key in before.keys() | after.keys() if before.get(key, "gone") != after.get(key, "gone")}
    assert all(any(key == c or key.startswith(f"{c}.") for c in changed) for key in differing)
    assert all(any(key == c or key.startswith(f"{c}.") for key in differing) for c in changed)
    assert sorted(changed) == sorted(flatten(yaml.safe_load((ROOT / "profiles/paper.yaml").read_text())))
    assert "generated" not in paper["external"]  # null removes a key
    assert "# Embedded profile" in (tmp_path / "params.yaml").read_text()  # comments kept
    assert apply_profile(ROOT / "profiles/paper.yaml", tmp_path / "params.yaml") == []  # applying twice: no change


def test_a_profile_key_params_yaml_lacks_is_an_error(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "typo.yaml").write_text("train: {epoch: 100}\n")
    with pytest.raises(ParamsError, match="train.epoch is not a key of params.yaml"):
        apply_profile(tmp_path / "typo.yaml", tmp_path / "params.yaml")
    assert (tmp_path / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()


def test_a_dataset_of_ones_own_is_an_entry_under_data(params, tmp_path):
    (tmp_path / "kaggle4").mkdir()
    params["data"]["kaggle4"] = {"source": "path", "path": str(tmp_path / "kaggle4")}
    params["datasets"] = ["br35h", "kaggle4"]
    validate(params, root=ROOT)
    params["data"]["kaggle4"]["source"] = "synthetic"  # only the paper's datasets have a generator
    with pytest.raises(ParamsError, match="data.kaggle4.source"):
        validate(params, root=ROOT)
    params["data"]["kaggle4"]["source"] = "path"
    params["datasets"] = ["br35h", "kaggle5"]
    with pytest.raises(ParamsError, match="a dataset of your own needs one too"):
        validate(params, root=ROOT)
    params["datasets"] = ["br35h"]
    params["data"]["Kaggle-4"] = params["data"].pop("kaggle4")  # "-" would break variant names
    with pytest.raises(ParamsError, match="lower-case letters, digits and _"):
        validate(params, root=ROOT)


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("datasets", ["br35h", "mnist"], "datasets"),
        ("models", ["resnet19"], "models"),
        ("inits", ["random"], "inits"),
        ("data.image_size", 16, "data.image_size"),
        ("data.max_unreadable", 1.5, "data.max_unreadable"),
        ("data.br35h.source", "ftp", "data.br35h.source"),
        ("data.figshare.source", "path", "data.figshare.path"),
        ("split.val_fraction", 0.0, "split.val_fraction"),
        ("split.val_fraction", 1.0, "split.val_fraction"),
        ("split.group_by", "hospital", "split.group_by"),
        ("grouped.datasets", ["kaggle4"], "grouped.datasets"),  # not one of datasets
        ("grouped.datasets", ["br35h", "br35h"], "grouped.datasets"),
        ("grouped.models", ["resnet19"], "grouped.models"),
        ("train.epochs", -1, "train.epochs"),
        ("train.batch_size", 0, "train.batch_size"),
        ("train.device", "tpu", "train.device"),
        ("train.precision", "fp16", "train.precision"),
        ("train.compile", 1, "train.compile"),
        ("train.compile", "fast", "reduce-overhead"),
    ],
)
def test_invalid_values_name_the_key_and_allowed_values(params, key, value, needle):
    bad = copy.deepcopy(params)
    node = bad
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ParamsError) as error:
        validate(bad, root=ROOT)
    message = str(error.value)
    assert needle in message and "allowed" in message


def test_datasets_changed_alone_names_the_grouped_datasets_fix(params):
    params["grouped"]["datasets"] = ["br35h", "figshare"]
    params["datasets"] = ["figshare"]
    with pytest.raises(
        ParamsError, match=r"grouped.datasets = \['br35h', 'figshare'\].*-S 'grouped.datasets=\[figshare\]'"
    ):
        validate(params, root=ROOT)


@pytest.mark.parametrize("mode", [False, True, "reduce-overhead", "max-autotune"])
def test_compile_takes_a_bool_or_a_torch_compile_mode(params, mode):
    good = copy.deepcopy(params)
    good["train"]["compile"] = mode
    validate(good, root=ROOT)


def test_path_source_must_exist(params, tmp_path):
    params["data"]["br35h"].update(source="path", path="no/such/folder")
    with pytest.raises(ParamsError, match="data.br35h.path"):
        validate(params, root=ROOT)
    (tmp_path / "copy").mkdir()
    params["data"]["br35h"]["path"] = str(tmp_path / "copy")
    validate(params, root=ROOT)


def test_dvc_yaml_train_stage_lists_exactly_the_params_training_hashes():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    listed = [p.replace("${item.init}", "scratch") for p in stages["train"]["params"]]
    assert listed == train_param_keys("scratch")
