"""Classification metrics on a validation set, computed with numpy.

Two ways of averaging are implemented on purpose:

- `dataset_metrics`: one confusion matrix for the whole validation set, then
  macro averages over all classes (what a paper's table should report);
- `batch_mean_metrics`: sklearn's macro metrics computed per batch, then the
  plain mean over batches (what the paper's numbers suggest it did: see
  validity/audit.py).

All functions take integer labels 0..K-1 and softmax probabilities (N, K).
"""

from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "f1", "precision", "recall", "loss")
PROB_FLOOR = 1e-12  # log(0) guard for the cross-entropy


def as_labels(values, num_classes: int, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {values.shape}")
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"{name} has labels outside 0..{num_classes - 1}: min {values.min()}, max {values.max()}")
    return values.astype(np.int64)


def confusion(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    y_true = as_labels(y_true, num_classes, "y_true")
    y_pred = as_labels(y_pred, num_classes, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.size} vs {y_pred.size}")
    cells = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return cells.reshape(num_classes, num_classes)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 of one or many confusion matrices (..., K, K).

    F1 = 2 tp / (2 tp + fp + fn), sklearn's formula; 0 where it is 0/0.
    """
    cm = np.asarray(cm)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    predicted = cm.sum(axis=-2)  # column sums: tp + fp
    actual = cm.sum(axis=-1)  # row sums: tp + fn
    return {
        "precision": _divide(tp, predicted),
        "recall": _divide(tp, actual),
        "f1": _divide(2 * tp, predicted + actual),
    }


def macro_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy and macro precision, recall, F1 over all K classes of (..., K, K) matrices."""
    cm = np.asarray(cm)
    scores = {name: values.mean(axis=-1) for name, values in per_class_scores(cm).items()}
    scores["accuracy"] = _divide(np.trace(cm, axis1=-2, axis2=-1), cm.sum(axis=(-2, -1)))
    return scores


def scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """accuracy and macro precision, recall, F1 (mean of per-class F1) of one matrix."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {cm.shape}")
    scores = macro_scores(cm)
    return {name: float(scores[name]) for name in ("accuracy", "precision", "recall", "f1")}


def _check_probs(probs, n: int, num_classes: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (n, num_classes):
        raise ValueError(f"probs must have shape ({n}, {num_classes}), got {probs.shape}")
    return probs


def sample_losses(y_true, probs, num_classes: int) -> np.ndarray:
    """Cross-entropy of each sample, -log p(true class), probabilities floored at 1e-12."""
    y_true = as_labels(y_true, num_classes, "y_true")
    probs = _check_probs(probs, y_true.size, num_classes)
    return -np.log(np.clip(probs[np.arange(y_true.size), y_true], PROB_FLOOR, None))


def dataset_metrics(y_true, y_pred, probs, num_classes: int) -> dict[str, float]:
    """Accuracy, macro F1/precision/recall over all classes, and mean cross-entropy."""
    scores = scores_from_confusion(confusion(y_true, y_pred, num_classes))
    scores["loss"] = float(sample_losses(y_true, probs, num_classes).mean())
    return {name: scores[name] for name in METRICS}


def batch_mean_metrics(y_true, y_pred, probs, batch_size: int) -> dict[str, float]:
    """The plain mean over consecutive batches of per-batch metrics.

    Each batch (in the given order, the last one possibly smaller) is scored as
    `sklearn.metrics.accuracy_score` and `{precision,recall,f1}_score(
    average="macro", zero_division=0)` would score it with their default
    `labels=None`: the macro average runs only over the labels present in that
    batch's y_true or y_pred, so a batch holding one class averages over one
    class. The batch loss is the batch's mean cross-entropy. Every batch counts
    equally in the mean, whatever its size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, K), got shape {probs.shape}")
    num_classes = probs.shape[1]
    y_true = as_labels(y_true, num_classes, "y_true")
    y_pred = as_labels(y_pred, num_classes, "y_pred")
    probs = _check_probs(probs, y_true.size, num_classes)
    if y_true.size == 0:
        raise ValueError("batch_mean_metrics needs at least one sample")
    losses = sample_losses(y_true, probs, num_classes)
    per_batch = {name: [] for name in METRICS}
    for start in range(0, y_true.size, batch_size):
        part = slice(start, start + batch_size)
        cm = confusion(y_true[part], y_pred[part], num_classes)
        present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
        for name, values in per_class_scores(cm).items():
            per_batch[name].append(values[present].mean())
        per_batch["accuracy"].append(np.trace(cm) / cm.sum())
        per_batch["loss"].append(losses[part].mean())
    return {name: float(np.mean(per_batch[name])) for name in METRICS}


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) as sklearn.metrics.roc_curve(positive, scores) gives them (its default
    drop_intermediate=True, first threshold +inf), in numpy: importing scikit-learn costs a stage seconds."""
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, positive = np.asarray(scores, dtype=np.float64)[order], positive[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(scores)), positive.size - 1]  # where the score changes
    tps = np.cumsum(positive)[last_of_value]
    fps = 1 + last_of_value - tps
    thresholds = scores[last_of_value]
    if len(fps) > 2:  # drop points on a straight line between their neighbours, as sklearn does
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps, tps, thresholds = np.r_[0, fps], np.r_[0, tps], np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def roc_points(y_true, probs, num_classes: int, class_names: list[str] | None = None) -> list[dict]:
    """ROC curve points (`roc_curve`), as rows {class, fpr, tpr, threshold}.

    Binary: one curve, positive class 1. More classes: one-vs-rest per class.
    `class` is the class name (or its label as text). sklearn's first
    threshold is +inf (nothing called positive); it is written as 1.0 so the
    rows serialise as plain JSON.
    """
    y_true = as_labels(y_true, num_classes, "y_true")
    probs = _check_probs(probs, y_true.size, num_classes)
    names = class_names or [str(k) for k in range(num_classes)]
    rows = []
    for k in _roc_classes(num_classes):
        fpr, tpr, thresholds = roc_curve(y_true == k, probs[:, k])
        thresholds = np.where(np.isfinite(thresholds), thresholds, 1.0)
        rows += [
            {"class": names[k], "fpr": float(f), "tpr": float(t), "threshold": float(h)}
            for f, t, h in zip(fpr, tpr, thresholds)
        ]
    return rows


def roc_auc_per_class(y_true, probs, num_classes: int, class_names: list[str] | None = None) -> dict[str, float]:
    """Area under each curve of `roc_points` (binary: class 1 only), keyed by class name."""
    y_true = as_labels(y_true, num_classes, "y_true")
    probs = _check_probs(probs, y_true.size, num_classes)
    names = class_names or [str(k) for k in range(num_classes)]
    areas = {}
    for k in _roc_classes(num_classes):
        fpr, tpr, _ = roc_curve(y_true == k, probs[:, k])
        areas[names[k]] = float(np.trapezoid(tpr, fpr))
    return areas


def _roc_classes(num_classes: int) -> list[int]:
    return [1] if num_classes == 2 else list(range(num_classes))
