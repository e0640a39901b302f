"""Classification metrics as pure functions over a confusion matrix (rows: true label, columns: predicted).

Shared by evaluation (test-set metrics) and prediction (accuracy on a labelled input). Spark aggregates the
(label, prediction) counts; everything here works on that small matrix, so it is exact, cheap and testable
with hand-worked values.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def confusion_matrix_from_counts(counts: Iterable[tuple[int, int, int]], num_classes: int) -> np.ndarray:
    """A (num_classes x num_classes) int matrix from (true label, predicted label, count) triples."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for label, prediction, count in counts:
        matrix[int(label), int(prediction)] += int(count)
    return matrix


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """A (num_classes x num_classes) int matrix from one true and one predicted label per row."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def accuracy(matrix: np.ndarray) -> float:
    """Correct predictions over all predictions (0.0 for an empty matrix)."""
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else 0.0


def per_class_metrics(matrix: np.ndarray) -> list[dict]:
    """Precision, recall, F1 and support of every class.

    A ratio with a zero denominator (a class never predicted, or absent from the data) is 0.0, the usual
    convention (scikit-learn's zero_division=0), so the JSON never holds NaN.
    """
    true_positives = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1)
    precision = _safe_divide(true_positives, predicted)
    recall = _safe_divide(true_positives, support.astype(float))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return [{"label": k, "precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
             "support": int(support[k])} for k in range(matrix.shape[0])]


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros_like(numerator, dtype=float)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def confusion_matrix_csv(matrix: np.ndarray) -> str:
    """The matrix as CSV with a header row of predicted labels and a first column of true labels."""
    n = matrix.shape[0]
    lines = ["true\\predicted," + ",".join(str(k) for k in range(n))]
    lines += [f"{k}," + ",".join(str(int(v)) for v in matrix[k]) for k in range(n)]
    return "\n".join(lines) + "\n"
