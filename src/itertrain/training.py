"""The training loop: phases → hand-picked batches → one optimizer step per batch.

Read :func:`train` top to bottom: it is the only training loop in itertrain;
the CLI and the Python API both call it.

Run folder written by :func:`train`::

    config.toml                     resolved configuration (re-usable with --config)
    training_log.tsv                one row per phase
    batches.tsv                     one row per mini-batch
    checkpoints/model_<arch>_<p>.safetensors
    state.pt                        optimizer, RNG and log state of the last complete phase (--resume)
    summary.json                    phases run, why training stopped, final checkpoint
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from itertrain._version import __version__
from itertrain.checkpoint import checkpoint_phase, read_metadata, save_checkpoint
from itertrain.config import TrainConfig, config_to_toml, load_config
from itertrain.distributed import Distributed
from itertrain.encoding import encoding_channels, pair_features_torch, shift_sequences
from itertrain.evaluation import score_metrics
from itertrain.errors import UserError
from itertrain.io import PairTable, atomic_path, atomic_write_text
from itertrain.models import build_model, input_memory_format
from itertrain.predict import predict_scores
from itertrain.sampling import HandPickedBatchSampler, Phase

__all__ = ["train", "TrainResult", "LOG_COLUMNS", "BATCH_COLUMNS", "resolve_device", "make_optimizer"]

LOG_COLUMNS = (
    # the notebook's fields, in its order
    "max_iter", "model_name", "optimizer", "architecture", "pick_minibatches", "iteration",
    "pos_samples", "neg_ratio", "neg_samples",
    # what each phase did
    "n_batches", "train_loss", "seconds", "pos_pool_left", "neg_pool_left", "checkpoint",
)
BATCH_COLUMNS = ("iteration", "batch", "n_pos", "n_neg", "loss")
RUN_MARKER = "config.toml"
STATE_FILE = "state.pt"
BEST_CHECKPOINT = "best.safetensors"
STATE_FORMAT = "itertrain-state/1"


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    model : torch.nn.Module
        The model after the last complete phase (in eval mode).
    run_dir : pathlib.Path
    log : list of dict
        The rows of ``training_log.tsv``.
    n_phases : int
        Phases completed.
    stop_reason : str or None
        Why fewer phases than asked for ran (a pool ran dry), else None.
    checkpoints : list of pathlib.Path
    best_phase : int or None
        Phase with the best average precision on the first validation set.
    """

    model: nn.Module
    run_dir: Path
    log: list[dict[str, Any]] = field(default_factory=list)
    n_phases: int = 0
    stop_reason: str | None = None
    checkpoints: list[Path] = field(default_factory=list)
    best_phase: int | None = None

    @property
    def last_checkpoint(self) -> Path | None:
        return self.checkpoints[-1] if self.checkpoints else None


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but this machine has no CUDA GPU; use --device cpu")
    return device


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """The optimizer called ``name``; RMSprop with Keras' smoothing (rho 0.9, eps 1e-7)."""
    if name == "RMSprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7)
    if name == "Adam":
        return torch.optim.Adam(params, lr=lr, eps=1e-7)
    if name == "SGD":
        return torch.optim.SGD(params, lr=lr)
    raise UserError(f"unknown optimizer {name!r}; choose RMSprop, Adam or SGD")


def prepare_run_dir(out_dir: str | Path, config: TrainConfig, overwrite: bool = False,
                    resume: bool = False) -> Path:
    """Create ``out_dir`` holding ``config.toml``, refusing to mix a new run into an old one.

    The configuration is the first file written, so a folder killed at any
    later point is recognisably a run that ``--resume`` can continue.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    if resume:
        if not (out / RUN_MARKER).is_file():
            raise UserError(f"{out}: not an itertrain run folder (no {RUN_MARKER}); nothing to resume")
        return out
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out}: the run folder already exists and is not empty; choose another --out, "
                            "pass --resume to continue it or --overwrite to replace it")
        if not (out / RUN_MARKER).is_file():
            raise UserError(f"{out}: not an itertrain run folder (no {RUN_MARKER}); refusing to "
                            "overwrite it, choose another --out")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        header = f"itertrain {__version__} resolved configuration"
        atomic_write_text(out / RUN_MARKER, config_to_toml(config, header=header))
        (out / "checkpoints").mkdir(exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot write the run folder ({err.strerror}); choose a writable --out") from None
    return out


def _write_log(out: Path, log: list[dict[str, Any]], batch_rows: list[dict[str, Any]]) -> None:
    # with val_every > 1 some rows have no metrics: the columns are those of any row, cells left empty
    metric_columns = tuple(dict.fromkeys(k for row in log for k in row if k not in LOG_COLUMNS))
    _write_tsv(out / "training_log.tsv", LOG_COLUMNS + metric_columns, log)
    _write_tsv(out / "batches.tsv", BATCH_COLUMNS, batch_rows)


def _write_tsv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    def fmt(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)
    lines = ["\t".join(columns)] + ["\t".join(fmt(row.get(c, "")) for c in columns) for row in rows]
    atomic_write_text(path, "\n".join(lines) + "\n", durable=False)  # rebuilt from state.pt on resume


class _Progress:
    """One line per phase on stderr."""

    def __init__(self, enabled: bool | Callable[[str], None]):
        self.emit = enabled if callable(enabled) else (
            (lambda msg: print(msg, file=sys.stderr, flush=True)) if enabled else (lambda msg: None))

    def phase(self, row: dict[str, Any], total: int, selection: str | None) -> None:
        shown = f"  val AP {row[selection]:.4f}" if selection in row else ""
        self.emit(f"phase {row['iteration'] + 1:>3}/{total}  ratio {row['neg_ratio']:<5g} "
                  f"pos {row['pos_samples']:>6} neg {row['neg_samples']:>7}  "
                  f"loss {row['train_loss']:.4f}{shown}  {row['seconds']:.2f}s")


def train(
    pairs: PairTable,
    config: TrainConfig | None = None,
    out_dir: str | Path = "run",
    *,
    model: nn.Module | None = None,
    overwrite: bool = False,
    resume: bool = False,
    validation: dict[str, PairTable] | None = None,
    progress: bool | Callable[[str], None] = True,
) -> TrainResult:
    """Iterative training with hand-picked mini-batches.

    Parameters
    ----------
    pairs : PairTable
        Labelled pairs; label 1 forms the positive pool, 0 the negative pool.
    config : TrainConfig, optional
        Defaults to the notebook's settings.
    out_dir : path
        Run folder for the configuration, logs and one checkpoint per phase.
    model : torch.nn.Module, optional
        Train this module instead of ``config.arch`` (saved as ``custom``).
    overwrite : bool
        Replace an existing run folder.
    resume : bool
        Continue the run in ``out_dir`` after its last complete phase (same
        configuration and data); ends as an uninterrupted run would have.
    validation : dict of name → PairTable, optional
        Labelled sets scored after every ``config.val_every``-th phase and
        the last; their metrics go into the log as ``<name>_<metric>``, and
        the scored phase with the best average precision on the first set is
        kept as ``checkpoints/best.safetensors``.
    progress : bool or callable
        Print a line per phase to stderr (True), be silent (False), or pass
        each line to a callable.

    Returns
    -------
    TrainResult
    """
    config = config or TrainConfig()
    _check_pairs(pairs, config)
    sampler = HandPickedBatchSampler.from_config(pairs.labels, config)  # validates before any write
    group = Distributed.from_environment(config.device)
    group.check_batches(config)
    device = resolve_device(group.device(config.device))
    report = _Progress(progress if group.is_main else False)
    validation = dict(validation or {})
    selection = selection_column(validation)

    torch.set_flush_denormal(True)  # denormals made the first CNN steps ~10x slower on CPU
    if device.type == "cpu":
        _keep_freed_memory()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    arch = "custom" if model is not None else config.arch
    model = (model or build_model(config.arch, tuple(config.shape), config.dropout,
                                  encoding_channels(config.encoding))).to(device)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr)
    precision = _Precision(config.precision, device)
    out = prepare_run_dir(out_dir, config, overwrite, resume) if group.is_main else Path(out_dir)
    result = TrainResult(model=model, run_dir=out, stop_reason=sampler.stop_reason)
    fingerprint = data_fingerprint(pairs)
    batch_rows = _resume(out, config, fingerprint, model, optimizer, precision, result, report, selection,
                         group) if resume else []
    ranks = f" x {group.world_size} processes" if group.active else ""
    report.emit(f"training {sampler.n_phases - len(result.log)} phase(s) on {device}{ranks} into {out}")
    if sampler.stop_reason:
        report.emit(f"note: the pools allow {sampler.n_phases} of {len(sampler.ratios)} phases: "
                    f"{sampler.stop_reason}")

    pools = _DevicePools.of(pairs, config, device, input_memory_format(model))
    trained = group.wrap(model)
    if config.compile:
        trained = torch.compile(trained)
    steps_per_phase = [sampler.batches_in(p) * config.epochs_per_phase for p in range(sampler.n_phases)]
    phase_index = len(result.log)
    with _InterruptAtBatch() as interrupt:
        try:
            for phase in sampler.phases(start=len(result.log)):
                phase_index = phase.index
                started = time.perf_counter()
                schedule = _LearningRate(config, sum(steps_per_phase[:phase.index]), sum(steps_per_phase))
                batch_losses = _run_phase(trained, optimizer, precision, pools, phase, config, schedule, group,
                                          interrupt)
                metrics = (_validate(model, validation, device, group, config.encoding, config.score_shift)
                           if _validates_after(phase.index, sampler.n_phases, config.val_every) else {})
                rng_states = group.all_objects(torch.get_rng_state())
                if not group.is_main:
                    continue

                name = f"model_{arch}_{phase.index}"
                checkpoint = save_checkpoint(out / "checkpoints" / name, model, arch=arch,
                                             shape=tuple(config.shape), encoding=config.encoding,
                                             dropout=config.dropout, phase=phase.index,
                                             score_shift=config.score_shift, itertrain=__version__,
                                             config=config.to_dict(), metrics=metrics)
                row = _log_row(config, arch, name, phase, float(batch_losses.mean()),
                               time.perf_counter() - started, *sampler.remaining_after(phase.index),
                               checkpoint.relative_to(out))
                result.log.append({**row, **metrics})
                result.checkpoints.append(checkpoint)
                batch_rows += _batch_rows(phase, pairs.labels, batch_losses)
                _update_best(out, result.log, selection)
                _commit_phase(out, optimizer, precision, result.log, batch_rows, fingerprint, rng_states)
                report.phase(result.log[-1], sampler.n_phases, selection)
                interrupt.check()  # a Ctrl-C during validation stops here, with the phase saved
        except KeyboardInterrupt:
            done = len(result.log)
            saved = f"phases 0-{done - 1} are saved" if done else "no phase was complete"
            when = "after" if done > phase_index else "during"
            report.emit(f"interrupted {when} phase {phase_index}; {saved}. "
                        f"Continue with: itertrain train --resume {out}")
            raise

    result.n_phases = sampler.n_phases
    result.best_phase = _best_phase(result.log, selection)
    model.eval()
    if group.is_main:
        _write_summary(out, result, config, list(validation))
        if result.stop_reason:
            report.emit(f"stopped after phase {result.n_phases - 1}: {result.stop_reason}")
    group.close()
    return result


@dataclass
class _DevicePools:
    """The pooled pairs on the training device: codes, not matrices."""

    codes_a: torch.Tensor
    codes_b: torch.Tensor
    encoding: str
    layout: torch.memory_format
    labels: torch.Tensor
    weights: torch.Tensor | None
    class_weight: torch.Tensor | None
    labels_np: np.ndarray
    focal_gamma: float | None = None
    max_shift: int = 0

    @classmethod
    def of(cls, pairs: PairTable, config: TrainConfig, device: torch.device,
           layout: torch.memory_format = torch.contiguous_format) -> _DevicePools:
        return cls(
            codes_a=torch.from_numpy(pairs.codes_a).to(device),
            codes_b=torch.from_numpy(pairs.codes_b).to(device),
            encoding=config.encoding,
            layout=layout,
            labels=torch.from_numpy(pairs.labels).to(device=device, dtype=torch.float32),
            weights=None if pairs.weights is None else torch.from_numpy(pairs.weights).to(device),
            class_weight=None if config.class_weight is None else torch.tensor(config.class_weight, device=device),
            labels_np=pairs.labels,
            focal_gamma=config.focal_gamma if config.loss == "focal" else None,
            max_shift=config.augment_shift,
        )

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs ``(n, C, La, Lb)`` and labels of the pairs at ``index``.

        With ``max_shift`` each target site moves by a random number of
        positions, drawn on the CPU generator so that resumed runs draw alike.
        """
        codes_a = self.codes_a[index]
        if self.max_shift:
            shifts = torch.randint(-self.max_shift, self.max_shift + 1, (len(index),))
            codes_a = shift_sequences(codes_a, shifts)
        x = pair_features_torch(codes_a, self.codes_b[index], self.encoding, self.layout)
        return x, self.labels[index]

    def loss_sum(self, logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy summed over the pairs, weighted per sample and per class.

        Divided by the global batch size it is Keras' weighted batch mean.
        """
        each = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        if self.focal_gamma is not None:  # focal loss: (1 - p_t)^gamma down-weights easy pairs
            p_true = torch.exp(-each)
            each = (1 - p_true) ** self.focal_gamma * each
        if self.weights is not None:
            each = each * self.weights[index]
        if self.class_weight is not None:
            each = each * self.class_weight[y.long()]
        return each.sum()


class _InterruptAtBatch:
    """Ctrl-C (SIGINT) during training stops after the current batch.

    Python raises KeyboardInterrupt wherever the signal lands, so the handler
    only records the request and the loop raises between batches. A second
    Ctrl-C raises at once. Installed only in the main thread, and never over a
    SIGINT that is ignored: a job started with nohup, or with ``&`` from a
    script, inherits SIG_IGN and is meant to run on.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> _InterruptAtBatch:
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """Raise KeyboardInterrupt when a Ctrl-C came since training started."""
        if self.requested:
            raise KeyboardInterrupt


class _LearningRate:
    """The learning rate of every optimizer step, from the step number alone (resume-safe)."""

    def __init__(self, config: TrainConfig, first_step: int, total_steps: int):
        self.config, self.step, self.total = config, first_step, max(total_steps, 1)

    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        lr = self.config.lr
        if self.config.lr_schedule == "cosine":
            floor = lr / 100
            lr = floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * self.step / self.total))
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.step += 1


class _Precision:
    """Mixed precision: autocast for the forward pass, gradient scaling for fp16."""

    def __init__(self, name: str, device: torch.device):
        if name == "fp16" and device.type != "cuda":
            raise UserError("precision fp16 needs a CUDA GPU; use bf16 on the CPU")
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def _run_phase(model: nn.Module, optimizer: torch.optim.Optimizer, precision: _Precision, pools: _DevicePools,
               phase: Phase, config: TrainConfig, schedule: _LearningRate, group: Distributed,
               interrupt: _InterruptAtBatch) -> np.ndarray:
    """One optimizer step per hand-picked batch, ``epochs_per_phase`` times; the loss of each batch.

    With several processes each trains on its share of every batch; the loss
    is scaled so that DDP's gradient average is the global batch's mean.
    """
    model.train()
    device = pools.labels.device
    labels = pools.labels_np
    loss_sums = torch.zeros(len(phase.batches), device=device, dtype=torch.float64)
    # this process's share of each batch, on the device once per phase, not once per pass
    shares = [torch.from_numpy(group.share(batch, labels)).to(device) for batch in phase.batches]
    for epoch in range(config.epochs_per_phase):
        # later passes visit the same batches in another order, still fixed by (seed, phase, epoch)
        order = range(len(phase.batches)) if epoch == 0 else \
            np.random.default_rng([config.seed, 2, phase.index, epoch]).permutation(len(phase.batches))
        for b in order:
            batch, index = phase.batches[b], shares[b]
            x, y = pools.batch(index)
            with precision.autocast():
                logits = model(x)
            loss_sum = pools.loss_sum(logits.float(), y, index)
            schedule.apply(optimizer)
            optimizer.zero_grad(set_to_none=True)
            precision.step(loss_sum * (group.world_size / len(batch)), optimizer)
            loss_sums[b] += loss_sum.detach() / len(batch)
            interrupt.check()
    return (group.sum(loss_sums) / config.epochs_per_phase).cpu().numpy()


def selection_column(validation: dict[str, PairTable] | None) -> str | None:
    """The log column that selects the best checkpoint: average precision on the first validation set."""
    return f"{next(iter(validation))}_average_precision" if validation else None


@torch.no_grad()
def _validate(model: nn.Module, validation: dict[str, PairTable], device: torch.device,
              group: Distributed, encoding: str, score_shift: int = 0) -> dict[str, float]:
    """Metrics on every validation set; each process scores its slice, the scores are gathered."""
    metrics: dict[str, float] = {}
    for name, pairs in validation.items():
        mine = pairs.subset(np.arange(len(pairs))[group.slice_of(len(pairs))]) if group.active else pairs
        scores = group.gather(predict_scores(model, mine, device=device, encoding=encoding,
                                             score_shift=score_shift))
        metrics.update({f"{name}_{k}": v for k, v in score_metrics(pairs.labels, scores).items()})
    return metrics


def _validates_after(phase: int, n_phases: int, every: int) -> bool:
    """Whether validation runs after ``phase``: every ``every``-th phase and always the last."""
    return (phase + 1) % every == 0 or phase == n_phases - 1


def _best_phase(log: list[dict[str, Any]], column: str | None) -> int | None:
    values = [row.get(column, math.nan) for row in log] if column else []
    finite = [(v, -i) for i, v in enumerate(values) if isinstance(v, float) and math.isfinite(v)]
    return -max(finite)[1] if finite else None  # the earliest of equally good phases


def _update_best(out: Path, log: list[dict[str, Any]], column: str | None) -> None:
    """Make ``checkpoints/best.safetensors`` the checkpoint of the best logged phase."""
    best = _best_phase(log, column)
    if best is None:
        return
    target = out / "checkpoints" / BEST_CHECKPOINT
    if target.is_file() and read_metadata(target).get("phase") == best:
        return
    with atomic_path(target) as tmp:
        shutil.copyfile(out / log[best]["checkpoint"], tmp)


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory instead of unmapping it.

    Every CPU step allocates and frees activations of several MB; glibc maps
    and unmaps each, and re-touching fresh pages cost up to a third of the
    step time (measured: 1.1 M page faults in 10 steps of mirbind_cnn at batch
    512, none after this). The price: the process keeps its peak memory.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: serve large blocks from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not hand freed heap back at once
    except (OSError, AttributeError):  # not glibc
        pass


def _check_pairs(pairs: PairTable, config: TrainConfig) -> None:
    if pairs.labels is None:
        raise UserError(f"{pairs.source}: training needs labels (0/1)")
    if pairs.shape != tuple(config.shape):
        raise UserError(f"{pairs.source}: pairs are encoded as {pairs.shape[0]}x{pairs.shape[1]} but the "
                        f"config asks for {config.shape[0]}x{config.shape[1]} matrices")


def data_fingerprint(pairs: PairTable) -> str:
    """A digest of the pooled pairs, so a resumed run can check its data did not change."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (pairs.codes_a, pairs.codes_b, pairs.labels, pairs.weights):
        if part is not None:
            digest.update(memoryview(np.ascontiguousarray(part)).cast("B"))
    return digest.hexdigest()


def _commit_phase(out: Path, optimizer: torch.optim.Optimizer, precision: _Precision, log: list[dict[str, Any]],
                  batch_rows: list[dict[str, Any]], fingerprint: str, rng_states: list[torch.Tensor]) -> None:
    """Make the phase durable. The state file is the commit point: it is written after the
    phase's checkpoint, and the TSVs after it, so a kill between any two writes resumes cleanly."""
    state = {
        "format": STATE_FORMAT,
        "phases_done": len(log),
        "optimizer": optimizer.state_dict(),
        "grad_scaler": precision.scaler.state_dict(),
        "torch_rng": rng_states,  # one per process
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "log": log,
        "batches": batch_rows,
        "fingerprint": fingerprint,
    }
    with atomic_path(out / STATE_FILE) as tmp:
        torch.save(state, tmp)
    _write_log(out, log, batch_rows)


def _resume(out: Path, config: TrainConfig, fingerprint: str, model: nn.Module,
            optimizer: torch.optim.Optimizer, precision: _Precision, result: TrainResult, report: _Progress,
            selection: str | None, group: Distributed) -> list[dict[str, Any]]:
    """Load the last committed phase into ``model``, ``optimizer``, the RNGs and ``result``.

    The main process reads the run folder and hands the state to the others.
    """
    state = _read_state(out, config, fingerprint, report) if group.is_main else None
    state = group.broadcast(state)
    if state is None:
        return []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("grad_scaler"):
        precision.scaler.load_state_dict(state["grad_scaler"])
    rng = state["torch_rng"]
    torch.set_rng_state(rng[group.rank] if len(rng) == group.world_size else rng[0])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    result.log[:] = state["log"]
    result.checkpoints[:] = [out / row["checkpoint"] for row in result.log]
    if group.is_main:
        if len(rng) != group.world_size:
            report.emit(f"note: the run was trained with {len(rng)} process(es), now {group.world_size}: "
                        "dropout masks will differ from an uninterrupted run")
        _remove_checkpoints_after(out, result.log[-1]["iteration"])
        _update_best(out, result.log, selection)
        _write_log(out, result.log, state["batches"])
        report.emit(f"resuming {out} after phase {result.log[-1]['iteration']}")
    return list(state["batches"])


def _read_state(out: Path, config: TrainConfig, fingerprint: str, report: _Progress) -> dict[str, Any] | None:
    """The committed state of a run folder, checked against this run's settings and data."""
    saved = TrainConfig.from_dict(load_config(out / RUN_MARKER), source=str(out / RUN_MARKER))
    changed = [k for k, v in saved.to_dict().items() if k != "device" and getattr(config, k) != v]
    if changed:
        raise UserError(f"{out}: cannot resume with different settings ({', '.join(changed)}); "
                        f"resume with the run's own config.toml or start a new run")
    state_path = out / STATE_FILE
    if not state_path.is_file():
        _remove_checkpoints_after(out, -1)
        (out / "checkpoints" / BEST_CHECKPOINT).unlink(missing_ok=True)
        report.emit(f"resuming {out}: no phase was complete, starting from phase 0")
        return None
    try:
        state = torch.load(state_path, weights_only=True)  # tensors and plain data only: no code runs
    except Exception as err:  # noqa: BLE001 - any unreadable state is the same user-facing problem
        raise UserError(f"{state_path}: unreadable resume state ({str(err).splitlines()[0]}); "
                        "start a new run with --overwrite") from None
    if state.get("format") != STATE_FORMAT:
        raise UserError(f"{state_path}: not an itertrain resume state")
    if state["fingerprint"] != fingerprint:
        raise UserError(f"{out}: the training data changed since this run started; "
                        "resume with the same tables or start a new run")
    last = state["log"][-1]
    with safe_open(str(out / last["checkpoint"]), framework="pt") as fh:
        state["model"] = {key: fh.get_tensor(key) for key in fh.keys()}
    return state


def _remove_checkpoints_after(out: Path, phase: int) -> None:
    """Drop checkpoints of phases that were written but never committed."""
    for path in (out / "checkpoints").glob("model_*.safetensors"):
        written = checkpoint_phase(path)
        if written is not None and written > phase:
            path.unlink()


def _log_row(config: TrainConfig, arch: str, name: str, phase: Phase, loss: float, seconds: float,
             pos_left: int, neg_left: int, checkpoint: Path) -> dict[str, Any]:
    return {
        "max_iter": config.max_iter, "model_name": name, "optimizer": config.optimizer,
        "architecture": arch, "pick_minibatches": config.batching == "handpicked",
        "iteration": phase.index, "pos_samples": len(phase.positives), "neg_ratio": phase.neg_ratio,
        "neg_samples": len(phase.negatives), "n_batches": len(phase.batches), "train_loss": loss,
        "seconds": seconds, "pos_pool_left": pos_left, "neg_pool_left": neg_left,
        "checkpoint": checkpoint.as_posix(),
    }


def _batch_rows(phase: Phase, labels: np.ndarray, losses: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"iteration": phase.index, "batch": b, "n_pos": n_pos, "n_neg": n_neg, "loss": float(loss)}
        for b, ((n_pos, n_neg), loss) in enumerate(zip(phase.batch_counts(labels), losses))
    ]


def _write_summary(out: Path, result: TrainResult, config: TrainConfig, validation: list[str]) -> None:
    best = result.best_phase
    summary = {
        "itertrain": __version__,
        "phases_requested": config.max_iter,
        "phases_completed": result.n_phases,
        "stop_reason": result.stop_reason,
        "last_checkpoint": result.last_checkpoint.relative_to(out).as_posix() if result.last_checkpoint else None,
        "final_train_loss": result.log[-1]["train_loss"] if result.log else None,
        "validation_sets": validation,
        "best_phase": best,
        "best_checkpoint": f"checkpoints/{BEST_CHECKPOINT}" if best is not None else None,
        "best_metrics": {k: (v if math.isfinite(v) else None) for k, v in result.log[best].items()
                         if k not in LOG_COLUMNS} if best is not None else None,
        "seconds": sum(row["seconds"] for row in result.log),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
