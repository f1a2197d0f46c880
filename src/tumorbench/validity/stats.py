"""How much of a difference in the tables is noise.

- `bootstrap_ci`: percentile confidence intervals of every metric, resampling
  validation images with replacement;
- `mcnemar_exact`: exact McNemar test of two models on the same images.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

from tumorbench.models.metrics import METRICS, as_labels, macro_scores, sample_losses


def bootstrap_ci(
    y_true, y_pred, probs, num_classes: int, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of accuracy, macro F1/precision/recall and loss."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    values = bootstrap_values(y_true, y_pred, probs, num_classes, n_resamples, seed)
    tail = (1 - level) / 2 * 100
    intervals = {}
    for name in METRICS:
        low, high = np.percentile(values[name], [tail, 100 - tail])
        intervals[name] = (float(low), float(high))
    return intervals


def bootstrap_difference(
    a: tuple, b: tuple, num_classes: int, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict]:
    """Each metric of a minus b, with its percentile bootstrap interval and a two-sided bootstrap p-value,
    for two *different* sets of images (a, b = (y_true, y_pred, probs)), e.g. the validation sets of two
    splits. No image is in both, so a paired test (McNemar) does not apply: each set is resampled on its
    own (independently, seeds `seed` and `seed + 1`) and the differences of the resampled metrics
    estimate the difference's spread. p is twice the smaller share of differences on either side of 0
    (with the usual +1 for the observed value), at most 1."""
    first = bootstrap_values(*a, num_classes, n_resamples, seed)
    second = bootstrap_values(*b, num_classes, n_resamples, seed + 1)
    observed_a = bootstrap_values(*a, num_classes, None)
    observed_b = bootstrap_values(*b, num_classes, None)
    tail = (1 - level) / 2 * 100
    out = {}
    for name in METRICS:
        spread = first[name] - second[name]
        low, high = np.percentile(spread, [tail, 100 - tail])
        side = min(np.sum(spread <= 0), np.sum(spread >= 0))
        out[name] = {
            "difference": float(observed_a[name][0] - observed_b[name][0]),
            "ci": (float(low), float(high)),
            "p_value": float(min(1.0, 2 * (side + 1) / (n_resamples + 1))),
        }
    return out


def bootstrap_values(
    y_true, y_pred, probs, num_classes: int, n_resamples: int | None = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Every metric of `n_resamples` bootstrap resamples (n_resamples=None: of the images as they are).

    Each resample draws N images with replacement (numpy default_rng(seed)).
    A resample is summarised by how often it drew each image; its confusion
    matrix is then a weighted count of the (true, predicted) cells, so all
    resamples are scored at once with one matrix product.
    """
    if n_resamples is not None and n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    y_true = as_labels(y_true, num_classes, "y_true")
    y_pred = as_labels(y_pred, num_classes, "y_pred")
    losses = sample_losses(y_true, probs, num_classes)
    n = y_true.size
    if n == 0 or y_pred.size != n:
        raise ValueError(f"need equally long, non-empty y_true and y_pred; got {n} and {y_pred.size}")

    if n_resamples is None:
        times_drawn = np.ones((1, n))
    else:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, n, size=(n_resamples, n))
        offsets = np.arange(n_resamples)[:, None] * n
        times_drawn = np.bincount((draws + offsets).ravel(), minlength=n_resamples * n)
        times_drawn = times_drawn.reshape(n_resamples, n).astype(np.float64)

    cell_of_image = np.zeros((n, num_classes * num_classes))
    cell_of_image[np.arange(n), y_true * num_classes + y_pred] = 1.0
    matrices = (times_drawn @ cell_of_image).reshape(len(times_drawn), num_classes, num_classes)

    values = macro_scores(matrices)
    values["loss"] = times_drawn @ losses / n
    return values


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
