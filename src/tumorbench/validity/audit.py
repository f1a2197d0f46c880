"""Could the paper's binary rows be dataset-level macro metrics of 1200 images?

A binary validation set of N images with n_pos positives (label 1) and
n_neg = N - n_pos negatives has one confusion matrix per (tp, tn):
fn = n_pos - tp, fp = n_neg - tn. `audit_row` finds every matrix whose
accuracy and macro F1, precision and recall all round to the published six
digits, and the closest matrix when none does.

The search is exhaustive but ordered: accuracy depends only on the number of
correct images s = tp + tn, and a matrix's error (the largest absolute
difference over the four metrics) is at least its accuracy error |s/N - a|.
So the diagonals s are visited in order of accuracy error, each one whole
(every n_pos, every tp), and the search stops once the accuracy error alone
exceeds both the best error found and the rounding tolerance: no matrix left
can match or be closer. The result is the same as scoring all matrices.
"""

from __future__ import annotations

import numpy as np

from tumorbench.core.catalog import PAPER_DATASETS
from tumorbench.models.metrics import macro_scores

SCORES = ("accuracy", "f1", "precision", "recall")
TOLERANCE = 5e-7 + 1e-12  # half a unit of the 6th decimal, plus float slack
NUM_VAL = PAPER_DATASETS["br35h"].num_val  # Br35H: 3000 images, 40% validation
NEAR_BALANCED = range(560, 641)  # positives an unstratified 40% split plausibly draws


def _row_values(row: dict) -> np.ndarray:
    missing = [name for name in SCORES if name not in row]
    if missing:
        raise ValueError(f"row lacks {missing}; it needs {list(SCORES)}")
    return np.array([float(row[name]) for name in SCORES])


def _diagonal(num_val: int, n_pos_values: np.ndarray, correct: int) -> dict[str, np.ndarray]:
    """Every matrix with tp + tn == correct, for every n_pos, and its four scores."""
    n_pos = np.repeat(n_pos_values, num_val + 1)
    tp = np.tile(np.arange(num_val + 1), n_pos_values.size)
    tn = correct - tp
    n_neg = num_val - n_pos
    keep = (tp <= n_pos) & (tn >= 0) & (tn <= n_neg)
    n_pos, tp, tn, n_neg = n_pos[keep], tp[keep], tn[keep], n_neg[keep]
    fn, fp = n_pos - tp, n_neg - tn
    matrices = np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], -2)  # rows = true 0, 1
    scores = macro_scores(matrices)
    return {
        "n_pos": n_pos,
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
        "scores": np.stack([scores[name] for name in SCORES], -1),
    }


def _matrix(diagonal: dict, i: int, values: np.ndarray) -> dict:
    matrix = {key: int(diagonal[key][i]) for key in ("n_pos", "tp", "fn", "tn", "fp")}
    matrix.update({name: float(diagonal["scores"][i, j]) for j, name in enumerate(SCORES)})
    matrix["error"] = float(np.abs(diagonal["scores"][i] - values).max())
    return matrix


def audit_row(row: dict, num_val: int = NUM_VAL, n_pos_values=NEAR_BALANCED) -> dict:
    """Search all binary confusion matrices for ones reproducing a published row.

    row: accuracy, f1, precision, recall (numbers or strings, six decimals).
    Returns consistent (bool), matches (count), balanced_matches (those with
    n_pos = num_val / 2, a stratified split), example (a matching matrix or
    None), closest (the matrix with the smallest max-abs error, ties: first
    found) and closest_error. Matrices are dicts n_pos, tp, fn, tn, fp plus
    their four scores and error.
    """
    values = _row_values(row)
    n_pos_values = np.asarray(list(n_pos_values), dtype=np.int64)
    if n_pos_values.size == 0 or n_pos_values.min() < 0 or n_pos_values.max() > num_val:
        raise ValueError(f"n_pos_values must lie in 0..{num_val}")
    order = np.argsort(np.abs(np.arange(num_val + 1) / num_val - values[0]), kind="stable")
    matches, balanced_matches, example, closest = 0, 0, None, None
    for correct in order:
        accuracy_error = abs(correct / num_val - values[0])
        if closest is not None and accuracy_error > max(closest["error"], TOLERANCE):
            break
        diagonal = _diagonal(num_val, n_pos_values, int(correct))
        if diagonal["tp"].size == 0:
            continue
        errors = np.abs(diagonal["scores"] - values).max(axis=1)
        hits = np.flatnonzero(errors <= TOLERANCE)
        matches += hits.size
        balanced_matches += int(np.sum(2 * diagonal["n_pos"][hits] == num_val))
        if example is None and hits.size:
            example = _matrix(diagonal, int(hits[0]), values)
        best = int(np.argmin(errors))
        if closest is None or errors[best] < closest["error"]:
            closest = _matrix(diagonal, best, values)
    return {
        "consistent": matches > 0,
        "matches": matches,
        "balanced_matches": balanced_matches,
        "example": example,
        "closest": closest,
        "closest_error": closest["error"],
    }


def check_row_internal(row: dict, class_counts: tuple[int, int] = (600, 600)) -> dict:
    """Necessary conditions for a binary row to be dataset-level macro metrics.

    With n_c images of class c, E errors in all, and per-class precision P_c,
    recall R_c, F1_c = 2 P_c R_c / (P_c + R_c):

    1. accuracy = (N - E) / N, so accuracy * N is an integer.
    2. Balanced classes (n_0 = n_1 = n): macro recall = (tp/n + tn/n) / 2 =
       (tp + tn) / N = accuracy.
    3. A harmonic mean is at most the arithmetic one, so
       F1 <= (precision + recall) / 2 (macro means of per-class values).
    4. The gap (P + R)/2 - F1 is the mean over classes of
       (P_c - R_c)^2 / (2 (P_c + R_c)). In binary fn_c + fp_c = E, and
       P_c - R_c = P_c (fn_c - fp_c) / n_c, so |P_c - R_c| <= E / n_c; both
       P_c and R_c are >= 1 - E / n_c when E <= n_c. Hence
       gap <= max_c (E/n_c)^2 / (4 (1 - E/n_c)).
       Solving x^2 / (4 (1 - x)) = gap for x = E / n gives
       x = 2 (sqrt(gap^2 + gap) - gap): a published gap needs a class of at
       most E / x images (`smallest_class_at_most`), whatever the split.
    Published values are rounded to 6 decimals (error <= 5e-7 each), so each
    comparison allows the rounding error of the values it combines.
    """
    accuracy, f1, precision, recall = _row_values(row)
    n_0, n_1 = class_counts
    num_val = n_0 + n_1
    correct = round(accuracy * num_val)
    errors = num_val - correct
    gap = (precision + recall) / 2 - f1
    x = errors / min(n_0, n_1)
    gap_bound = x * x / (4 * (1 - x)) if x < 1 else float("inf")
    slack_gap = gap - 2 * TOLERANCE
    x_needed = 2 * (np.sqrt(slack_gap**2 + slack_gap) - slack_gap) if slack_gap > 0 else 0.0
    smallest_class_at_most = errors / x_needed if x_needed > 0 else float("inf")
    checks = {
        "accuracy_is_multiple_of_1_over_n": bool(abs(accuracy * num_val - correct) <= TOLERANCE * num_val),
        "f1_at_most_mean_of_precision_recall": bool(gap >= -2 * TOLERANCE),
        "f1_gap_within_bound": bool(gap <= gap_bound + 2 * TOLERANCE),
    }
    if n_0 == n_1:
        checks["recall_equals_accuracy"] = bool(abs(recall - accuracy) <= 2 * TOLERANCE)
    return {
        "consistent": all(checks.values()),
        "checks": checks,
        "errors": int(errors),
        "recall_minus_accuracy": float(recall - accuracy),
        "f1_gap": float(gap),
        "f1_gap_bound": float(gap_bound),
        "smallest_class_at_most": float(smallest_class_at_most),
    }


def audit_rows(rows: list[dict], num_val: int = NUM_VAL, n_pos_values=NEAR_BALANCED) -> list[dict]:
    """`audit_row` and `check_row_internal` (600/600) of each row, keeping the row's own keys."""
    results = []
    for row in rows:
        result = dict(row)
        result.update(audit_row(row, num_val, n_pos_values))
        result["internal"] = check_row_internal(row, (num_val // 2, num_val - num_val // 2))
        results.append(result)
    return results
