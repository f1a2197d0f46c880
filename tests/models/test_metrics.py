import numpy as np
import pytest
from sklearn import metrics as skm

from tumorbench.models.metrics import (
    batch_mean_metrics,
    confusion,
    dataset_metrics,
    roc_auc_per_class,
    roc_curve,
    roc_points,
    scores_from_confusion,
)


def _probs_for(y_pred, num_classes, seed):
    """Softmax-like probabilities whose argmax is y_pred."""
    rng = np.random.default_rng(seed)
    raw = rng.random((len(y_pred), num_classes))
    raw[np.arange(len(y_pred)), y_pred] += num_classes
    return raw / raw.sum(axis=1, keepdims=True)


BINARY_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1])
BINARY_PRED = np.array([0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0])
# Three classes; class 2 is never predicted, so its precision is 0/0 -> 0.
MULTI_TRUE = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1, 2, 1, 0])
MULTI_PRED = np.array([0, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0])


@pytest.mark.parametrize("y_true,y_pred,k", [(BINARY_TRUE, BINARY_PRED, 2), (MULTI_TRUE, MULTI_PRED, 3)])
def test_dataset_metrics_equal_sklearn(y_true, y_pred, k):
    probs = _probs_for(y_pred, k, seed=1)
    ours = dataset_metrics(y_true, y_pred, probs, k)
    labels = list(range(k))
    expected = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "precision": skm.precision_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "recall": skm.recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "f1": skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "loss": skm.log_loss(y_true, probs, labels=labels),
    }
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name
    np.testing.assert_array_equal(confusion(y_true, y_pred, k), skm.confusion_matrix(y_true, y_pred, labels=labels))


def test_macro_f1_is_mean_of_per_class_f1_not_f1_of_means():
    cm = confusion(MULTI_TRUE, MULTI_PRED, 3)
    scores = scores_from_confusion(cm)
    p, r = scores["precision"], scores["recall"]
    assert cm[:, 2].sum() == 0  # the never-predicted class is part of the example
    assert scores["f1"] != pytest.approx(2 * p * r / (p + r), abs=1e-6)


def test_confusion_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="outside 0..1"):
        confusion([0, 1, 2], [0, 1, 1], 2)


def test_loss_clips_zero_probability():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    loss = dataset_metrics([1, 0], [0, 0], probs, 2)["loss"]
    assert loss == pytest.approx((-np.log(1e-12) - np.log(0.5)) / 2)


def _sklearn_batch_mean(y_true, y_pred, probs, batch_size):
    per_batch = []
    for start in range(0, len(y_true), batch_size):
        t, p = y_true[start : start + batch_size], y_pred[start : start + batch_size]
        pr = probs[start : start + batch_size]
        per_batch.append(
            [
                skm.accuracy_score(t, p),
                skm.f1_score(t, p, average="macro", zero_division=0),
                skm.precision_score(t, p, average="macro", zero_division=0),
                skm.recall_score(t, p, average="macro", zero_division=0),
                -np.mean(np.log(pr[np.arange(len(t)), t])),
            ]
        )
    return dict(zip(("accuracy", "f1", "precision", "recall", "loss"), np.mean(per_batch, axis=0)))


@pytest.mark.parametrize("k,batch_size", [(2, 4), (3, 5), (3, 64)])
def test_batch_mean_equals_sklearn_per_batch(k, batch_size):
    rng = np.random.default_rng(k + batch_size)
    y_true = rng.integers(0, k, 43)
    y_pred = np.where(rng.random(43) < 0.8, y_true, rng.integers(0, k, 43))
    probs = _probs_for(y_pred, k, seed=3)
    ours = batch_mean_metrics(y_true, y_pred, probs, batch_size)
    expected = _sklearn_batch_mean(y_true, y_pred, probs, batch_size)
    for name in expected:
        assert ours[name] == pytest.approx(expected[name], abs=1e-12), name


def test_batch_mean_differs_from_dataset_level_on_crafted_example():
    # Batch 1: all class 0, all right -> sklearn averages over label 0 only: 1.0 everywhere.
    # Batch 2: both classes, one class-1 image called 0.
    y_true = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    y_pred = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    probs = _probs_for(y_pred, 2, seed=0)
    batch = batch_mean_metrics(y_true, y_pred, probs, batch_size=4)
    level = dataset_metrics(y_true, y_pred, probs, 2)
    # batch 2 = [0, 1, 1, 1] vs [0, 0, 1, 1]: P = (1/2 + 1)/2, R = (1 + 2/3)/2, F1 = (2/3 + 4/5)/2
    assert batch["accuracy"] == pytest.approx((1 + 3 / 4) / 2)
    assert batch["precision"] == pytest.approx((1 + 0.75) / 2)
    assert batch["recall"] == pytest.approx((1 + 5 / 6) / 2)
    assert batch["f1"] == pytest.approx((1 + 11 / 15) / 2)
    assert level["accuracy"] == pytest.approx(7 / 8)
    assert level["recall"] == pytest.approx((1 + 2 / 3) / 2)
    assert batch["recall"] != pytest.approx(level["recall"], abs=1e-3)
    assert batch["f1"] != pytest.approx(level["f1"], abs=1e-3)


def test_batch_mean_with_one_batch_of_all_classes_equals_dataset_level():
    probs = _probs_for(MULTI_PRED, 3, seed=2)
    batch = batch_mean_metrics(MULTI_TRUE, MULTI_PRED, probs, batch_size=100)
    level = dataset_metrics(MULTI_TRUE, MULTI_PRED, probs, 3)
    for name in level:
        assert batch[name] == pytest.approx(level[name], abs=1e-12)


def test_roc_points_binary_match_sklearn():
    probs = _probs_for(BINARY_PRED, 2, seed=4)
    rows = roc_points(BINARY_TRUE, probs, 2, ["no", "yes"])
    fpr, tpr, thresholds = skm.roc_curve(BINARY_TRUE, probs[:, 1])
    assert {row["class"] for row in rows} == {"yes"}
    np.testing.assert_allclose([row["fpr"] for row in rows], fpr)
    np.testing.assert_allclose([row["tpr"] for row in rows], tpr)
    assert rows[0]["threshold"] == 1.0 and all(np.isfinite(row["threshold"]) for row in rows)
    auc = roc_auc_per_class(BINARY_TRUE, probs, 2, ["no", "yes"])
    assert auc == {"yes": pytest.approx(skm.roc_auc_score(BINARY_TRUE, probs[:, 1]))}


def test_roc_points_multiclass_one_vs_rest():
    probs = _probs_for(MULTI_PRED, 3, seed=5)
    names = ["meningioma", "glioma", "pituitary"]
    rows = roc_points(MULTI_TRUE, probs, 3, names)
    assert [name for name in names if any(row["class"] == name for row in rows)] == names
    auc = roc_auc_per_class(MULTI_TRUE, probs, 3, names)
    for k, name in enumerate(names):
        assert auc[name] == pytest.approx(skm.roc_auc_score(MULTI_TRUE == k, probs[:, k]))
        fpr, _, _ = skm.roc_curve(MULTI_TRUE == k, probs[:, k])
        assert len([row for row in rows if row["class"] == name]) == len(fpr)


def test_roc_curve_equals_sklearns_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        n = int(rng.integers(2, 200))
        positive = rng.random(n) < rng.random()
        scores = np.round(rng.random(n), int(rng.integers(1, 4)))  # few decimals: many tied scores
        if positive.all() or not positive.any():
            continue
        for ours, theirs in zip(roc_curve(positive, scores), skm.roc_curve(positive, scores)):
            np.testing.assert_array_equal(ours, theirs)
        checked += 1
    assert checked > 150
