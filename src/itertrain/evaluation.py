"""Metrics for imbalanced binary classification, average precision first.

Implemented in NumPy with scikit-learn's definitions (tests check the values
against scikit-learn), so evaluation needs no extra dependency.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["average_precision", "roc_auc", "precision_recall_curve", "roc_curve", "threshold_metrics",
           "score_metrics", "METRIC_NAMES"]

METRIC_NAMES = ("average_precision", "roc_auc", "precision", "recall", "f1", "mcc")


def _ranked(labels, scores):
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    order = np.argsort(s, kind="mergesort")[::-1]
    y, s = y[order], s[order]
    # the last index of each run of tied scores: one point of the curve each
    last_of_ties = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    true_pos = np.cumsum(y)[last_of_ties]
    false_pos = (last_of_ties + 1) - true_pos
    return true_pos, false_pos


def precision_recall_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score threshold, highest threshold first.

    The first point is (recall 0, precision 1), as in scikit-learn, so
    ``sum(diff(recall) * precision[1:])`` is the average precision.

    Returns
    -------
    (precision, recall) : float arrays
        Empty when there is no positive.
    """
    true_pos, false_pos = _ranked(labels, scores)
    if true_pos.size == 0 or true_pos[-1] == 0:
        return np.empty(0), np.empty(0)
    precision = np.r_[1.0, true_pos / (true_pos + false_pos)]
    recall = np.r_[0.0, true_pos / true_pos[-1]]
    return precision, recall


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) up.

    Returns
    -------
    (fpr, tpr) : float arrays
        Empty when a class is absent.
    """
    true_pos, false_pos = _ranked(labels, scores)
    if true_pos.size == 0 or true_pos[-1] == 0 or false_pos[-1] == 0:
        return np.empty(0), np.empty(0)
    return np.r_[0.0, false_pos / false_pos[-1]], np.r_[0.0, true_pos / true_pos[-1]]


def average_precision(labels, scores) -> float:
    """Area under the precision–recall curve as a step sum (scikit-learn's definition).

    Returns NaN when there is no positive.
    """
    precision, recall = precision_recall_curve(labels, scores)
    if recall.size == 0:
        return math.nan
    return float(np.sum(np.diff(recall) * precision[1:]))


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (ties count half). NaN when a class is absent."""
    fpr, tpr = roc_curve(labels, scores)
    if fpr.size == 0:
        return math.nan
    return float(np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr))


def threshold_metrics(labels, scores, threshold: float = 0.5) -> dict[str, float]:
    """Precision, recall, F1 and Matthews correlation of ``scores >= threshold``.

    Undefined ratios (no predicted or no actual positive) are 0, as in
    scikit-learn with ``zero_division=0``.
    """
    y = np.asarray(labels).astype(bool).ravel()
    p = np.asarray(scores).ravel() >= threshold
    tp = float(np.sum(y & p))
    fp = float(np.sum(~y & p))
    fn = float(np.sum(y & ~p))
    tn = float(np.sum(~y & ~p))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / denominator if denominator else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "mcc": mcc}


def score_metrics(labels, scores, threshold: float = 0.5) -> dict[str, float]:
    """All of :data:`METRIC_NAMES` for one set of scores, average precision first."""
    return {
        "average_precision": average_precision(labels, scores),
        "roc_auc": roc_auc(labels, scores),
        **threshold_metrics(labels, scores, threshold),
    }
