"""Classification metrics (shared by evaluation and prediction) against hand-worked values."""
from __future__ import annotations

import pytest

from pipeline.metrics import accuracy, confusion_matrix_csv, confusion_matrix_from_counts, per_class_metrics

# (true, predicted, count) for 4 classes; class 3 never occurs nor is predicted. By hand:
#   true 0: 3 right, 1 called 1          precision_0 = 3/5, recall_0 = 3/4, f1_0 = 2/3
#   true 1: 2 right, 1 called 2          precision_1 = 2/3, recall_1 = 2/3, f1_1 = 2/3
#   true 2: 1 right, 2 called 0          precision_2 = 1/2, recall_2 = 1/3, f1_2 = 2/5
#   accuracy = 6/10
COUNTS = [(0, 0, 3), (0, 1, 1), (1, 1, 2), (1, 2, 1), (2, 2, 1), (2, 0, 2)]


def test_confusion_matrix_and_per_class_metrics_match_hand_worked_values():
    matrix = confusion_matrix_from_counts(COUNTS, 4)
    assert matrix.tolist() == [[3, 1, 0, 0], [0, 2, 1, 0], [2, 0, 1, 0], [0, 0, 0, 0]]
    assert accuracy(matrix) == pytest.approx(0.6)
    expected = [(0, 3 / 5, 3 / 4, 2 / 3, 4), (1, 2 / 3, 2 / 3, 2 / 3, 3), (2, 1 / 2, 1 / 3, 2 / 5, 3),
                (3, 0.0, 0.0, 0.0, 0)]
    for got, (label, precision, recall, f1, support) in zip(per_class_metrics(matrix), expected, strict=True):
        assert got == {"label": label, "precision": pytest.approx(precision), "recall": pytest.approx(recall),
                       "f1": pytest.approx(f1), "support": support}
    assert confusion_matrix_csv(matrix).splitlines() == [
        "true\\predicted,0,1,2,3", "0,3,1,0,0", "1,0,2,1,0", "2,2,0,1,0", "3,0,0,0,0"]
