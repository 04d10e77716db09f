"""Built-in synthetic pair data for the demo and the tests.

Two generators:

``notebook``
    The notebook's demonstration data: positives are random ACGT pairs,
    negatives are all ``N`` (so nothing pairs in them).
``seed-match`` (the default)
    A task worth learning: random ACGT everywhere; each positive target site
    carries the reverse complement of its miRNA's bases 2–8 (a 7mer seed
    match) at a random position, as real binding sites often do.
"""

from __future__ import annotations

import numpy as np

from itertrain.encoding import COMPLEMENT
from itertrain.io import PairTable

__all__ = ["GENERATORS", "make_synthetic"]

GENERATORS = ("seed-match", "notebook")
_SEED_START, _SEED_END = 1, 8  # miRNA bases 2-8, 0-based half-open


def _random_codes(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    return rng.integers(1, 5, size=(n, length), dtype=np.uint8)


def _plant_seed_matches(rng: np.random.Generator, targets: np.ndarray, mirnas: np.ndarray) -> None:
    """Write the reverse complement of each miRNA's seed into its target, in place."""
    site = COMPLEMENT[mirnas[:, _SEED_START:_SEED_END]][:, ::-1]
    width = site.shape[1]
    starts = rng.integers(0, targets.shape[1] - width + 1, size=len(targets))
    columns = starts[:, None] + np.arange(width)
    np.put_along_axis(targets, columns, site, axis=1)


def make_synthetic(kind: str = "seed-match", n_pos: int = 5000, n_neg: int = 10000,
                   shape: tuple[int, int] = (50, 20), seed: int = 0) -> PairTable:
    """Generate labelled pairs: ``n_pos`` positives followed by ``n_neg`` negatives.

    Parameters
    ----------
    kind : {"seed-match", "notebook"}
    n_pos, n_neg : int
    shape : (int, int)
        Target-site and miRNA lengths.
    seed : int

    Returns
    -------
    PairTable
    """
    if kind not in GENERATORS:
        raise ValueError(f"unknown synthetic generator {kind!r}; choose one of {', '.join(GENERATORS)}")
    rng = np.random.default_rng([seed, 7])
    la, lb = shape
    pos_a, pos_b = _random_codes(rng, n_pos, la), _random_codes(rng, n_pos, lb)
    if kind == "notebook":
        neg_a = np.zeros((n_neg, la), np.uint8)
        neg_b = np.zeros((n_neg, lb), np.uint8)
    else:
        if lb < _SEED_END or la < _SEED_END - _SEED_START:
            raise ValueError(f"shape {shape} too small for a seed match")
        _plant_seed_matches(rng, pos_a, pos_b)
        neg_a, neg_b = _random_codes(rng, n_neg, la), _random_codes(rng, n_neg, lb)
    labels = np.r_[np.ones(n_pos, np.int8), np.zeros(n_neg, np.int8)]
    return PairTable(np.concatenate([pos_a, neg_a]), np.concatenate([pos_b, neg_b]), labels,
                     source=f"synthetic:{kind}")
