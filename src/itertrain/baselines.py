"""Reference scorers that need no training: the canonical seed-match rule.

A miRNA's seed (nucleotides 2–7) pairs with the target site; TargetScan's
site types rank, from weakest to strongest: 6mer (nt 2–7), 7mer-A1 (2–7 plus
an A across from nt 1), 7mer-m8 (nt 2–8), 8mer (2–8 plus the A1). Scoring each
pair by its best site type gives the rule a learned model has to beat.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from itertrain.encoding import COMPLEMENT
from itertrain.io import PairTable

__all__ = ["SITE_TYPES", "seed_match_scores"]

SITE_TYPES = ("none", "6mer", "7mer-A1", "7mer-m8", "8mer")
"""Score ``k`` of :func:`seed_match_scores` is ``SITE_TYPES[k]``."""

_A = 1  # code of A


def seed_match_scores(pairs: PairTable) -> np.ndarray:
    """The best canonical seed-match site of each pair, as 0 (none) to 4 (8mer).

    Parameters
    ----------
    pairs : PairTable
        Target sites (``codes_a``, 5'→3') and miRNAs (``codes_b``, 5'→3').

    Returns
    -------
    numpy.ndarray of int8, shape (N,)
    """
    targets, mirnas = pairs.codes_a, pairs.codes_b
    n = len(targets)
    if mirnas.shape[1] < 8:
        return np.zeros(n, dtype=np.int8)
    # on the target (5'→3') a site reads: partner of nt 8, partners of nt 7..2, then the A1 base
    site = COMPLEMENT[mirnas[:, 1:8]][:, ::-1]
    padded = np.zeros((n, targets.shape[1] + 2), dtype=np.uint8)  # a site may touch either end
    padded[:, 1:-1] = targets
    windows = sliding_window_view(padded, 8, axis=1)  # (n, positions, 8), no copy
    matches = windows[:, :, :7] == site[:, None, :]
    six = matches[:, :, 1:].all(axis=2)
    m8 = six & matches[:, :, 0]
    a1 = six & (windows[:, :, 7] == _A)
    best = np.select([m8 & a1, m8, a1, six], [4, 3, 2, 1], default=0)
    return best.max(axis=1).astype(np.int8)
