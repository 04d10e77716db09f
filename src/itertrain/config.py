"""One validated configuration object; its defaults are the notebook's settings.

A run is fully described by a :class:`TrainConfig`: it is read from TOML
(``--config``), overridden by command-line options, validated once before any
work starts, and written to every run folder as ``config.toml`` so the run can
be repeated with ``itertrain train --config RUN/config.toml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from itertrain.encoding import ENCODINGS
from itertrain.errors import UserError

__all__ = ["TrainConfig", "load_config", "config_to_toml", "resolve_data_path", "resolve_data_paths",
           "parse_repair_spec", "OPTIMIZERS", "BATCHING_MODES", "LR_SCHEDULES"]

OPTIMIZERS = ("RMSprop", "Adam", "SGD")
BATCHING_MODES = ("handpicked", "random")
LR_SCHEDULES = ("constant", "cosine")
LOSSES = ("bce", "focal")
PRECISIONS = ("fp32", "bf16", "fp16")
REPAIR_PREFIX = "repair:"


def parse_repair_spec(value: str, what: str = "negatives") -> tuple[int, str | None] | None:
    """Read a re-pairing spec: ``repair:K`` → (K, None), ``repair:K:FILE`` → (K, FILE).

    Parameters
    ----------
    value : str
        A data setting (a file name or a ``repair:`` spec).
    what : str
        The setting's name, for the error message.

    Returns
    -------
    (int, str or None) or None
        K and the file whose positives are re-paired (None: the training
        positives); None when ``value`` is not a ``repair:`` spec.

    Raises
    ------
    UserError
        When K is not a whole number >= 1.
    """
    if not value.startswith(REPAIR_PREFIX):
        return None
    k, _, file = value[len(REPAIR_PREFIX):].partition(":")
    if not (k.isdigit() and int(k) >= 1):
        example = "repair:5" if not file else f"repair:10:{file}"
        raise UserError(f"config: {what}={value!r}: write K as a whole number >= 1, e.g. {example}")
    return int(k), file or None


def _opt(default: Any, help: str, **kw: Any) -> Any:
    """A config field with its command-line help text."""
    factory = kw.pop("default_factory", None)
    meta = {"help": help, **kw}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Defaults reproduce the notebook: 25 phases of 100 positives, a
    negative:positive ratio of 1 growing by 0.5 per phase, 10 hand-picked
    mini-batches per phase, RMSprop, the ``arch_00b`` CNN on 50×20 matrices.
    """

    # --- schedule -----------------------------------------------------------
    max_iter: int = _opt(25, "number of phases (the notebook's MAX_ITER)")
    pos_samples: int = _opt(100, "positives drawn per phase (POS_SAMPLES)")
    neg_ratio_start: float = _opt(1.0, "negative:positive ratio of the first phase (NEG_RATIO_START)")
    neg_ratio_step: float = _opt(0.5, "ratio increase per phase (NEG_RATIO_MINISTEPS)")
    neg_ratios: list[float] | None = _opt(
        None, "explicit ratio per phase, comma separated; overrides start/step and sets max_iter"
    )
    pos_counts: list[int] | None = _opt(
        None, "explicit positives per phase, comma separated (with neg_counts; overrides pos_samples and ratios)")
    neg_counts: list[int] | None = _opt(None, "explicit negatives per phase, comma separated (with pos_counts)")
    recycle_positives: bool = _opt(False, "start another pass over the positives when they run out")
    n_batches: int = _opt(10, "mini-batches per phase (SPLIT_BATCH)")
    batch_size: int | None = _opt(
        None, "instead of n_batches: about this many pairs per batch, so later phases get more batches")
    batching: str = _opt(
        "handpicked", "handpicked: every batch holds positives; random: shuffled batches of the same sizes",
        choices=BATCHING_MODES,
    )
    epochs_per_phase: int = _opt(1, "passes over each phase's batches (the notebook: 1)")
    augment_shift: int = _opt(0, "training only: move each target site by up to N positions at random "
                                 "(a new shift per pair and pass; the ends fill with padding)")
    score_shift: int = _opt(0, "score each pair as the mean over its target site moved by -N..N positions "
                               "(test-time augmentation); checkpoints keep N for predict and evaluate")
    # --- model and optimizer ------------------------------------------------
    arch: str = _opt("arch_00b", "model architecture, by registry name")
    encoding: str = _opt(
        "wc", "model input: wc (the Watson-Crick pair matrix, as in the notebook); wc+wobble (adds G:U pairs); "
              "wc+wobble+gc (adds a channel of the G:C pairs among the Watson-Crick ones: 3 channels); "
              "wc+wobble+pairs (adds a channel per pair type A:U, U:A, G:C, C:G, G:U, U:G: 8 channels); "
              "wc+bases (adds each side's bases, one-hot: 9 channels); wc+wobble+bases (10 channels)",
        choices=tuple(ENCODINGS))
    dropout: float | None = _opt(None, "override every dropout rate of the architecture (0 disables)")
    loss: str = _opt("bce", "bce: binary cross-entropy; focal: focal loss (Lin et al. 2017)", choices=LOSSES)
    focal_gamma: float = _opt(2.0, "focusing parameter of the focal loss")
    optimizer: str = _opt("RMSprop", "optimizer", choices=OPTIMIZERS)
    lr: float = _opt(0.001, "learning rate (Keras' RMSprop default)")
    lr_schedule: str = _opt(
        "constant", "constant, or cosine: decay from lr to lr/100 over all steps of the run",
        choices=LR_SCHEDULES,
    )
    class_weight: list[float] | None = _opt(
        None, "loss weights of class 0 and class 1, e.g. 1,5 (the notebook's class_weight)"
    )
    precision: str = _opt(
        "fp32", "fp32; bf16 (autocast, CPU or GPU); fp16 (autocast with gradient scaling, CUDA only)",
        choices=PRECISIONS)
    compile: bool = _opt(False, "compile the model with torch.compile (worth it for long GPU runs)")
    threads: int | None = _opt(None, "CPU threads for torch (default: torch's choice; 1 is often faster "
                                     "for this small model on a busy or small machine)")
    seed: int = _opt(0, "global seed: pools, batches, initial weights and dropout")
    device: str = _opt("auto", "cpu, cuda, cuda:N or auto (cuda when available)")
    # --- data ---------------------------------------------------------------
    data: str | None = _opt(None, "one table holding both classes (label column 0/1)")
    positives: str | None = _opt(None, "table of positive pairs")
    negatives: str | None = _opt(
        None, "table of negative pairs, or repair:K to re-pair every positive's target site with K other "
              "miRNAs (frequency-matched) on the fly")
    repair_mode: str = _opt(
        "frequency", "miRNAs of repair:K negatives: frequency (as among the positives) or uniform",
        choices=("frequency", "uniform"))
    val: list[str] | None = _opt(
        None, "validation table scored after every phase (see val_every); repeatable; NAME=FILE names it; "
              "NAME=repair:K:FILE uses FILE's positives with K frequency-matched re-paired negatives each "
              "(the first set selects the best checkpoint by average precision)")
    val_every: int = _opt(1, "score the validation sets after every N-th phase and after the last "
                             "(1: after every phase); the best checkpoint is chosen among the scored phases")
    report: bool = _opt(False, "write figures and report.html into the run folder when training ends")
    seq_a_col: str = _opt("seq_a", "column of the matrix rows (target site)")
    seq_b_col: str = _opt("seq_b", "column of the matrix columns (miRNA)")
    label_col: str = _opt("label", "column of the 0/1 labels")
    weight_col: str | None = _opt(None, "column of per-sample loss weights")
    shape: list[int] = _opt(None, "matrix shape rows,cols", default_factory=lambda: [50, 20])
    truncate: bool = _opt(False, "cut sequences longer than the shape instead of failing")

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------
    def ratios(self) -> list[float]:
        """The negative:positive ratio of each phase."""
        if self.pos_counts is not None:
            return [n / p for p, n in zip(self.pos_counts, self.neg_counts)]
        if self.neg_ratios is not None:
            return [float(r) for r in self.neg_ratios]
        return [self.neg_ratio_start + phase * self.neg_ratio_step for phase in range(self.max_iter)]

    def phase_counts(self) -> tuple[list[int], list[int]]:
        """Positives and negatives drawn per phase: by default ``pos_samples`` and
        ``int(ratio * pos_samples)``, as in the notebook."""
        if self.pos_counts is not None:
            return list(self.pos_counts), list(self.neg_counts)
        return [self.pos_samples] * self.max_iter, [int(r * self.pos_samples) for r in self.ratios()]

    def phase_batches(self) -> list[int]:
        """Mini-batches per phase: ``n_batches``, or enough for ``batch_size`` pairs each
        (never more than the phase's positives when batches are hand-picked)."""
        pos_counts, neg_counts = self.phase_counts()
        if self.batch_size is None:
            return [self.n_batches] * len(pos_counts)
        wanted = [max(1, math.ceil((p + n) / self.batch_size)) for p, n in zip(pos_counts, neg_counts)]
        if self.batching == "handpicked":
            wanted = [min(w, p) for w, p in zip(wanted, pos_counts)]
        return wanted

    def validate(self) -> None:
        """Raise :class:`UserError` naming the first impossible value."""
        if self.neg_ratios is not None:
            self.neg_ratios = [float(r) for r in self.neg_ratios]
            if not self.neg_ratios:
                raise UserError("config: neg_ratios is empty; give at least one ratio or remove it")
            self.max_iter = len(self.neg_ratios)
        self.shape = [int(s) for s in self.shape]
        if (self.pos_counts is None) != (self.neg_counts is None):
            raise UserError("config: pos_counts and neg_counts go together; give both or neither")
        if self.pos_counts is not None:
            self.pos_counts = [int(c) for c in self.pos_counts]
            self.neg_counts = [int(c) for c in self.neg_counts]
            _check(len(self.pos_counts) == len(self.neg_counts) >= 1,
                   "config: pos_counts and neg_counts need one count per phase each, as many of both")
            _check(min(self.pos_counts) >= 1 and min(self.neg_counts) >= 0,
                   "config: pos_counts must be >= 1 and neg_counts >= 0")
            self.max_iter = len(self.pos_counts)
        if self.threads is not None:
            _check(isinstance(self.threads, int) and self.threads >= 1,
                   f"config: threads must be a whole number >= 1, got {self.threads!r}")
        _check(self.precision in PRECISIONS,
               f"config: precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _check(self.loss in LOSSES, f"config: loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        _check(isinstance(self.focal_gamma, (int, float)) and self.focal_gamma >= 0,
               f"config: focal_gamma must be >= 0, got {self.focal_gamma!r}")
        _check(isinstance(self.max_iter, int) and self.max_iter >= 1,
               f"config: max_iter must be a whole number of phases >= 1, got {self.max_iter!r}")
        _check(isinstance(self.pos_samples, int) and self.pos_samples >= 1,
               f"config: pos_samples must be >= 1, got {self.pos_samples!r}")
        _check(isinstance(self.n_batches, int) and self.n_batches >= 1,
               f"config: n_batches must be >= 1, got {self.n_batches!r}")
        for phase, ratio in enumerate(self.ratios() if self.pos_counts is None else []):
            _check(math.isfinite(ratio) and ratio > 0,
                   f"config: the negative ratio of phase {phase} is {ratio:g}; ratios must be > 0 "
                   "(check neg_ratio_start, neg_ratio_step or neg_ratios)")
        _check(self.batching in BATCHING_MODES,
               f"config: batching must be one of {', '.join(BATCHING_MODES)}, got {self.batching!r}")
        if self.batch_size is not None:
            _check(isinstance(self.batch_size, int) and self.batch_size >= 1,
                   f"config: batch_size must be a whole number >= 1, got {self.batch_size!r}")
        if self.batching == "handpicked":
            for fewest, n_batches in zip(self.phase_counts()[0], self.phase_batches()):
                _check(fewest >= n_batches,
                       f"config: pos_samples={fewest} cannot put a positive in each of "
                       f"n_batches={n_batches} hand-picked batches; lower n_batches or raise pos_samples")
        _check(isinstance(self.epochs_per_phase, int) and self.epochs_per_phase >= 1,
               f"config: epochs_per_phase must be a whole number >= 1, got {self.epochs_per_phase!r}")
        _check(self.lr_schedule in LR_SCHEDULES,
               f"config: lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        repair = parse_repair_spec(self.negatives) if self.negatives else None
        if repair and repair[1] is not None:
            raise UserError(f"config: negatives={self.negatives!r}: training negatives are re-paired from the "
                            "training positives; write repair:K, e.g. repair:5")
        _check(self.repair_mode in ("frequency", "uniform"),
               f"config: repair_mode must be frequency or uniform, got {self.repair_mode!r}")
        if self.val is not None:
            self.val = [str(v) for v in self.val]
        _check(isinstance(self.val_every, int) and not isinstance(self.val_every, bool) and self.val_every >= 1,
               f"config: val_every must be a whole number >= 1, got {self.val_every!r}")
        _check(self.optimizer in OPTIMIZERS,
               f"config: optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        _check(isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0,
               f"config: lr must be a positive number, got {self.lr!r}")
        _check(self.encoding in ENCODINGS,
               f"config: encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if self.dropout is not None:
            _check(0 <= self.dropout < 1, f"config: dropout must be in [0, 1), got {self.dropout!r}")
        if self.class_weight is not None:
            self.class_weight = [float(w) for w in self.class_weight]
            _check(len(self.class_weight) == 2 and all(w >= 0 for w in self.class_weight)
                   and sum(self.class_weight) > 0,
                   f"config: class_weight needs two non-negative weights (class 0, class 1), "
                   f"got {self.class_weight!r}")
        _check(len(self.shape) == 2 and all(s >= 1 for s in self.shape),
               f"config: shape must be two positive sizes like 50,20, got {self.shape!r}")
        for name in ("augment_shift", "score_shift"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value < self.shape[0],
                   f"config: {name} must be a whole number from 0 to {self.shape[0] - 1} "
                   f"(the target length less one), got {value!r}")
        _check(isinstance(self.seed, int) and self.seed >= 0,
               f"config: seed must be a whole number >= 0, got {self.seed!r}")

    # ------------------------------------------------------------------------
    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
                raise UserError(f"{source}: unknown setting {key!r}{hint}")
        try:
            return cls(**values)
        except TypeError as err:
            raise UserError(f"{source}: {err}") from None


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of settings (flat keys, or under a ``[train]`` table).

    Relative data paths are resolved against the file's folder so that a
    config works from any working directory.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"{path}: cannot read the config file ({err.strerror}); check the path") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: not valid TOML ({err}); fix the file") from None
    if isinstance(values.get("train"), dict):
        values = {**{k: v for k, v in values.items() if k != "train"}, **values["train"]}
    return resolve_data_paths(values, path.parent)


def resolve_data_paths(values: dict[str, Any], base: str | Path = ".") -> dict[str, Any]:
    """``values`` with its data settings (data, positives, negatives, val) made absolute from ``base``."""
    values = dict(values)
    for key in ("data", "positives", "negatives"):
        if isinstance(values.get(key), str) and values[key]:
            values[key] = resolve_data_path(values[key], base, key)
    if isinstance(values.get("val"), list):
        values["val"] = [resolve_data_path(v, base, "val") for v in values["val"]]
    return values


def resolve_data_path(value: str, base: str | Path = ".", what: str = "data") -> str:
    """An absolute path for a data setting, keeping ``repair:K``, ``repair:K:`` and ``NAME=`` prefixes."""
    name, sep, file = value.rpartition("=") if "=" in value else ("", "", value)
    repair = ""
    spec = parse_repair_spec(file, what)
    if spec:
        k, file = spec
        if file is None:  # repair:K, made from the training positives
            return value
        repair = f"{REPAIR_PREFIX}{k}:"
    absolute = file if Path(file).is_absolute() else str((Path(base) / file).resolve())
    return f"{name}{sep}{repair}{absolute}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def config_to_toml(config: TrainConfig, header: str = "") -> str:
    """The resolved configuration as TOML text (unset optional values commented)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            lines.append(f"# {f.name} =   # not set: {f.metadata['help']}")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
