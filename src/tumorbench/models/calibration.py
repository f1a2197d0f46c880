"""How far a model's probabilities can be taken at their word: calibration error, Brier score, NLL,
the reliability diagram's bins, and temperature scaling.

- `expected_calibration_error`: the top-label ECE of Guo et al. (2017) over equal-width confidence
  bins: sum over bins of (bin size / N) * |accuracy in bin - mean confidence in bin|.
- `brier_score`: the multi-class Brier score, mean over samples of sum_k (p_k - [y = k])^2 (0 best,
  2 worst).
- `negative_log_likelihood`: mean -log p(true class), the validation loss.
- `fit_temperature`: the T > 0 that minimises the NLL of softmax(log p / T) on held-out predictions
  (Guo et al. 2017). It changes no prediction, only how confident each is.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from tumorbench.models.metrics import PROB_FLOOR, sample_losses

ECE_BINS = 15
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _checked(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.size or labels.size == 0:
        raise ValueError(f"probs must have shape (N, K) with N = {labels.size} > 0 labels, got {probs.shape}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}")
    return labels, probs


def reliability_bins(labels, probs, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width bin of top-label confidence: its range, count, mean confidence and accuracy
    (None where the bin is empty)."""
    labels, probs = _checked(labels, probs)
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    # A confidence of exactly 1 belongs to the last bin; bin b holds (b/B, (b+1)/B].
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        rows.append(
            {
                "lower": b / bins,
                "upper": (b + 1) / bins,
                "count": n,
                "confidence": float(confidence[inside].mean()) if n else None,
                "accuracy": float(correct[inside].mean()) if n else None,
            }
        )
    return rows


def expected_calibration_error(labels, probs, bins: int = ECE_BINS) -> float:
    n = np.asarray(labels).size
    return float(
        sum(
            r["count"] / n * abs(r["accuracy"] - r["confidence"])
            for r in reliability_bins(labels, probs, bins)
            if r["count"]
        )
    )


def brier_score(labels, probs) -> float:
    labels, probs = _checked(labels, probs)
    onehot = np.eye(probs.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(1).mean())


def negative_log_likelihood(labels, probs) -> float:
    labels, probs = _checked(labels, probs)
    return float(sample_losses(labels, probs, probs.shape[1]).mean())


def calibration_metrics(labels, probs) -> dict[str, float]:
    """The keys `ece`, `brier` and `nll` of metrics/<variant>.json."""
    return {
        "ece": expected_calibration_error(labels, probs),
        "brier": brier_score(labels, probs),
        "nll": negative_log_likelihood(labels, probs),
    }


def scale_probabilities(probs, temperature: float) -> np.ndarray:
    """softmax(log p / T): the probabilities a temperature T gives, the argmax unchanged."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), PROB_FLOOR, None)) / temperature
    logits -= logits.max(1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(1, keepdims=True)


def fit_temperature(labels, probs) -> float:
    """The temperature that minimises the NLL of the given (held-out) predictions, searched over
    log T within TEMPERATURE_BOUNDS."""
    labels, probs = _checked(labels, probs)
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(labels, scale_probabilities(probs, float(np.exp(log_t)))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))
