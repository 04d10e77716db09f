"""Reading pair tables, checking them, and writing files atomically.

A table file (TSV or CSV, optionally gzip-compressed; Parquet) becomes a
:class:`PairTable`: sequences as compact ``uint8`` codes, labels and optional
weights. The text columns are not kept, so a pooled pair costs ~70 bytes.

Every problem a user can fix is raised as :class:`~itertrain.errors.UserError`
naming the file, the line and the column. Rows are reported as file lines:
line 1 is the header, line 2 the first data row.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from itertrain.config import parse_repair_spec
from itertrain.encoding import SequenceTooLongError, encode_sequences
from itertrain.errors import UserError

__all__ = [
    "PairTable",
    "COLUMN_CONVENTIONS",
    "read_table",
    "resolve_columns",
    "pairs_from_frame",
    "load_pairs",
    "load_training_pairs",
    "load_validation_sets",
    "write_table",
    "atomic_path",
    "atomic_write_text",
]

COLUMN_CONVENTIONS: list[tuple[str, str]] = [
    ("seq_a", "seq_b"),  # the notebook
    ("gene", "miRNA"),  # miRBind
    ("gene", "noncodingRNA"),  # miRBench
]
"""(target-site column, miRNA column) pairs recognised when the named ones are absent."""

_SHOWN_ROWS = 3
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it
_NOT_A_BASE = r"[^ACGTUNacgtun]"


@dataclass
class PairTable:
    """Sequence pairs as base codes, with labels and optional weights.

    Attributes
    ----------
    codes_a : uint8 array (N, La)
        Matrix-row sequences (target sites).
    codes_b : uint8 array (N, Lb)
        Matrix-column sequences (miRNAs).
    labels : int8 array (N,) or None
    weights : float32 array (N,) or None
        Per-sample loss weights.
    source : str
        Where the pairs came from, for messages.
    """

    codes_a: np.ndarray
    codes_b: np.ndarray
    labels: np.ndarray | None = None
    weights: np.ndarray | None = None
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.codes_a)

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes_a.shape[1], self.codes_b.shape[1]

    @property
    def nbytes(self) -> int:
        parts = (self.codes_a, self.codes_b, self.labels, self.weights)
        return sum(p.nbytes for p in parts if p is not None)

    @classmethod
    def from_sequences(cls, seqs_a, seqs_b, labels=None, *, shape=(50, 20), truncate=False,
                       weights=None, source="<memory>") -> PairTable:
        """Encode in-memory sequences (lists, arrays or pandas Series)."""
        codes_a = encode_sequences(seqs_a, shape[0], truncate=truncate, what="seq_a")
        codes_b = encode_sequences(seqs_b, shape[1], truncate=truncate, what="seq_b")
        labs = None if labels is None else np.asarray(labels, dtype=np.int8)
        w = None if weights is None else np.asarray(weights, dtype=np.float32)
        return cls(codes_a, codes_b, labs, w, source)

    @staticmethod
    def concat(tables: list[PairTable]) -> PairTable:
        """One table holding the rows of ``tables`` in order."""
        def cat(name):
            parts = [getattr(t, name) for t in tables]
            if any(p is None for p in parts):
                if name == "weights" and any(p is not None for p in parts):
                    parts = [np.ones(len(t), np.float32) if p is None else p for t, p in zip(tables, parts)]
                else:
                    return None
            return np.concatenate(parts)
        source = " + ".join(t.source for t in tables)
        return PairTable(cat("codes_a"), cat("codes_b"), cat("labels"), cat("weights"), source)

    def subset(self, index: np.ndarray) -> PairTable:
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return PairTable(self.codes_a[index], self.codes_b[index], pick(self.labels),
                         pick(self.weights), self.source)


# ---------------------------------------------------------------------------
# reading

def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst"):
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".parquet", ".pq"):
        return "parquet"
    if ext == ".csv":
        return "csv"
    return "tsv"


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a TSV/CSV (optionally compressed) or Parquet table, every column as text.

    Raises
    ------
    UserError
        When the file is missing, unreadable, empty or malformed.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a table file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: not readable (permission denied); fix its permissions")
    fmt = _format_of(path)
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path).astype(str)
        else:
            frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str,
                                keep_default_na=False, na_filter=False, compression="infer")
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: the file is empty; it needs a header line and data rows") from None
    except pd.errors.ParserError as err:
        raise UserError(f"{path}: malformed {fmt.upper()} ({_first_line(err)}); "
                        "check the separator and the number of fields per line") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); save the table as UTF-8") from None
    except (OSError, EOFError, ValueError, ImportError) as err:
        raise UserError(f"{path}: cannot read the {fmt.upper()} table ({_first_line(err)})") from None
    if len(frame) == 0:
        raise UserError(f"{path}: the table has a header but no data rows")
    return frame


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def resolve_columns(frame: pd.DataFrame, seq_a_col: str, seq_b_col: str, source: str) -> tuple[str, str]:
    """The (target, miRNA) column names to use, falling back on known conventions."""
    found = list(frame.columns)
    if seq_a_col in found and seq_b_col in found:
        return seq_a_col, seq_b_col
    if (seq_a_col, seq_b_col) == COLUMN_CONVENTIONS[0]:
        for a, b in COLUMN_CONVENTIONS[1:]:
            if a in found and b in found:
                return a, b
    missing = [c for c in (seq_a_col, seq_b_col) if c not in found]
    raise UserError(
        f"{source}: no column {' or '.join(repr(m) for m in missing)}; columns found: "
        f"{', '.join(map(str, found))}; name the sequence columns with --seq-a-col and --seq-b-col"
    )


def _line(row: int) -> int:
    return row + 2


def parse_labels(values: pd.Series, source: str, column: str) -> np.ndarray:
    """0/1 labels of a column (``0``, ``1``, ``0.0``, ``1.0``); anything else is a UserError naming the lines."""
    text = values.astype(str).str.strip()
    ones = text.isin(["1", "1.0"]).to_numpy()
    zeros = text.isin(["0", "0.0"]).to_numpy()
    bad = np.flatnonzero(~(ones | zeros))
    if bad.size:
        shown = ", ".join(f"line {_line(r)} ({text.iloc[r]!r})" for r in bad[:_SHOWN_ROWS])
        raise UserError(
            f"{source}, column {column!r}: labels must be 0 or 1; found {shown}"
            f"{f' and {bad.size - _SHOWN_ROWS} more' if bad.size > _SHOWN_ROWS else ''}; fix or remove those rows"
        )
    return ones.astype(np.int8)


def _parse_weights(values: pd.Series, source: str, column: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(numbers) | (numbers < 0))
    if bad.size:
        r = bad[0]
        raise UserError(f"{source}, line {_line(r)}, column {column!r}: weight {values.iloc[r]!r} "
                        "is not a non-negative number; fix it")
    return numbers.astype(np.float32)


def _encode_column(values: pd.Series, length: int, truncate: bool, source: str, column: str) -> np.ndarray:
    bad = np.flatnonzero(values.str.contains(_NOT_A_BASE, regex=True).to_numpy(dtype=bool))
    if bad.size:
        shown = ", ".join(f"line {_line(r)} ({values.iloc[r]!r})" for r in bad[:_SHOWN_ROWS])
        raise UserError(
            f"{source}, column {column!r}: sequences may only hold A, C, G, T, U or N; found {shown}"
            f"{f' and {bad.size - _SHOWN_ROWS} more' if bad.size > _SHOWN_ROWS else ''}; clean those rows"
        )
    empty = np.flatnonzero(values.str.len().to_numpy() == 0)
    if empty.size:
        raise UserError(f"{source}, line {_line(empty[0])}, column {column!r}: empty sequence; "
                        "fill or remove that row")
    try:
        return encode_sequences(values, length, truncate=truncate, what=column)
    except SequenceTooLongError as err:
        r = int(err.rows[0])
        more = f" (and {len(err.rows) - 1} more rows)" if len(err.rows) > 1 else ""
        raise UserError(
            f"{source}, line {_line(r)}, column {column!r}: sequence of {len(values.iloc[r])} bases is "
            f"longer than the {length} the matrix holds{more}; use --truncate to cut it or --shape to enlarge"
        ) from None


def pairs_from_frame(
    frame: pd.DataFrame,
    *,
    seq_a_col: str = "seq_a",
    seq_b_col: str = "seq_b",
    label_col: str | None = "label",
    weight_col: str | None = None,
    shape: tuple[int, int] = (50, 20),
    truncate: bool = False,
    label: int | None = None,
    source: str = "<table>",
) -> PairTable:
    """Check and encode a table read by :func:`read_table`.

    Parameters
    ----------
    label : {0, 1}, optional
        Give every row this label (a file of positives or negatives); the
        label column is then not needed.
    label_col : str or None
        Column of 0/1 labels; None when labels are not needed (prediction).
    """
    col_a, col_b = resolve_columns(frame, seq_a_col, seq_b_col, source)
    codes_a = _encode_column(frame[col_a], shape[0], truncate, source, col_a)
    codes_b = _encode_column(frame[col_b], shape[1], truncate, source, col_b)
    labels = None
    if label is not None:
        labels = np.full(len(frame), label, dtype=np.int8)
    elif label_col is not None:
        if label_col not in frame.columns:
            raise UserError(f"{source}: no label column {label_col!r}; columns found: "
                            f"{', '.join(map(str, frame.columns))}; name it with --label-col")
        labels = parse_labels(frame[label_col], source, label_col)
    weights = None
    if weight_col is not None:
        if weight_col not in frame.columns:
            raise UserError(f"{source}: no weight column {weight_col!r}; columns found: "
                            f"{', '.join(map(str, frame.columns))}")
        weights = _parse_weights(frame[weight_col], source, weight_col)
    return PairTable(codes_a, codes_b, labels, weights, source)


def load_pairs(path: str | Path, **options) -> PairTable:
    """Read and encode a pair table file; options as in :func:`pairs_from_frame`."""
    return pairs_from_frame(read_table(path), source=str(path), **options)


# ---------------------------------------------------------------------------
# writing

@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Readers see either the old file or the complete new one, never a part;
    on an exception the temporary file is removed. ``durable`` also flushes
    the file to disk before the rename (survives a power cut, ~5 ms a file);
    files that can be rebuilt from a durable one may skip it.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path.parent}: no such folder to write {path.name} into; create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
    try:
        yield tmp_path
        if durable:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table atomically, as TSV, CSV or Parquet by the file name."""
    path = Path(path)
    fmt = _format_of(path)
    compression = "gzip" if path.suffix.lower() == ".gz" else None
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, sep="\t" if fmt == "tsv" else ",", index=False, compression=compression)


def load_training_pairs(config) -> PairTable:
    """The labelled pairs a :class:`~itertrain.config.TrainConfig` points at.

    ``config.data`` (one table with a label column), ``config.positives`` and
    ``config.negatives`` (labels implied) are pooled. ``negatives = "repair:K"``
    re-pairs every positive's target site with K other miRNAs, drawn with the
    positives' miRNA frequencies (seeded by ``config.seed``), never making a
    known positive pair.
    """
    from itertrain.negatives import make_negatives_table

    repair = parse_repair_spec(config.negatives) if config.negatives else None
    if not (config.data or config.positives or (config.negatives and not repair)):
        raise UserError("no training data: give --data FILE, or --positives FILE and --negatives FILE")
    options = dict(seq_a_col=config.seq_a_col, seq_b_col=config.seq_b_col, weight_col=config.weight_col,
                   shape=tuple(config.shape), truncate=config.truncate)
    tables, positive_frames = [], []
    names = ("seq_a", "seq_b")  # common names: the tables may follow different column conventions
    if config.data:
        frame = read_table(config.data)
        tables.append(pairs_from_frame(frame, label_col=config.label_col, source=config.data, **options))
        positive_frames.append(positive_pairs(frame[tables[-1].labels == 1], config.seq_a_col, config.seq_b_col,
                                              None, config.data, names))
    if config.positives:
        frame = read_table(config.positives)
        tables.append(pairs_from_frame(frame, label=1, source=config.positives, **options))
        positive_frames.append(positive_pairs(frame, config.seq_a_col, config.seq_b_col, None, config.positives,
                                              names))
    if repair:
        positives = pd.concat(positive_frames, ignore_index=True)
        made = make_negatives_table(positives, target_col=names[0], mirna_col=names[1],
                                    ratio=repair[0], seed=config.seed,
                                    mode=config.repair_mode, label_col=None, source="positives")
        tables.append(pairs_from_frame(made, label=0, source=config.negatives,
                                       **{**options, "seq_a_col": names[0], "seq_b_col": names[1],
                                          "weight_col": None}))
    elif config.negatives:
        tables.append(load_pairs(config.negatives, label=0, **options))
    return tables[0] if len(tables) == 1 else PairTable.concat(tables)


def validation_name(spec: str) -> tuple[str, str]:
    """``NAME=FILE`` or ``FILE`` → (name, file); the default name is the file's stem."""
    name, sep, file = spec.rpartition("=")
    if not sep:
        file = spec
        name = Path(spec.split(":")[-1]).name.split(".")[0]
    return name, file


def load_validation_sets(config, avoid: list[str] | None = None) -> dict[str, PairTable]:
    """The labelled validation tables of ``config.val``, by name, in order.

    ``repair:K:FILE`` makes a bias-free set: FILE's positives with K re-paired
    negatives each, miRNAs drawn with the positives' frequencies (so miRNA
    identity carries no label signal), never a known positive pair of FILE or
    of the ``avoid`` tables (default: the training tables); seeded by ``config.seed``.
    """
    if avoid is None:
        avoid = [f for f in (config.data, config.positives) if f]
    sets: dict[str, PairTable] = {}
    options = dict(seq_a_col=config.seq_a_col, seq_b_col=config.seq_b_col, shape=tuple(config.shape),
                   truncate=config.truncate)
    for spec in config.val or []:
        name, file = validation_name(spec)
        if name in sets:
            raise UserError(f"two validation sets are named {name!r}; name them with NAME=FILE")
        repair = parse_repair_spec(file, "val")
        if repair:
            sets[name] = _bias_free_set(repair, config, options, avoid)
        else:
            sets[name] = load_pairs(file, label_col=config.label_col, **options)
    return sets


def positive_pairs(frame: pd.DataFrame, seq_a_col: str, seq_b_col: str, label_col: str | None, source: str,
                   names: tuple[str, str] | None = None) -> pd.DataFrame:
    """The (target, miRNA) columns of a table's positive rows: those labelled 1 when it
    has ``label_col``, else every row. ``names`` renames the two columns."""
    col_a, col_b = resolve_columns(frame, seq_a_col, seq_b_col, source)
    if label_col is not None and label_col in frame.columns:
        frame = frame[parse_labels(frame[label_col], source, label_col) == 1]
    pairs = frame[[col_a, col_b]]
    return pairs.set_axis(list(names), axis=1) if names else pairs


def read_positive_pairs(path: str | Path, seq_a_col: str, seq_b_col: str, label_col: str,
                        names: tuple[str, str] | None = None) -> pd.DataFrame:
    """:func:`positive_pairs` of the table at ``path``."""
    return positive_pairs(read_table(path), seq_a_col, seq_b_col, label_col, str(path), names)


def _bias_free_set(repair: tuple[int, str | None], config, options: dict, avoid: list[str]) -> PairTable:
    from itertrain.negatives import make_negatives_table

    k, file = repair
    if file is None:
        raise UserError(f"validation repair:{k}: name the file whose positives to re-pair, "
                        f"e.g. repair:{k}:eval.tsv")
    positives = read_positive_pairs(file, config.seq_a_col, config.seq_b_col, config.label_col)
    col_a, col_b = positives.columns
    known = [positives] + [read_positive_pairs(other, config.seq_a_col, config.seq_b_col, config.label_col,
                                               names=(col_a, col_b)) for other in avoid]
    negatives = make_negatives_table(positives, target_col=col_a, mirna_col=col_b, ratio=k,
                                     seed=config.seed, label_col=None,
                                     known_positives=pd.concat(known, ignore_index=True), source=file)
    opts = {**options, "seq_a_col": col_a, "seq_b_col": col_b}
    return PairTable.concat([pairs_from_frame(positives, label=1, source=file, **opts),
                             pairs_from_frame(negatives, label=0, source=f"repair:{k}:{file}", **opts)])
