"""Sequences to compact codes, and codes to Watson–Crick pair matrices.

Pools keep every sequence as one byte per base (``uint8`` codes), so a pooled
(50 nt, 20 nt) pair costs 70 bytes. The 0/1 matrices the model sees (4 KB per
pair as float32) are only built per batch, on the CPU with NumPy or on the
training device with torch.

Codes: ``A=1, C=2, G=3, T=U=4``; anything else (``N``, gaps, padding) is 0.
Two bases pair when ``code_a == COMPLEMENT[code_b]``; the complement of 0 is
255, so padding and unknown bases never pair.

The model input is the pair matrix alone (encoding ``wc``, the notebook's) or
the pair matrix with more channels (:data:`ENCODINGS`): G:U wobble pairs, the
G:C pairs or every pair type apart, or each side's bases one-hot, so that a
model can tell which bases face each other and not only whether they pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from itertrain.errors import UserError

__all__ = [
    "BASE_CODES",
    "COMPLEMENT",
    "ENCODINGS",
    "PAIR_TYPES",
    "SequenceTooLongError",
    "complement_codes",
    "decode_sequences",
    "encode_pairs",
    "encode_sequences",
    "shift_sequences",
    "encoding_channels",
    "encoding_for_channels",
    "pair_features_torch",
    "pair_matrices",
    "pair_matrices_torch",
]

_PAD = 0
_NEVER = 255

BASE_CODES: np.ndarray = np.zeros(256, dtype=np.uint8)
"""Byte → code look-up table (case-insensitive, ``U`` read as ``T``)."""
for _letters, _code in (("Aa", 1), ("Cc", 2), ("Gg", 3), ("TtUu", 4)):
    for _letter in _letters:
        BASE_CODES[ord(_letter)] = _code

COMPLEMENT: np.ndarray = np.array([_NEVER, 4, 3, 2, 1], dtype=np.uint8)
"""Code → code of the Watson–Crick partner; padding maps to a code nothing has."""

_C, _G, _T = 2, 3, 4

ENCODINGS: dict[str, int] = {"wc": 1, "wc+wobble": 2, "wc+wobble+gc": 3, "wc+wobble+pairs": 8, "wc+bases": 9,
                             "wc+wobble+bases": 10}
"""Model input encodings → channels. ``wc``: the Watson–Crick pair matrix;
``+wobble``: a channel of G:U pairs; ``+gc``: a channel of the Watson–Crick
pairs that are G:C (three hydrogen bonds, the stronger stacking); ``+pairs``: one
channel per pair type and orientation (:data:`PAIR_TYPES`, row base first), as
nearest-neighbour stacking energies tell them apart; ``+bases``: 4 one-hot channels of the row
sequence's base (constant along a row) and 4 of the column sequence's base
(constant along a column)."""

PAIR_TYPES: tuple[str, ...] = ("A:U", "U:A", "G:C", "C:G", "G:U", "U:G")
"""The ``+pairs`` channels, in order: row (target site) base, then column (miRNA) base."""
_PAIR_CODES = tuple((int(BASE_CODES[ord(row)]), int(BASE_CODES[ord(column)])) for row, _, column in PAIR_TYPES)

# Pairs per chunk in the NumPy path: the candidate rows (chunk × 5 × Lb float32)
# stay in cache, so the float32 output is written once, at memory speed.
_CHUNK = 256


class SequenceTooLongError(UserError):
    """A sequence is longer than the matrix side it must fit in."""

    def __init__(self, rows: np.ndarray, length: int, limit: int, what: str):
        self.rows = rows
        first = int(rows[0])
        more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
        super().__init__(
            f"{what} in row {first} has {length} bases, more than the {limit} the matrix "
            f"holds{more}; shorten the sequences, enlarge the shape, or allow truncation "
            f"(--truncate / truncate=True)"
        )


def _as_fixed_bytes(seqs: Sequence[str] | np.ndarray, width: int, what: str) -> np.ndarray:
    """Sequences as a fixed-width ``S{width}`` array (zero padded, cut at ``width``)."""
    if isinstance(seqs, np.ndarray) and seqs.dtype.kind == "S":
        return seqs.astype(f"S{width}", copy=False)
    try:
        return np.array(seqs, dtype=f"S{width}")
    except UnicodeEncodeError as err:
        bad = [i for i, s in enumerate(seqs) if not str(s).isascii()][:1]
        row = bad[0] if bad else "?"
        raise UserError(
            f"{what} in row {row} holds a non-ASCII character ({err.object[err.start:err.end]!r}); "
            "sequences may only use the letters A, C, G, T, U and N"
        ) from None


def _lengths(seqs: Sequence[str] | np.ndarray, what: str) -> np.ndarray:
    if hasattr(seqs, "str"):  # a pandas Series: its string lengths are vectorized
        lengths = seqs.str.len().to_numpy(dtype=float, na_value=np.nan)
        missing = np.flatnonzero(np.isnan(lengths))
        if missing.size:
            raise UserError(f"{what} in row {missing[0]} is missing; fill or remove that row")
        return lengths.astype(np.int64)
    try:
        return np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    except TypeError:
        bad = next(i for i, s in enumerate(seqs) if not isinstance(s, (str, bytes)))
        raise UserError(
            f"{what} in row {bad} is missing or not text ({seqs[bad]!r}); "
            "fill or remove that row"
        ) from None


def encode_sequences(
    seqs: Sequence[str] | np.ndarray,
    length: int,
    *,
    truncate: bool = False,
    what: str = "sequence",
) -> np.ndarray:
    """Encode sequences as ``uint8`` base codes, zero padded to ``length``.

    Parameters
    ----------
    seqs : sequence of str
        Nucleotide sequences (any case; ``U`` is read as ``T``).
    length : int
        Number of columns of the result.
    truncate : bool, default False
        Cut longer sequences at ``length`` instead of raising.
    what : str
        How to name the sequences in error messages (e.g. ``"seq_a"``).

    Returns
    -------
    numpy.ndarray of uint8, shape (len(seqs), length)

    Raises
    ------
    SequenceTooLongError
        When a sequence is longer than ``length`` and ``truncate`` is False.
    """
    n = len(seqs)
    if n == 0:
        return np.zeros((0, length), dtype=np.uint8)
    lengths = _lengths(seqs, what)  # also rejects missing values with a clear message
    if not truncate:
        too_long = np.flatnonzero(lengths > length)
        if too_long.size:
            raise SequenceTooLongError(too_long, int(lengths[too_long[0]]), length, what)
    arrow = _arrow_strings(seqs)
    if arrow is not None:
        return _codes_from_arrow(arrow, length)
    if isinstance(seqs, list) and (lengths == length).all():
        try:  # one fixed length: a single join is 2.5x faster than a fixed-width array
            return BASE_CODES[np.frombuffer("".join(seqs).encode("ascii"), dtype=np.uint8)].reshape(n, length)
        except (UnicodeEncodeError, TypeError):
            pass  # the general path below reports the row
    raw = _as_fixed_bytes(seqs, length, what)
    return BASE_CODES[raw.view(np.uint8).reshape(n, length)]


def _arrow_strings(seqs):
    """The Arrow string array behind a pandas Series, if it has one (pandas >= 3 with pyarrow)."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return None
    array = getattr(getattr(seqs, "array", None), "_pa_array", None)
    if array is None:
        return None
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)) or array.null_count:
        return None
    return array


def _codes_from_arrow(array, length: int) -> np.ndarray:
    """Codes straight from Arrow's UTF-8 buffer: no Python string per sequence."""
    import pyarrow as pa

    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=offset_type)[array.offset:array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
    lengths = np.diff(offsets)
    n = len(array)
    if (lengths == length).all():  # the common case: one fixed length, a plain reshape
        return BASE_CODES[data[offsets[0]:offsets[-1]]].reshape(n, length)
    codes = np.zeros((n, length), dtype=np.uint8)
    row = np.repeat(np.arange(n), lengths)
    column = np.arange(len(row)) - np.repeat(offsets[:-1] - offsets[0], lengths)
    keep = column < length  # truncation
    codes[row[keep], column[keep]] = BASE_CODES[data[offsets[0]:offsets[-1]][keep]]
    return codes


_LETTERS = np.frombuffer(b"NACGT", dtype=np.uint8)


def decode_sequences(codes: np.ndarray) -> list[str]:
    """Codes back to text (``N`` for code 0), one string per row."""
    n, length = codes.shape
    if n == 0:
        return []
    raw = np.ascontiguousarray(_LETTERS[codes]).view(f"S{length}").ravel()
    return raw.astype(str).tolist()


def complement_codes(codes_b: np.ndarray) -> np.ndarray:
    """Codes of the Watson–Crick partners of ``codes_b`` (padding never pairs)."""
    return COMPLEMENT[codes_b]


def pair_matrices(
    codes_a: np.ndarray,
    codes_b: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Build 0/1 pair matrices from codes on the CPU.

    Parameters
    ----------
    codes_a : uint8 array, shape (N, La)
    codes_b : uint8 array, shape (N, Lb)
    out : float32 array, shape (N, La, Lb), optional
        Written in place when given.

    Returns
    -------
    float32 array, shape (N, La, Lb), ``[n, i, j] = 1`` where base ``i`` of
    ``a[n]`` and base ``j`` of ``b[n]`` form a Watson–Crick pair.
    """
    n, la = codes_a.shape
    lb = codes_b.shape[1]
    if out is None:
        out = np.empty((n, la, lb), dtype=np.float32)
    # Each output row [n, i, :] is one of only five rows, fixed by the code of a[n, i]: build
    # those five per pair (in cache), then copy whole 4*Lb-byte rows with one np.take. This
    # writes the output once, row by row, instead of comparing element by element into it.
    row = np.dtype((np.void, 4 * lb))
    rows_out = out.view(row).reshape(n, la)
    partners = complement_codes(codes_b)
    candidates = np.empty((min(n, _CHUNK), len(COMPLEMENT), lb), dtype=np.float32)
    every_code = np.arange(len(COMPLEMENT), dtype=np.uint8)[None, :, None]
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        k = stop - start
        np.equal(partners[start:stop, None, :], every_code, out=candidates[:k])
        which = np.arange(k)[:, None] * len(COMPLEMENT) + codes_a[start:stop]
        np.take(candidates[:k].view(row).reshape(-1), which.ravel(), out=rows_out[start:stop].reshape(-1))
    return out


def pair_matrices_torch(codes_a, partners_b):
    """Build float32 pair matrices on the tensors' device.

    Parameters
    ----------
    codes_a : torch.Tensor of uint8, shape (N, La)
    partners_b : torch.Tensor of uint8, shape (N, Lb)
        ``complement_codes(codes_b)``, computed once per pool.

    Returns
    -------
    torch.Tensor of float32, shape (N, La, Lb)
    """
    return (codes_a[:, :, None] == partners_b[:, None, :]).float()


def encoding_channels(encoding: str) -> int:
    """Input channels of ``encoding`` (a key of :data:`ENCODINGS`)."""
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise UserError(f"unknown encoding {encoding!r}; choose one of: {', '.join(ENCODINGS)}") from None


def encoding_for_channels(channels: int) -> str:
    """The encoding whose input has ``channels`` channels (each count has exactly one)."""
    for name, count in ENCODINGS.items():
        if count == channels:
            return name
    raise UserError(f"no encoding has {channels} input channels; known: "
                    f"{', '.join(f'{n} ({c})' for n, c in ENCODINGS.items())}")


def pair_features_torch(codes_a, codes_b, encoding: str = "wc", memory_format=None):
    """Build the model input of a batch on the tensors' device.

    Parameters
    ----------
    codes_a : torch.Tensor of uint8, shape (N, La)
        Codes of the row sequences (target sites).
    codes_b : torch.Tensor of uint8, shape (N, Lb)
        Codes of the column sequences (miRNAs); not complemented.
    encoding : str, default "wc"
        A key of :data:`ENCODINGS`.
    memory_format : torch.memory_format, optional
        Layout of the result (``torch.channels_last`` for channels-last
        models); written in that layout directly, never copied into it.

    Returns
    -------
    torch.Tensor of float32, shape (N, C, La, Lb)
        Channel 0 is the Watson–Crick pair matrix; then, as the encoding
        asks, G:U wobble pairs, G:C pairs, one channel per pair type of
        :data:`PAIR_TYPES`, the row bases A, C, G, T and the column bases
        A, C, G, T (padding has none set).
    """
    import torch

    channels = encoding_channels(encoding)
    n, la, lb = codes_a.shape[0], codes_a.shape[1], codes_b.shape[1]
    out = torch.empty((n, channels, la, lb), dtype=torch.float32, device=codes_a.device,
                      memory_format=memory_format or torch.contiguous_format)
    # COMPLEMENT as arithmetic (c -> 5 - c for the four bases, padding never pairs):
    # no look-up table to keep on each device
    partners = torch.where(codes_b > 0, 5 - codes_b, _NEVER)
    out[:, 0] = codes_a[:, :, None] == partners[:, None, :]
    next_channel = 1
    a, b = codes_a[:, :, None], codes_b[:, None, :]
    if "wobble" in encoding:
        out[:, 1] = ((a == _G) & (b == _T)) | ((a == _T) & (b == _G))
        next_channel = 2
    if "gc" in encoding:
        out[:, next_channel] = out[:, 0].bool() & ((a == _G) | (a == _C))
        next_channel += 1
    if "pairs" in encoding:
        for row_code, column_code in _PAIR_CODES:
            out[:, next_channel] = (a == row_code) & (b == column_code)
            next_channel += 1
    if "bases" in encoding:
        bases = torch.arange(1, 5, dtype=codes_a.dtype, device=codes_a.device)[None, :, None]
        out[:, next_channel:next_channel + 4] = (codes_a[:, None, :] == bases)[..., None]
        out[:, next_channel + 4:next_channel + 8] = (codes_b[:, None, :] == bases)[:, :, None, :]
    return out


def shift_sequences(codes, shifts):
    """Move each row of ``codes`` by its own number of positions, filling with padding.

    Parameters
    ----------
    codes : torch.Tensor of uint8, shape (N, L)
        Sequence codes.
    shifts : torch.Tensor of int, shape (N,)
        Positions to move each row by: positive toward the end, negative
        toward the start; bases moved past either end are dropped.

    Returns
    -------
    torch.Tensor of uint8, shape (N, L)
        ``out[i, j] = codes[i, j - shifts[i]]``, padding (0) where that is outside the row.
    """
    import torch

    length = codes.shape[1]
    source = torch.arange(length, device=codes.device)[None, :] - shifts.to(codes.device)[:, None].long()
    inside = (source >= 0) & (source < length)
    moved = codes.gather(1, source.clamp(0, length - 1))
    return torch.where(inside, moved, torch.zeros((), dtype=codes.dtype, device=codes.device))


def encode_pairs(
    seqs_a: Sequence[str] | np.ndarray,
    seqs_b: Sequence[str] | np.ndarray,
    shape: tuple[int, int] = (50, 20),
    *,
    truncate: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Encode sequence pairs as Watson–Crick pair matrices.

    Parameters
    ----------
    seqs_a : sequence of str
        Rows of the matrices (target sites, 50 nt in the miRNA application).
    seqs_b : sequence of str
        Columns of the matrices (miRNAs, 20 nt).
    shape : (int, int), default (50, 20)
        Matrix shape; shorter sequences are zero padded.
    truncate : bool, default False
        Cut longer sequences instead of raising ``SequenceTooLongError``.
    out : float32 array of shape (N, shape[0], shape[1]), optional
        Written in place (re-using a buffer saves allocating 4 KB per pair).

    Returns
    -------
    numpy.ndarray of float32, shape (N, shape[0], shape[1])
        ``[n, i, j] = 1`` where ``seqs_a[n][i]`` and ``seqs_b[n][j]`` form a
        Watson–Crick pair (A–T, T–A, G–C, C–G; U read as T), else 0.
    """
    if len(seqs_a) != len(seqs_b):
        raise UserError(f"seqs_a has {len(seqs_a)} sequences but seqs_b has {len(seqs_b)}")
    codes_a = encode_sequences(seqs_a, shape[0], truncate=truncate, what="seq_a")
    codes_b = encode_sequences(seqs_b, shape[1], truncate=truncate, what="seq_b")
    return pair_matrices(codes_a, codes_b, out=out)
