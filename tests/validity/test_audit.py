import numpy as np
import pytest

from tumorbench.models.metrics import scores_from_confusion
from tumorbench.validity.audit import TOLERANCE, audit_row, audit_rows, check_row_internal

RESNET50_TABLE1 = {"accuracy": "0.988333", "f1": "0.986491", "precision": "0.988056", "recall": "0.989270"}


def _row_of(tp, fn, tn, fp):
    scores = scores_from_confusion(np.array([[tn, fp], [fn, tp]]))
    return {name: f"{scores[name]:.6f}" for name in ("accuracy", "f1", "precision", "recall")}


def test_row_from_a_known_matrix_is_consistent_and_found():
    row = _row_of(tp=590, fn=10, tn=595, fp=5)
    result = audit_row(row)
    assert result["consistent"] and result["balanced_matches"] >= 1
    assert result["closest_error"] <= TOLERANCE
    internal = check_row_internal(row)
    assert internal["consistent"], internal["checks"]
    # the generating matrix itself must be among the matches
    found = audit_row(row, n_pos_values=[600])
    assert found["matches"] >= 1
    assert (found["example"]["tp"], found["example"]["tn"]) in {(590, 595), (595, 590)}


def test_paper_table1_resnet50_is_inconsistent():
    result = audit_row(RESNET50_TABLE1)
    assert not result["consistent"] and result["matches"] == 0 and result["example"] is None
    assert result["closest_error"] > 1e-4
    closest = result["closest"]
    assert closest["tp"] + closest["fn"] == closest["n_pos"]
    assert closest["tp"] + closest["fn"] + closest["tn"] + closest["fp"] == 1200
    internal = check_row_internal(RESNET50_TABLE1)
    assert internal["checks"]["accuracy_is_multiple_of_1_over_n"]
    assert not internal["checks"]["recall_equals_accuracy"]
    assert not internal["checks"]["f1_gap_within_bound"]
    assert internal["errors"] == 14
    assert 100 < internal["smallest_class_at_most"] < 200


def _brute_force(row, num_val, n_pos_values):
    values = np.array([float(row[k]) for k in ("accuracy", "f1", "precision", "recall")])
    matches, best = 0, np.inf
    for n_pos in n_pos_values:
        for tp in range(n_pos + 1):
            for tn in range(num_val - n_pos + 1):
                s = scores_from_confusion(np.array([[tn, num_val - n_pos - tn], [n_pos - tp, tp]]))
                error = np.abs(np.array([s["accuracy"], s["f1"], s["precision"], s["recall"]]) - values).max()
                matches += error <= TOLERANCE
                best = min(best, error)
    return matches, best


@pytest.mark.parametrize(
    "row",
    [
        {"accuracy": "0.9", "f1": "0.88", "precision": "0.9", "recall": "0.91"},  # no exact match
        _row_of(tp=18, fn=2, tn=20, fp=0),
    ],
)
def test_ordered_search_equals_brute_force_on_a_small_set(row):
    result = audit_row(row, num_val=40, n_pos_values=range(16, 25))
    matches, best = _brute_force(row, 40, range(16, 25))
    assert result["matches"] == matches
    assert result["closest_error"] == pytest.approx(best, abs=1e-15)


def test_unbalanced_matrix_is_found_only_when_its_class_counts_are_searched():
    row = _row_of(tp=560, fn=10, tn=620, fp=10)  # 570 positives: recall != accuracy
    result = audit_row(row)
    assert result["consistent"] and result["balanced_matches"] == 0
    assert not audit_row(row, n_pos_values=[600])["consistent"]
    assert not check_row_internal(row)["checks"]["recall_equals_accuracy"]
    assert check_row_internal(row, (630, 570))["consistent"]


def test_gap_bound_holds_for_every_matrix_of_a_small_set():
    # the bound of check_row_internal, tried on all 2x2 matrices with 20 + 20 images
    for tp in range(21):
        for tn in range(21):
            row = _row_of(tp=tp, fn=20 - tp, tn=tn, fp=20 - tn)
            result = check_row_internal(row, (20, 20))
            assert result["consistent"], (tp, tn, result)


def test_audit_rows_keeps_row_keys_and_adds_results():
    rows = [dict(RESNET50_TABLE1, table="1", model="resnet50")]
    [result] = audit_rows(rows)
    assert result["model"] == "resnet50" and result["consistent"] is False
    assert result["internal"]["consistent"] is False


def test_row_missing_a_score_is_rejected():
    with pytest.raises(ValueError, match="lacks"):
        audit_row({"accuracy": 0.9, "f1": 0.9, "precision": 0.9})


def test_no_binary_row_of_the_paper_is_consistent():
    from tumorbench.report.aggregate import load_paper_results

    results = audit_rows([row for row in load_paper_results() if row["dataset"] == "br35h"])
    assert len(results) == 24
    assert sum(result["consistent"] for result in results) == 0
    assert all(result["internal"]["checks"]["accuracy_is_multiple_of_1_over_n"] for result in results)
    assert all(not result["internal"]["checks"]["f1_gap_within_bound"] for result in results)
