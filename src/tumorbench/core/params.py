"""Read and check params.yaml, the pipeline's public interface.

Every stage calls `load_params()` first, so an invalid value fails before any
work, with a message naming the key and what it may be.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ruamel.yaml import YAML

from tumorbench.core.catalog import DATA_KEYS, INITS, MODELS, PAPER_DATASETS
from tumorbench.core.errors import UserError

SOURCES = ("synthetic", "url", "kaggle", "path")  # synthetic: paper datasets only; kaggle: br35h only
OWN_SOURCES = ("url", "path")  # a dataset of the user's own
DATASET_NAME = re.compile(r"[a-z][a-z0-9_]*")  # it becomes part of paths and stage names split at "-"
GROUP_BY = ("none", "patient")  # the paper's split: it never reads the duplicate audit
GROUPED_BY = ("patient", "duplicates", "patient+duplicates")  # the grouped split
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")
# train.compile: true or false, or one of torch.compile's named modes
COMPILE_MODES = ("reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
INTERPOLATIONS = ("nearest", "bilinear")


class ParamsError(UserError, ValueError):
    """An invalid value in params.yaml."""


def _get(params: dict, key: str):
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"params.yaml: missing key '{key}'")
        node = node[part]
    return node


def _fail(key: str, value, allowed: str):
    raise ParamsError(f"params.yaml: {key} = {value!r} is invalid; allowed: {allowed}")


def _check_list(params, key, allowed, hint=""):
    values = _get(params, key)
    if not isinstance(values, list) or not values:
        _fail(key, values, f"a non-empty list drawn from {list(allowed)}")
    for value in values:
        if value not in allowed:
            _fail(key, value, f"any of {list(allowed)}{hint}")
    if len(set(values)) != len(values):
        _fail(key, values, "a list without repeats")


def _check_number(params, key, kind, low=None, high=None, low_open=False, high_open=False, text=""):
    value = _get(params, key)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        _fail(key, value, text or f"a {kind.__name__}")
    if low is not None and (value < low or (low_open and value == low)):
        _fail(key, value, text)
    if high is not None and (value > high or (high_open and value == high)):
        _fail(key, value, text)


def dataset_entries(params: dict) -> list[str]:
    """The datasets params.yaml describes: every key under data: but data's own keys."""
    data = _get(params, "data")
    if not isinstance(data, dict):
        _fail("data", data, "a mapping with image_size, max_unreadable, synthetic and one entry per dataset")
    return [name for name in data if name not in DATA_KEYS]


def _check_dataset(params: dict, name: str, root: Path) -> None:
    key = f"data.{name}"
    spec = _get(params, key)
    if not DATASET_NAME.fullmatch(str(name)):
        _fail(key, spec, "a dataset name of lower-case letters, digits and _ (it names files and stages)")
    if not isinstance(spec, dict):
        _fail(key, spec, "a mapping {source: path, path: <folder or zip>} or {source: url, url: <http(s) URL>}")
    source = spec.get("source")
    allowed = SOURCES if name in PAPER_DATASETS else OWN_SOURCES
    if name != "br35h":
        allowed = tuple(s for s in allowed if s != "kaggle")
    if source not in allowed:
        _fail(f"{key}.source", source, f"one of {list(allowed)} for dataset {name}")
    if source == "url" and not str(spec.get("url") or "").startswith(("http://", "https://")):
        _fail(f"{key}.url", spec.get("url"), "an http(s) URL when source is url")
    if source == "path":
        path = str(spec.get("path") or "")
        if not path or not (root / path).exists():
            _fail(
                f"{key}.path", path, "an existing archive or folder (relative to the project root) when source is path"
            )
    sha = str(spec.get("sha256") or "")
    if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
        _fail(f"{key}.sha256", sha, "empty or 64 hex digits")


def validate(params: dict, root: Path = Path(".")) -> dict:
    for name in dataset_entries(params):
        _check_dataset(params, name, root)
    _check_list(
        params,
        "datasets",
        dataset_entries(params),
        " (the entries under data:); a dataset of your own needs one too, e.g. "
        "data.<name>: {source: path, path: <folder with one subfolder per class>}",
    )
    _check_list(params, "models", MODELS)
    _check_list(params, "inits", INITS)
    _check_number(params, "data.image_size", int, low=32, text="an integer >= 32")
    _check_number(params, "data.max_unreadable", float, 0, 1, high_open=True, text="a fraction in [0, 1)")
    _check_number(params, "data.synthetic.seed", int, text="an integer")
    _check_number(params, "data.synthetic.br35h_per_class", int, low=2, text="an integer >= 2")
    per_class = _get(params, "data.synthetic.figshare_per_class")
    if not (
        isinstance(per_class, list) and len(per_class) == 3 and all(isinstance(n, int) and n >= 2 for n in per_class)
    ):
        _fail("data.synthetic.figshare_per_class", per_class, "three integers >= 2")
    _check_number(params, "data.synthetic.figshare_patients", int, low=3, text="an integer >= 3")
    _check_number(params, "data.synthetic.figshare_size", int, low=32, text="an integer >= 32")
    _check_number(params, "split.val_fraction", float, 0, 1, low_open=True, high_open=True, text="a fraction in (0, 1)")
    _check_number(params, "split.seed", int, text="an integer")
    group_by = _get(params, "split.group_by")
    if group_by in GROUPED_BY[1:]:
        _fail(
            "split.group_by",
            group_by,
            f"one of {list(GROUP_BY)}: the paper's split does not read the duplicate "
            "audit, so a new duplicates.threshold never reruns its grid; set grouped.group_by to train the "
            "same variants on a split that keeps duplicates together, beside the paper's",
        )
    if group_by not in GROUP_BY:
        _fail("split.group_by", group_by, f"one of {list(GROUP_BY)}")
    _check_duplicates_and_grouped(params)
    _check_explain(params)
    _check_cv(params)
    _check_external(params, root)
    _check_number(params, "train.epochs", int, low=1, text="an integer >= 1")
    _check_number(params, "train.batch_size", int, low=1, text="an integer >= 1")
    _check_number(params, "train.lr", float, 0, low_open=True, text="a number > 0")
    _check_number(params, "train.step_size", int, low=1, text="an integer >= 1")
    _check_number(params, "train.gamma", float, 0, low_open=True, text="a number > 0")
    _check_number(params, "train.seed", int, text="an integer")
    if _get(params, "train.device") not in DEVICES:
        _fail("train.device", _get(params, "train.device"), f"one of {list(DEVICES)}")
    if _get(params, "train.precision") not in PRECISIONS:
        _fail("train.precision", _get(params, "train.precision"), f"one of {list(PRECISIONS)}")
    if _get(params, "augment.interpolation") not in INTERPOLATIONS:
        _fail("augment.interpolation", _get(params, "augment.interpolation"), f"one of {list(INTERPOLATIONS)}")
    compile_mode = _get(params, "train.compile")
    if not (isinstance(compile_mode, bool) or compile_mode in COMPILE_MODES):
        _fail("train.compile", compile_mode, f"true, false or one of {list(COMPILE_MODES)}")
    _check_number(
        params,
        "efficientnet.bn_momentum",
        float,
        0,
        1,
        low_open=True,
        text="a momentum in (0, 1]",
    )
    _check_number(params, "augment.rotation", float, 0, 180, text="degrees in [0, 180]")
    _check_number(params, "augment.hflip", float, 0, 1, text="a probability in [0, 1]")
    _check_number(params, "augment.vflip", float, 0, 1, text="a probability in [0, 1]")
    for init in INITS:
        for stat in ("mean", "std"):
            key = f"normalize.{init}.{stat}"
            value = _get(params, key)
            if not (
                isinstance(value, list)
                and len(value) == 3
                and all(isinstance(v, (int, float)) for v in value)
                and (stat == "mean" or all(v > 0 for v in value))
            ):
                _fail(key, value, "three numbers" + (" > 0" if stat == "std" else ""))
    _check_number(params, "eval.batch_size", int, low=1, text="an integer >= 1")
    _check_number(params, "eval.bootstrap", int, low=1, text="an integer >= 1")
    _check_number(params, "eval.seed", int, text="an integer")
    return params


def _check_duplicates_and_grouped(params: dict) -> None:
    _check_number(params, "duplicates.threshold", int, 0, 16, text="an integer in 0..16 (pHash bits of 64)")
    if not isinstance(_get(params, "duplicates.flips"), bool):
        _fail("duplicates.flips", _get(params, "duplicates.flips"), "true or false")
    group_by = _get(params, "grouped.group_by")
    per_dataset = group_by if isinstance(group_by, dict) else dict.fromkeys(params["datasets"], group_by)
    for dataset, value in per_dataset.items():
        key = f"grouped.group_by.{dataset}" if isinstance(group_by, dict) else "grouped.group_by"
        if value not in GROUPED_BY:
            _fail(key, value, f"one of {list(GROUPED_BY)}, or one of them per dataset {{br35h: ..., figshare: ...}}")
    missing = [d for d in params["datasets"] if d not in per_dataset]
    if missing:
        _fail("grouped.group_by", group_by, f"a value for every dataset of datasets (missing: {missing})")
    _check_grid_lists(params, "grouped")


def _check_grid_lists(params: dict, section: str) -> None:
    """<section>.datasets, .models and .inits: lists without repeats drawn from datasets, the catalog's
    models and inits."""
    lists = ((f"{section}.datasets", params["datasets"]), (f"{section}.models", MODELS), (f"{section}.inits", INITS))
    for key, allowed in lists:
        values = _get(params, key)
        if not isinstance(values, list) or any(v not in allowed for v in values) or len(set(values)) != len(values):
            source, fix = list(allowed), ""
            if key == f"{section}.datasets":  # datasets changed alone, as with dvc exp run -S datasets=[...]
                kept = [d for d in dict.fromkeys(values) if d in allowed] if isinstance(values, list) else []
                source, fix = f"datasets {list(allowed)}", f", e.g. -S '{key}=[{','.join(kept)}]'"
            _fail(key, values, f"a list (empty for none) without repeats drawn from {source}{fix}")


def _check_cv(params: dict) -> None:
    folds = _get(params, "cv.folds")
    if not (isinstance(folds, list) and len(folds) >= 2 and folds == list(range(1, len(folds) + 1))):
        _fail("cv.folds", folds, "the fold numbers 1..k for k >= 2, e.g. [1, 2, 3, 4, 5]")
    _check_number(params, "cv.seed", int, text="an integer")
    _check_grid_lists(params, "cv")


def _check_explain(params: dict) -> None:
    _check_number(params, "explain.samples", int, low=0, text="an integer >= 0")
    _check_number(params, "explain.max_images", int, low=0, text="an integer >= 0 (0: all)")
    _check_number(params, "explain.seed", int, text="an integer")
    masks = _get(params, "explain.masks")
    if masks is None:
        masks = params["explain"]["masks"] = {}
    if not isinstance(masks, dict) or not all(isinstance(v, str) and v for v in masks.values()):
        _fail("explain.masks", masks, "a mapping {<dataset>: <VIA annotation file>}, {} for none")


def grouped_by(params: dict, dataset: str) -> str:
    """grouped.group_by for one dataset (a plain value applies to every dataset)."""
    value = params["grouped"]["group_by"]
    return value[dataset] if isinstance(value, dict) else value


def _check_external(params: dict, root: Path) -> None:
    external = _get(params, "external")
    if not isinstance(external, dict):
        _fail("external", external, "a mapping of test sets, {name: {path, dataset, classes}}; {} for none")
    for name, spec in external.items():
        key = f"external.{name}"
        if not DATASET_NAME.fullmatch(str(name)):
            _fail(key, spec, "a name of lower-case letters, digits and _ (it names a folder and a stage)")
        if not isinstance(spec, dict) or set(spec) != {"path", "dataset", "classes"}:
            _fail(
                key,
                spec,
                "exactly {path: <folder of class folders>, dataset: <one of datasets>, "
                "classes: {<folder>: <a class of that dataset>, ...}}",
            )
        if spec["dataset"] not in params["datasets"]:
            _fail(f"{key}.dataset", spec["dataset"], f"one of datasets {params['datasets']} (its models are tested)")
        classes = spec["classes"]
        if not isinstance(classes, dict) or not classes or not all(isinstance(v, str) for v in classes.values()):
            _fail(f"{key}.classes", classes, "a non-empty mapping {<folder name>: <class name of the dataset>}")
        known = PAPER_DATASETS[spec["dataset"]].classes if spec["dataset"] in PAPER_DATASETS else None
        unknown = sorted({v for v in classes.values() if known and v not in known})
        if unknown:
            _fail(f"{key}.classes", classes, f"classes of {spec['dataset']} {list(known)} (not {unknown})")
        if not isinstance(spec["path"], str) or not spec["path"]:
            _fail(f"{key}.path", spec["path"], "a folder holding one folder per class")


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run the stages from the project root")
    # YAML 1.2, as DVC reads it: `dvc exp run -S` writes params.yaml back without quotes, and to a YAML
    # 1.1 reader (PyYAML) Br35H's class names no and yes would then be booleans.
    params = YAML(typ="safe", pure=True).load(path.read_text())
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of keys, got {type(params).__name__}")
    return validate(params, root=path.parent)


def check_dataset_arg(params: dict, dataset: str) -> None:
    """A stage run by hand for a dataset that params.yaml does not list fails here, naming the list."""
    if dataset not in params["datasets"]:
        raise ParamsError(f"dataset {dataset!r} is not in params.yaml datasets {params['datasets']}; add it there")


def select(params: dict, keys: list[str]) -> dict:
    """The values of `keys` (dotted), keyed as dvc.lock records a stage's params."""
    return {key: _get(params, key) for key in keys}


def params_hash(selected: dict) -> str:
    """sha256 of the canonical JSON of selected params (recomputable from dvc.lock)."""
    text = json.dumps(selected, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def train_param_keys(init: str) -> list[str]:
    """The params a train stage uses; dvc.yaml lists the same keys (a test checks)."""
    return ["train", "augment", "efficientnet", "eval.batch_size", f"normalize.{init}"]
