"""Read and check params.yaml, the pipeline's public interface.

Every stage calls `load_params()` first, so an invalid value fails before any
work, with a message naming the key and what it may be.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from tumorbench import DATASETS
from tumorbench.errors import UserError

MODELS = (
    "resnet50",
    "resnet18",
    "resnext50",
    "googlenet",
    "efficientnet-b0",
    "efficientnet-b1",
    "efficientnet-b2",
    "efficientnet-b3",
    "efficientnet-b4",
    "efficientnet-b5",
    "efficientnet-b6",
    "efficientnet-b7",
)
INITS = ("scratch", "imagenet")
SOURCES = ("synthetic", "url", "kaggle", "path")
GROUP_BY = ("none", "patient")
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


def _check_list(params, key, allowed):
    values = _get(params, key)
    if not isinstance(values, list) or not values:
        _fail(key, values, f"a non-empty list drawn from {list(allowed)}")
    for value in values:
        if value not in allowed:
            _fail(key, value, f"any of {list(allowed)}")
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


def validate(params: dict, root: Path = Path(".")) -> dict:
    _check_list(params, "datasets", DATASETS)
    _check_list(params, "models", MODELS)
    _check_list(params, "inits", INITS)
    _check_number(params, "data.image_size", int, low=32, text="an integer >= 32")
    _check_number(params, "data.max_unreadable", float, 0, 1, high_open=True, text="a fraction in [0, 1)")
    for dataset in DATASETS:
        spec = _get(params, f"data.{dataset}")
        source = _get(params, f"data.{dataset}.source")
        if source not in SOURCES:
            _fail(f"data.{dataset}.source", source, f"one of {list(SOURCES)}")
        if source == "url" and not str(spec.get("url") or "").startswith(("http://", "https://")):
            _fail(f"data.{dataset}.url", spec.get("url"), "an http(s) URL when source is url")
        if source == "path":
            path = str(spec.get("path") or "")
            if not path or not (root / path).exists():
                _fail(
                    f"data.{dataset}.path",
                    path,
                    "an existing archive or folder (relative to the project root) when source is path",
                )
        sha = str(spec.get("sha256") or "")
        if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
            _fail(f"data.{dataset}.sha256", sha, "empty or 64 hex digits")
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
    if _get(params, "split.group_by") not in GROUP_BY:
        _fail("split.group_by", _get(params, "split.group_by"), f"one of {list(GROUP_BY)}")
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


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run the stages from the project root")
    with open(path) as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of keys, got {type(params).__name__}")
    return validate(params, root=path.parent)


def select(params: dict, keys: list[str]) -> dict:
    """The values of `keys` (dotted), keyed as dvc.lock records a stage's params."""
    return {key: _get(params, key) for key in keys}


def params_hash(selected: dict) -> str:
    """sha256 of the canonical JSON of selected params (recomputable from dvc.lock)."""
    text = json.dumps(selected, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def train_param_keys(init: str) -> list[str]:
    """The params a train stage uses; dvc.yaml lists the same keys (a test checks)."""
    return ["train", "augment", "eval.batch_size", f"normalize.{init}"]
