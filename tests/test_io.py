"""Reading tables: formats, column conventions, validation errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import itertrain as it
from itertrain.io import atomic_path, load_training_pairs, write_table

from conftest import DATA_DIR, needs_shared_data, table_frame


@pytest.mark.parametrize("name", ["p.tsv", "p.csv", "p.tsv.gz", "p.csv.gz", "p.parquet"])
def test_formats_read_the_same_pairs(tmp_path, small_pairs, name):
    pytest.importorskip("pyarrow") if name.endswith("parquet") else None
    path = tmp_path / name
    write_table(table_frame(small_pairs), path)
    pairs = it.load_pairs(path)
    np.testing.assert_array_equal(pairs.codes_a, small_pairs.codes_a)
    np.testing.assert_array_equal(pairs.codes_b, small_pairs.codes_b)
    np.testing.assert_array_equal(pairs.labels, small_pairs.labels)


@pytest.mark.parametrize("a, b", [("seq_a", "seq_b"), ("gene", "miRNA"), ("gene", "noncodingRNA")])
def test_column_conventions_are_detected(tmp_path, small_pairs, a, b):
    path = tmp_path / "p.tsv"
    write_table(table_frame(small_pairs, a, b), path)
    np.testing.assert_array_equal(it.load_pairs(path).codes_b, small_pairs.codes_b)


def test_positives_and_negatives_files_pool_with_implied_labels(tmp_path, small_pairs):
    frame = table_frame(small_pairs, label=None)
    frame[:200].to_csv(tmp_path / "pos.csv", index=False)
    frame[200:].to_csv(tmp_path / "neg.csv", index=False)
    config = it.TrainConfig(positives=str(tmp_path / "pos.csv"), negatives=str(tmp_path / "neg.csv"))
    pairs = load_training_pairs(config)
    assert len(pairs) == 800 and pairs.labels.sum() == 200
    np.testing.assert_array_equal(pairs.labels, small_pairs.labels)


def test_pooled_pair_costs_bytes_not_kilobytes(small_pairs):
    assert small_pairs.nbytes / len(small_pairs) <= 71


@pytest.mark.parametrize("content, message", [
    ("seq_a\tseq_b\tlabel\nACGT\tACGT\tyes\n", r"column 'label': labels must be 0 or 1; found line 2 \('yes'\)"),
    ("seq_a\tseq_b\tlabel\nACGT\tACGT\t2\nACGT\tACGT\t\n", r"line 2 \('2'\), line 3 \(''\)"),
    ("seq_a\tseq_b\tlabel\nACGT\tACXT\t1\n", r"column 'seq_b': sequences may only hold A, C, G, T, U or N; found line 2"),
    ("seq_a\tseq_b\tlabel\n" + "A" * 51 + "\tACGT\t1\n", r"line 2, column 'seq_a': sequence of 51 bases is longer"),
    ("target\tmirna\tlabel\nACGT\tACGT\t1\n", r"no column 'seq_a' or 'seq_b'; columns found: target, mirna, label"),
    ("seq_a\tseq_b\tlabel\n", r"header but no data rows"),
    ("", r"the file is empty"),
    ("seq_a\tseq_b\tlabel\nACGT\t\t1\n", r"line 2, column 'seq_b': empty sequence"),
])
def test_bad_tables_name_file_line_and_column(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(it.UserError, match=message) as err:
        it.load_pairs(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(it.UserError, match="no such file"):
        it.load_pairs(tmp_path / "nope.tsv")


def test_truncate_cuts_long_sequences(tmp_path):
    path = tmp_path / "long.tsv"
    path.write_text("seq_a\tseq_b\tlabel\n" + "A" * 60 + "\tTTTT\t1\n")
    pairs = it.load_pairs(path, truncate=True)
    assert pairs.codes_a.shape == (1, 50) and (pairs.codes_a == 1).all()


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tsv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


@needs_shared_data
def test_reads_the_mirbind_training_file():
    pairs = it.load_pairs(DATA_DIR / "train_set_1_1_CLASH2013_paper.tsv")
    assert len(pairs) == 30784 and int(pairs.labels.sum()) == 15392
    assert pairs.shape == (50, 20)
    assert pd.read_csv(DATA_DIR / "train_set_1_1_CLASH2013_paper.tsv", sep="\t").columns.tolist() == \
        ["miRNA", "gene", "label"]
