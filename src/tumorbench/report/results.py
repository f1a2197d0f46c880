"""Reading what the evaluate stages wrote: metrics, predictions, DVCLive logs (for the report)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tumorbench.core.errors import UserError
from tumorbench.models.metrics import METRICS


class ReportInputError(UserError, ValueError):
    """An evaluate stage's output the report cannot use; the message says what to rerun."""


def read_metrics(path: Path) -> dict:
    with open(path) as f:
        metrics = json.load(f)
    needed = [*METRICS, "batch", "provenance"]
    missing = [key for key in needed if key not in metrics]
    if missing:
        raise ReportInputError(f"{path}: missing keys {missing}; rerun the evaluate stage that writes it")
    return metrics


def read_predictions(path: Path) -> dict:
    """sample_id (str array), label, pred (int arrays), probs (N, K) and class_names (from its actual
    column, where there is one) of a predictions CSV."""
    if not path.exists():
        raise ReportInputError(
            f"{path} not found: the evaluate stage writes it beside metrics/{path.stem}.json; rerun `dvc repro`"
        )
    frame = pd.read_csv(path, dtype={"sample_id": str})
    prob_columns = sorted((c for c in frame.columns if c.startswith("prob_")), key=lambda c: int(c.split("_")[1]))
    expected = [f"prob_{k}" for k in range(len(prob_columns))]
    if not {"sample_id", "label", "pred"} <= set(frame.columns) or prob_columns != expected or len(prob_columns) < 2:
        raise ReportInputError(
            f"{path}: expected columns sample_id,label,pred,prob_0..prob_K-1, got {list(frame.columns)}"
        )
    names = dict(zip(frame["label"], frame["actual"])) if "actual" in frame.columns else {}
    return {
        "class_names": [names.get(k, str(k)) for k in range(len(prob_columns))],
        "sample_id": frame["sample_id"].to_numpy(),
        "label": frame["label"].to_numpy(np.int64),
        "pred": frame["pred"].to_numpy(np.int64),
        "probs": frame[prob_columns].to_numpy(np.float64),
    }


def read_dvclive_series(path: Path) -> dict[int, float]:
    """step -> value of a DVCLive metric TSV (value column named after the file)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and ("step" not in rows[0] or path.stem not in rows[0]):
        raise ReportInputError(f"{path}: expected columns step and {path.stem}, got {list(rows[0])}")
    return {int(row["step"]): float(row[path.stem]) for row in rows}
