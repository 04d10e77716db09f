"""Metric values against scikit-learn on fixed and random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import itertrain as it

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def sklearn_all(y, s):
    p = (np.asarray(s) >= 0.5).astype(int)
    return {
        "average_precision": sklearn_metrics.average_precision_score(y, s),
        "roc_auc": sklearn_metrics.roc_auc_score(y, s),
        "precision": sklearn_metrics.precision_score(y, p, zero_division=0),
        "recall": sklearn_metrics.recall_score(y, p, zero_division=0),
        "f1": sklearn_metrics.f1_score(y, p, zero_division=0),
        "mcc": sklearn_metrics.matthews_corrcoef(y, p),
    }


def test_fixed_example():
    y = [0, 0, 1, 1, 0, 1, 0, 0, 0, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.5, 0.5, 0.2, 0.9, 0.05, 0.7]
    ours = it.score_metrics(y, s)
    assert list(ours) == ["average_precision", "roc_auc", "precision", "recall", "f1", "mcc"]
    for name, value in sklearn_all(y, s).items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.7, 0.9, 1.0])),
                min_size=2, max_size=60))
def test_random_with_ties_match_sklearn(rows):
    y = np.array([r[0] for r in rows])
    s = np.array([r[1] for r in rows])
    if y.min() == y.max():
        return
    ours = it.score_metrics(y, s)
    for name, value in sklearn_all(y, s).items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name


def test_undefined_cases_are_nan():
    assert math.isnan(it.average_precision([0, 0], [0.1, 0.2]))
    assert math.isnan(it.roc_auc([1, 1], [0.1, 0.2]))
