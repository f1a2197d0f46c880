import time

import numpy as np
import pytest
from scipy.stats import ttest_rel

from tumorbench.models.metrics import dataset_metrics
from tumorbench.validity.stats import bootstrap_ci, corrected_resampled_t_test, holm, mcnemar_exact, t_interval


def _predictions(n, accuracy, num_classes, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, num_classes, n)
    wrong = rng.random(n) >= accuracy
    y_pred = np.where(wrong, (y_true + 1 + rng.integers(0, num_classes - 1, n)) % num_classes, y_true)
    probs = np.full((n, num_classes), 0.2 / (num_classes - 1))
    probs[np.arange(n), y_pred] = 0.8
    return y_true, y_pred, probs


def _pairs(b, c, both_right=10, both_wrong=3):
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    other = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return np.array(a), np.array(other)


@pytest.mark.parametrize(
    "b,c,p", [(0, 6, 2 * 0.5**6), (1, 5, 0.21875), (6, 0, 0.03125), (3, 3, 1.0), (0, 0, 1.0), (0, 1, 1.0)]
)
def test_mcnemar_known_answers(b, c, p):
    result = mcnemar_exact(*_pairs(b, c))
    assert result == {"b": b, "c": c, "p_value": pytest.approx(p, abs=1e-12)}


def test_mcnemar_larger_case_matches_binomial_sum():
    from math import comb

    b, c = 4, 17
    expected = 2 * sum(comb(b + c, k) for k in range(b + 1)) / 2 ** (b + c)
    assert mcnemar_exact(*_pairs(b, c))["p_value"] == pytest.approx(expected, rel=1e-12)


def test_mcnemar_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="equal length"):
        mcnemar_exact([True, False], [True])


def test_bootstrap_of_a_perfect_classifier_is_degenerate():
    y = np.array([0, 1] * 50)
    probs = np.eye(2)[y] * 0.9 + 0.05
    ci = bootstrap_ci(y, y, probs, 2, n_resamples=200, seed=1)
    for name in ("accuracy", "f1", "precision", "recall"):
        assert ci[name] == (1.0, 1.0)
    assert ci["loss"][0] == pytest.approx(-np.log(0.95)) and ci["loss"][1] == pytest.approx(-np.log(0.95))


def test_bootstrap_is_seeded_and_contains_the_point_estimate():
    y_true, y_pred, probs = _predictions(1200, 0.97, 3, seed=0)
    first = bootstrap_ci(y_true, y_pred, probs, 3, n_resamples=300, seed=5)
    assert first == bootstrap_ci(y_true, y_pred, probs, 3, n_resamples=300, seed=5)
    assert first != bootstrap_ci(y_true, y_pred, probs, 3, n_resamples=300, seed=6)
    point = dataset_metrics(y_true, y_pred, probs, 3)
    for name, (low, high) in first.items():
        assert low < point[name] < high, name


def test_bootstrap_width_matches_binomial_standard_error():
    n, p = 1200, 0.9
    y_true, y_pred, probs = _predictions(n, p, 2, seed=11)
    accuracy = np.mean(y_true == y_pred)
    low, high = bootstrap_ci(y_true, y_pred, probs, 2, n_resamples=2000, seed=0)["accuracy"]
    expected = 2 * 1.96 * np.sqrt(accuracy * (1 - accuracy) / n)
    assert high - low == pytest.approx(expected, rel=0.1)


def test_bootstrap_accuracy_matches_resampling_by_hand():
    y_true, y_pred, probs = _predictions(50, 0.8, 2, seed=2)
    ci = bootstrap_ci(y_true, y_pred, probs, 2, n_resamples=500, seed=3)
    rng = np.random.default_rng(3)
    draws = rng.integers(0, 50, size=(500, 50))
    by_hand = [dataset_metrics(y_true[d], y_pred[d], probs[d], 2) for d in draws]
    for name in ci:
        values = [m[name] for m in by_hand]
        assert ci[name] == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12), name


def test_bootstrap_of_1000_resamples_of_1200_images_is_fast():
    y_true, y_pred, probs = _predictions(1200, 0.95, 3, seed=4)
    start = time.perf_counter()
    bootstrap_ci(y_true, y_pred, probs, 3, n_resamples=1000, seed=0)
    assert time.perf_counter() - start < 1.0


def test_holm_known_answer():
    # sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> kept monotone at 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_corrected_t_test_by_hand_and_wider_than_the_plain_one():
    a = [0.90, 0.92, 0.88, 0.91, 0.89]
    b = [0.85, 0.86, 0.86, 0.87, 0.84]
    result = corrected_resampled_t_test(a, b, test_fraction=0.2)
    # d = .05 .06 .02 .04 .05: mean .044, var 230e-6; (1/5 + .2/.8) * var = 103.5e-6
    assert result["mean_diff"] == pytest.approx(0.044)
    assert result["t"] == pytest.approx(0.044 / np.sqrt(103.5e-6))
    plain = ttest_rel(a, b)
    assert plain.statistic == pytest.approx(0.044 / np.sqrt(230e-6 / 5))
    assert plain.pvalue < result["p"] < 0.05
    assert corrected_resampled_t_test(b, a, 0.2)["p"] == pytest.approx(result["p"])


def test_corrected_t_test_edge_cases():
    assert corrected_resampled_t_test([0.9, 0.8], [0.9, 0.8], 0.5)["p"] == 1.0
    assert corrected_resampled_t_test([1.0, 0.5], [0.5, 0.0], 0.5)["p"] == 0.0
    assert corrected_resampled_t_test([1.0, 0.5], [0.5, 0.0], 0.5)["t"] == np.inf
    assert corrected_resampled_t_test([0.5, 0.0], [1.0, 0.5], 0.5)["t"] == -np.inf  # b better: the sign says so
    with pytest.raises(ValueError, match="2 or more"):
        corrected_resampled_t_test([0.9], [0.8], 0.2)


def test_t_interval_known_answer():
    result = t_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.302653
    assert result["mean"] == 2.0 and result["sd"] == pytest.approx(1.0)
    assert result["ci"] == pytest.approx([2 - 4.302653 / np.sqrt(3), 2 + 4.302653 / np.sqrt(3)], rel=1e-6)
