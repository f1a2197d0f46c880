"""How much of a difference in the tables is noise.

- `bootstrap_ci`: percentile confidence intervals of every metric, resampling
  validation images with replacement;
- `mcnemar_exact`: exact McNemar test of two models on the same images;
- `t_interval`: mean, sd and the 95% t-interval of per-fold scores;
- `corrected_resampled_t_test`: two models over the same cross-validation folds, with Nadeau and
  Bengio's (2003) variance correction for the overlap of the folds' training sets;
- `holm`: Holm's step-down adjustment of a family of p-values.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom
from scipy.stats import t as student_t

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


def t_interval(values, confidence: float = 0.95) -> dict:
    """Mean, sample sd and the two-sided t-interval of the mean of a few per-fold values."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"a t-interval needs 2 or more values, got {values.size}")
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    half = float(student_t.ppf(0.5 + confidence / 2, values.size - 1)) * sd / np.sqrt(values.size)
    return {"mean": mean, "sd": sd, "ci": [mean - half, mean + half]}


def corrected_resampled_t_test(scores_a, scores_b, test_fraction: float) -> dict:
    """Two-sided corrected resampled t-test of per-fold scores of two models on the same folds.

    With d_j the per-fold differences (a - b) over k folds, the plain paired t-test's variance
    sd^2 / k ignores that the folds' training sets overlap and is over-confident; Nadeau and Bengio
    (2003) replace 1/k by 1/k + n_test/n_train, which for k-fold cross-validation is
    1/k + 1/(k - 1): t = mean(d) / sqrt((1/k + n_test/n_train) sd^2), k - 1 degrees of freedom.
    All differences equal: p = 1 when they are 0, else 0 (t = +-inf, the sign of the difference).
    """
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"need two equal-length lists of 2 or more per-fold scores, got {a.shape} and {b.shape}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    diff = a - b
    k, mean, var = diff.size, float(diff.mean()), float(diff.var(ddof=1))
    ratio = test_fraction / (1 - test_fraction)
    if var == 0:
        return {"mean_diff": mean, "t": float(np.sign(mean) * np.inf) if mean else 0.0, "p": 0.0 if mean else 1.0}
    statistic = mean / np.sqrt((1 / k + ratio) * var)
    p = 2 * float(student_t.sf(abs(statistic), k - 1))
    return {"mean_diff": mean, "t": float(statistic), "p": p}


def holm(p_values) -> list[float]:
    """Holm's adjusted p-values, in the order given: the i-th smallest times (m - i), kept monotone
    and capped at 1. Rejecting where the adjusted p < alpha controls the family-wise error at alpha."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()
