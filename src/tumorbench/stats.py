"""How much of a difference in the tables is noise.

- `bootstrap_ci`: percentile confidence intervals of every metric, resampling
  validation images with replacement;
- `mcnemar_exact`: exact McNemar test of two models on the same images.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

from tumorbench.metrics import METRICS, as_labels, macro_scores, sample_losses


def bootstrap_ci(
    y_true, y_pred, probs, num_classes: int, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of accuracy, macro F1/precision/recall and loss.

    Each resample draws N images with replacement (numpy default_rng(seed)).
    A resample is summarised by how often it drew each image; its confusion
    matrix is then a weighted count of the (true, predicted) cells, so all
    resamples are scored at once with one matrix product.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    y_true = as_labels(y_true, num_classes, "y_true")
    y_pred = as_labels(y_pred, num_classes, "y_pred")
    losses = sample_losses(y_true, probs, num_classes)
    n = y_true.size
    if n == 0 or y_pred.size != n:
        raise ValueError(f"need equally long, non-empty y_true and y_pred; got {n} and {y_pred.size}")

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    offsets = np.arange(n_resamples)[:, None] * n
    times_drawn = np.bincount((draws + offsets).ravel(), minlength=n_resamples * n)
    times_drawn = times_drawn.reshape(n_resamples, n).astype(np.float64)

    cell_of_image = np.zeros((n, num_classes * num_classes))
    cell_of_image[np.arange(n), y_true * num_classes + y_pred] = 1.0
    matrices = (times_drawn @ cell_of_image).reshape(n_resamples, num_classes, num_classes)

    values = macro_scores(matrices)
    values["loss"] = times_drawn @ losses / n
    tail = (1 - level) / 2 * 100
    intervals = {}
    for name in METRICS:
        low, high = np.percentile(values[name], [tail, 100 - tail])
        intervals[name] = (float(low), float(high))
    return intervals


def mcnemar_exact(correct_a, correct_b) -> dict:
    """Exact two-sided McNemar test of two classifiers on the same images.

    b = images A gets right and B wrong, c = images A gets wrong and B right.
    Under the null hypothesis (equal error rates) b ~ Binomial(b + c, 1/2), so
    p = min(1, 2 * P(X <= min(b, c))); p = 1 when b + c = 0.
    """
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape or correct_a.ndim != 1:
        raise ValueError(f"need two 1-D arrays of equal length, got shapes {correct_a.shape} and {correct_b.shape}")
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    p_value = 1.0 if b + c == 0 else min(1.0, 2 * float(binom.cdf(min(b, c), b + c, 0.5)))
    return {"b": b, "c": c, "p_value": p_value}
