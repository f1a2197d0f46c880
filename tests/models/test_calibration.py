import numpy as np
import pytest

from tumorbench.models.calibration import (
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    scale_probabilities,
)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def calibrated_sample(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated at temperature 1 by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, size=(n, k))
    probs = softmax(logits)
    labels = np.array([rng.choice(k, p=p) for p in probs])
    return logits, labels


def test_ece_by_hand():
    # Two bins used of 10: confidence 0.95 (2 samples, 1 right) and 0.65 (2 samples, both right).
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.35, 0.65]])
    labels = np.array([0, 1, 1, 1])
    assert expected_calibration_error(labels, probs, bins=10) == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)
    bins = reliability_bins(labels, probs, bins=10)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert bins[9]["accuracy"] == 0.5 and bins[6]["accuracy"] == 1.0 and bins[0]["confidence"] is None


def test_brier_and_nll_by_hand():
    probs = np.array([[1.0, 0.0, 0.0], [0.2, 0.5, 0.3]])
    labels = np.array([0, 2])
    assert brier_score(labels, probs) == pytest.approx((0 + (0.04 + 0.25 + 0.49)) / 2)
    assert negative_log_likelihood(labels, probs) == pytest.approx(-np.log(0.3) / 2)
    assert set(calibration_metrics(labels, probs)) == {"ece", "brier", "nll"}


def test_a_perfect_and_certain_model_scores_zero():
    labels = np.array([0, 1, 2, 1])
    probs = np.eye(3)[labels]
    assert calibration_metrics(labels, probs) == pytest.approx({"ece": 0.0, "brier": 0.0, "nll": 0.0})


@pytest.mark.parametrize("factor", [0.5, 3.0])
def test_temperature_recovers_a_known_scaling_of_the_logits(factor):
    logits, labels = calibrated_sample(4000, 3, seed=0)
    overconfident = softmax(logits * factor)  # what a model with T = 1/factor too little would output
    temperature = fit_temperature(labels, overconfident)
    assert temperature == pytest.approx(factor, rel=0.08)
    rescaled = scale_probabilities(overconfident, temperature)
    assert (rescaled.argmax(1) == overconfident.argmax(1)).all()
    assert expected_calibration_error(labels, rescaled) < expected_calibration_error(labels, overconfident) / 2


def test_calibrated_predictions_keep_temperature_one():
    logits, labels = calibrated_sample(4000, 2, seed=1)
    assert fit_temperature(labels, softmax(logits)) == pytest.approx(1.0, rel=0.08)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="shape"):
        brier_score([0, 1], np.ones((3, 2)) / 2)
    with pytest.raises(ValueError, match="labels must lie"):
        brier_score([0, 5], np.ones((2, 2)) / 2)
