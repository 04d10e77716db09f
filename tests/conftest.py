"""Shared fixtures: small real runs and table files made from synthetic pairs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import itertrain as it

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mirbind-clash2013"
needs_shared_data = pytest.mark.skipif(
    not (DATA_DIR / "train_set_1_1_CLASH2013_paper.tsv").is_file(),
    reason=f"shared miRNA data not found at {DATA_DIR}",
)

SMALL = dict(max_iter=4, pos_samples=20, n_batches=4, device="cpu")


def table_frame(pairs: it.PairTable, a="seq_a", b="seq_b", label="label") -> pd.DataFrame:
    frame = pd.DataFrame({a: it.decode_sequences(pairs.codes_a), b: it.decode_sequences(pairs.codes_b)})
    if label is not None:
        frame[label] = pairs.labels
    return frame


@pytest.fixture
def small_pairs() -> it.PairTable:
    return it.make_synthetic("seed-match", n_pos=200, n_neg=600, seed=3)


@pytest.fixture
def pairs_tsv(tmp_path, small_pairs) -> Path:
    path = tmp_path / "pairs.tsv"
    table_frame(small_pairs).to_csv(path, sep="\t", index=False)
    return path
