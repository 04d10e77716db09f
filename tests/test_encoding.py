"""encode_pairs against a straightforward reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import itertrain as it
from itertrain.encoding import SequenceTooLongError

WATSON_CRICK = {("A", "T"), ("T", "A"), ("G", "C"), ("C", "G")}


def reference(seqs_a, seqs_b, shape):
    """The notebook's definition, one base pair at a time."""
    out = np.zeros((len(seqs_a), *shape), np.float32)
    for n, (a, b) in enumerate(zip(seqs_a, seqs_b)):
        for i, x in enumerate(a.upper().replace("U", "T")):
            for j, y in enumerate(b.upper().replace("U", "T")):
                out[n, i, j] = (x, y) in WATSON_CRICK
    return out


bases = st.sampled_from(list("ACGTUNacgtun-"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(bases, max_size=12), st.text(bases, max_size=7)), max_size=20))
def test_matches_reference_on_random_pairs(pairs):
    seqs_a = [a for a, _ in pairs]
    seqs_b = [b for _, b in pairs]
    got = it.encode_pairs(seqs_a, seqs_b, shape=(12, 7))
    assert got.dtype == np.float32 and got.shape == (len(pairs), 12, 7)
    np.testing.assert_array_equal(got, reference(seqs_a, seqs_b, (12, 7)))


def test_realistic_pairs_and_chunking():
    rng = np.random.default_rng(0)
    n = 700  # more than one internal chunk
    seqs_a = ["".join(rng.choice(list("ACGTUacgtN"), rng.integers(30, 51))) for _ in range(n)]
    seqs_b = ["".join(rng.choice(list("ACGUacgu"), rng.integers(17, 21))) for _ in range(n)]
    np.testing.assert_array_equal(it.encode_pairs(seqs_a, seqs_b), reference(seqs_a, seqs_b, (50, 20)))


def test_known_matrix():
    m = it.encode_pairs(["AUGC"], ["uacg"], shape=(5, 4))[0]
    expected = np.zeros((5, 4), np.float32)
    expected[0, 0] = expected[1, 1] = expected[2, 2] = expected[3, 3] = 1  # A-U, U-A, G-C, C-G
    np.testing.assert_array_equal(m, expected)


def test_too_long_names_the_row_unless_truncating():
    with pytest.raises(SequenceTooLongError, match="row 1 has 6 bases"):
        it.encode_pairs(["ACG", "ACGTAC"], ["A", "T"], shape=(5, 2))
    cut = it.encode_pairs(["ACG", "ACGTAC"], ["A", "T"], shape=(5, 2), truncate=True)
    np.testing.assert_array_equal(cut, reference(["ACG", "ACGTA"], ["A", "T"], (5, 2)))


def test_missing_sequence_is_a_user_error():
    with pytest.raises(it.UserError, match="row 1 is missing"):
        it.encode_sequences(["ACG", None], 5)


def test_codes_are_one_byte_per_base_and_round_trip():
    codes = it.encode_sequences(["acgu", "N-T"], 5)
    assert codes.dtype == np.uint8 and codes.shape == (2, 5)
    assert it.decode_sequences(codes) == ["ACGTN", "NNTNN"]


def test_torch_path_equals_numpy_path():
    import torch

    from itertrain.encoding import complement_codes, pair_matrices_torch

    pairs = it.make_synthetic("seed-match", 50, 50, seed=1)
    expected = it.pair_matrices(pairs.codes_a, pairs.codes_b)
    got = pair_matrices_torch(torch.from_numpy(pairs.codes_a), torch.from_numpy(complement_codes(pairs.codes_b)))
    np.testing.assert_array_equal(got.numpy(), expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.sampled_from(list("ACGTUNacgtun")), max_size=9), min_size=1, max_size=30),
       st.booleans())
def test_arrow_backed_columns_encode_like_lists(seqs, sliced):
    import pandas as pd

    series = pd.Series(seqs * 2, dtype="str")
    if sliced:  # a view into a larger Arrow buffer (non-zero offset)
        series = series.iloc[len(seqs):]
    expected = it.encode_sequences(list(series), 6, truncate=True)
    np.testing.assert_array_equal(it.encode_sequences(series, 6, truncate=True), expected)
    if all(len(s) == 9 for s in seqs):
        np.testing.assert_array_equal(it.encode_sequences(series, 9), it.encode_sequences(list(series), 9))


def _features_reference(seq_a: str, seq_b: str, shape: tuple[int, int], encoding: str) -> np.ndarray:
    """Cell by cell from the letters: the definition the vectorized builder must meet."""
    watson_crick = {("A", "T"), ("T", "A"), ("G", "C"), ("C", "G")}
    wobble = {("G", "T"), ("T", "G")}
    a, b = seq_a.upper().replace("U", "T"), seq_b.upper().replace("U", "T")
    out = np.zeros((it.ENCODINGS[encoding], *shape), dtype=np.float32)
    for i in range(shape[0]):
        for j in range(shape[1]):
            x = a[i] if i < len(a) else "-"
            y = b[j] if j < len(b) else "-"
            channels = [(x, y) in watson_crick]
            if "wobble" in encoding:
                channels.append((x, y) in wobble)
            if "gc" in encoding:
                channels.append((x, y) in {("G", "C"), ("C", "G")})
            if "pairs" in encoding:
                channels += [(x, y) == tuple(kind.replace("U", "T").split(":")) for kind in it.encoding.PAIR_TYPES]
            if "bases" in encoding:
                channels += [x == base for base in "ACGT"] + [y == base for base in "ACGT"]
            out[:, i, j] = channels
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.text(st.sampled_from(list("ACGTUN")), max_size=7),
                          st.text(st.sampled_from(list("ACGTUN")), max_size=4)), min_size=1, max_size=5),
       st.sampled_from(sorted(it.ENCODINGS)))
def test_pair_features_match_the_cell_by_cell_definition(pairs, encoding):
    import torch

    seqs_a, seqs_b = [a for a, _ in pairs], [b for _, b in pairs]
    codes_a, codes_b = it.encode_sequences(seqs_a, 7), it.encode_sequences(seqs_b, 4)
    got = it.pair_features_torch(torch.from_numpy(codes_a), torch.from_numpy(codes_b), encoding).numpy()
    expected = np.stack([_features_reference(a, b, (7, 4), encoding) for a, b in pairs])
    np.testing.assert_array_equal(got, expected)


def test_wc_features_are_the_pair_matrix_with_a_channel_axis():
    import torch

    pairs = it.make_synthetic("seed-match", 30, 30, seed=2)
    got = it.pair_features_torch(torch.from_numpy(pairs.codes_a), torch.from_numpy(pairs.codes_b))
    np.testing.assert_array_equal(got.numpy(), it.pair_matrices(pairs.codes_a, pairs.codes_b)[:, None])


def test_unknown_encoding_is_a_user_error_naming_the_choices():
    from itertrain.encoding import encoding_channels, encoding_for_channels

    with pytest.raises(it.UserError, match="unknown encoding 'onehot'; choose one of: wc, wc\\+wobble"):
        encoding_channels("onehot")
    assert [encoding_for_channels(c) for c in (1, 2, 3, 8, 9, 10)] == list(it.ENCODINGS)
    with pytest.raises(it.UserError, match="no encoding has 4 input channels"):
        encoding_for_channels(4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.sampled_from("ACGT"), min_size=1, max_size=9), min_size=1, max_size=8), st.data())
def test_shift_sequences_moves_each_row_and_pads(seqs, data):
    import torch

    from itertrain.encoding import shift_sequences

    length = 9
    codes = it.encode_sequences(seqs, length)
    shifts = data.draw(st.lists(st.integers(-length, length), min_size=len(seqs), max_size=len(seqs)))
    out = shift_sequences(torch.from_numpy(codes), torch.tensor(shifts)).numpy()
    for row, (original, s) in enumerate(zip(codes, shifts)):
        expected = np.zeros(length, np.uint8)  # padding where nothing moved in
        for j in range(length):
            if 0 <= j - s < length:
                expected[j] = original[j - s]
        assert out[row].tolist() == expected.tolist()
