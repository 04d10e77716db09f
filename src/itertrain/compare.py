"""Comparing training strategies on the same pools and the same training budget.

A comparison trains every *strategy* once per seed with :func:`itertrain.train`
and tabulates what each run saw and how well it scores on the validation sets.
Seed ``k`` means ``TrainConfig.seed = base seed + k`` for every strategy (a
paired design): the same pools (also the same ``repair:K`` negatives), the
same initial weights.

The configuration is TOML::

    [train]                      # the base TrainConfig: data, val, schedule, model
    data = "train.tsv"
    val = ["r1=val_1_1.tsv", "r10=val_1_10.tsv"]
    max_iter = 10
    pos_samples = 1000
    neg_ratio_step = 1.0
    n_batches = 100

    [synthetic]                  # optional, instead of data files: built-in pools
    kind = "seed-match"          # pools: make_synthetic(kind, n_pos, n_neg, shape, seed)
    n_pos = 3000
    n_neg = 30000
    val_pos = 1000               # one fixed held-out set "heldout", seed 1000003
    val_neg = 10000

    [compare]
    seeds = 5                    # default for --seeds
    reference = "iterative-handpicked"   # default: the first strategy
    equal_budget = true          # false: unequal planned budgets warn instead of failing

    [strategies.iterative-handpicked]
    kind = "iterative-handpicked"
    [strategies.my-idea]         # any TrainConfig keys override the base
    kind = "fixed-random"
    ratio = 4                    # fixed-ratio kinds: the ratio (default: the base's final one)
    lr = 0.0005

Without ``[strategies]`` the six built-in kinds run, each named after its kind.
A kind fixes ``batching``, ``loss`` and ``class_weight`` (and the per-phase
counts, except the iterative kinds, which keep the base schedule; ``balanced``
also sets ``recycle_positives``); everything else comes from ``[train]``. Keys
in the strategy's table override both (a schedule key such as ``pos_samples``
changes the schedule the kind derives its counts from). Every built-in kind draws, in every phase,
exactly as many pairs as the base schedule (a) does, in the same number of
batches, so all strategies see the same number of samples and take the same
number of optimizer steps:

==========================  ==================================================
``iterative-handpicked``    (a) the base schedule, hand-picked batches (the method)
``iterative-random``        (b) the base schedule, random batches
``fixed-random``            (c) each phase's total at a fixed ratio r (default:
                            the base's final ratio), random batches
``fixed-weighted``          (d) as (c) with class weights 1 : r
``balanced``                (e) half positives in every phase and every batch
                            (hand-picked; positives recycled when they run out),
                            the idea of imbalanced-learn's BalancedBatchGenerator
``focal``                   (f) as (c) with the focal loss (``focal_gamma``)
==========================  ==================================================

Output folder::

    plan.json                         the settings of every strategy (checked on resume)
    runs/<strategy>/seed<k>/          one itertrain run folder per strategy and seed
    runs.tsv                          one row per strategy and seed
    summary.tsv                       per strategy and measure: n, mean, sd, difference
                                      from the reference, paired t-test p-value
    summary.md                        the same as a Markdown table
    figures/final_metrics.png         per-strategy distribution of the final metrics
    figures/metric_vs_phase.png       validation average precision per phase

Final metrics are those of the **last phase** of each run: no checkpoint is
chosen on the validation sets that are reported. A run whose folder holds
``summary.json`` is finished and never retrained; an unfinished one is resumed
after its last complete phase.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from itertrain.config import TrainConfig, load_config, resolve_data_paths
from itertrain.errors import UserError
from itertrain.io import PairTable, atomic_write_text, load_training_pairs, load_validation_sets, write_table
from itertrain.sampling import HandPickedBatchSampler
from itertrain.synthetic import GENERATORS, make_synthetic

__all__ = [
    "STRATEGY_KINDS", "Strategy", "SyntheticSource", "Comparison", "ComparisonResult",
    "load_comparison", "strategy_overrides", "run_comparison", "collect_runs", "summarize",
    "paired_t_test", "summary_markdown", "write_figures", "BudgetWarning",
]

STRATEGY_KINDS = ("iterative-handpicked", "iterative-random", "fixed-random", "fixed-weighted", "balanced", "focal")
FIXED_RATIO_KINDS = ("fixed-random", "fixed-weighted", "focal")
RUN_FINISHED = "summary.json"
PLAN_FILE = "plan.json"
HELDOUT_SEED = 1_000_003
REPORTED_METRICS = ("average_precision", "roc_auc")
BUDGET_COLUMNS = ("samples_seen", "steps", "batches_without_positive", "wall_seconds")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SETTINGS_NOT_COMPARED = ("device", "seed")


class BudgetWarning(UserWarning):
    """A strategy sees fewer samples or steps than the reference (a pool ran dry, or by configuration)."""


# ---------------------------------------------------------------------------
# the configuration

@dataclass(frozen=True)
class SyntheticSource:
    """Built-in synthetic pools (one set per seed) and one fixed held-out validation set."""

    kind: str = "seed-match"
    n_pos: int = 3000
    n_neg: int = 30000
    val_pos: int = 1000
    val_neg: int = 10000

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> SyntheticSource:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"{source} [synthetic]: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
        made = cls(**values)
        if made.kind not in GENERATORS:
            raise UserError(f"{source} [synthetic]: kind must be one of {', '.join(GENERATORS)}, got {made.kind!r}")
        for key in ("n_pos", "n_neg", "val_pos", "val_neg"):
            value = getattr(made, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{source} [synthetic]: {key} must be a whole number >= 1, got {value!r}")
        return made

    def pools(self, config: TrainConfig) -> PairTable:
        return make_synthetic(self.kind, self.n_pos, self.n_neg, tuple(config.shape), seed=config.seed)

    def validation(self, config: TrainConfig) -> dict[str, PairTable]:
        return {"heldout": make_synthetic(self.kind, self.val_pos, self.val_neg, tuple(config.shape),
                                          seed=HELDOUT_SEED)}


@dataclass(frozen=True)
class Strategy:
    """One way of training: a name, an optional built-in kind and its configuration at the base seed."""

    name: str
    config: TrainConfig
    kind: str | None = None

    def at_seed(self, k: int, base_seed: int) -> TrainConfig:
        return self.config.replace(seed=base_seed + k)


@dataclass
class Comparison:
    """A parsed comparison configuration.

    Attributes
    ----------
    base : TrainConfig
        The ``[train]`` table.
    strategies : list of Strategy
        In the order of the file.
    reference : str
        Name of the strategy the others are tested against (a).
    seeds : int
        Default number of seeds.
    synthetic : SyntheticSource or None
    equal_budget : bool
        Fail (True) or only warn (False) when planned budgets differ.
    source : str
        Where the configuration came from, for messages.
    """

    base: TrainConfig
    strategies: list[Strategy]
    reference: str
    seeds: int = 5
    synthetic: SyntheticSource | None = None
    equal_budget: bool = True
    source: str = "config"

    def strategy(self, name: str) -> Strategy:
        for strategy in self.strategies:
            if strategy.name == name:
                return strategy
        raise UserError(f"{self.source}: no strategy named {name!r}; strategies: "
                        f"{', '.join(s.name for s in self.strategies)}")

    def with_device(self, device: str) -> Comparison:
        """The same comparison on another device (``--device``)."""
        strategies = [dataclasses.replace(s, config=s.config.replace(device=device)) for s in self.strategies]
        return dataclasses.replace(self, base=self.base.replace(device=device), strategies=strategies)

    def plan(self) -> dict[str, Any]:
        """What must not change between a comparison and its resumption."""
        return {
            "synthetic": dataclasses.asdict(self.synthetic) if self.synthetic else None,
            "base_seed": self.base.seed,
            "strategies": {s.name: _comparable_settings(s.config) for s in self.strategies},
        }


def _comparable_settings(config: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _SETTINGS_NOT_COMPARED}


def strategy_overrides(base: TrainConfig, kind: str, ratio: float | None = None) -> dict[str, Any]:
    """The TrainConfig settings a built-in strategy ``kind`` derives from the base schedule.

    Every kind keeps the base's per-phase total of pairs, so it sees as many
    samples, in as many batches, as the base schedule.

    Parameters
    ----------
    base : TrainConfig
        The base schedule, strategy (a).
    kind : str
        One of :data:`STRATEGY_KINDS`.
    ratio : float, optional
        The negative:positive ratio of the fixed-ratio kinds; default the
        base's final ratio.

    Returns
    -------
    dict
        Keyword arguments for ``base.replace``.
    """
    if kind not in STRATEGY_KINDS:
        raise UserError(f"unknown strategy kind {kind!r}; choose one of {', '.join(STRATEGY_KINDS)}")
    if ratio is not None and kind not in FIXED_RATIO_KINDS:
        raise UserError(f"strategy kind {kind!r} takes no ratio; only {', '.join(FIXED_RATIO_KINDS)} do")
    pos, neg = base.phase_counts()
    totals = [p + n for p, n in zip(pos, neg)]
    plain = {"loss": "bce", "class_weight": None}
    if kind == "iterative-handpicked":
        return {**plain, "batching": "handpicked"}
    if kind == "iterative-random":
        return {**plain, "batching": "random"}
    if kind == "balanced":
        pos_b = [math.ceil(t / 2) for t in totals]
        return {**plain, "batching": "handpicked", "recycle_positives": True,
                "pos_counts": pos_b, "neg_counts": [t - p for t, p in zip(totals, pos_b)]}
    r = float(neg[-1] / pos[-1]) if ratio is None else float(ratio)
    if not (math.isfinite(r) and r >= 0):
        raise UserError(f"strategy kind {kind!r}: ratio must be a number >= 0, got {ratio!r}")
    pos_f = [min(t, max(1, round(t / (1 + r)))) for t in totals]
    fixed = {**plain, "batching": "random", "pos_counts": pos_f,
             "neg_counts": [t - p for t, p in zip(totals, pos_f)]}
    if kind == "fixed-weighted":
        fixed["class_weight"] = [1.0, r]
    if kind == "focal":
        fixed["loss"] = "focal"
    return fixed


def _default_strategy_tables() -> dict[str, dict[str, Any]]:
    return {kind: {"kind": kind} for kind in STRATEGY_KINDS}


def _parse_strategy(name: str, table: Any, base: TrainConfig, base_dir: Path, source: str) -> Strategy:
    where = f"{source} [strategies.{name}]"
    if not _NAME.match(name):
        raise UserError(f"{where}: a strategy name may hold only letters, digits, '.', '_' and '-' "
                        "(it names a folder); rename it")
    if not isinstance(table, dict):
        raise UserError(f"{where}: must be a table of settings, e.g. kind = \"fixed-random\"")
    values = dict(table)
    kind, ratio = values.pop("kind", None), values.pop("ratio", None)
    if "seed" in values:
        raise UserError(f"{where}: a strategy cannot set its own seed (seeds are paired across strategies); "
                        "set seed in [train]")
    if kind is not None and kind not in STRATEGY_KINDS:
        raise UserError(f"{where}: unknown kind {kind!r}; choose one of {', '.join(STRATEGY_KINDS)}, "
                        "or leave kind out and override settings only")
    if ratio is not None and (kind is None or not isinstance(ratio, (int, float))):
        raise UserError(f"{where}: ratio must be a number and goes with a fixed-ratio kind "
                        f"({', '.join(FIXED_RATIO_KINDS)}), got ratio = {ratio!r}, kind = {kind!r}")
    values = resolve_data_paths(values, base_dir)
    if ("pos_counts" in values) != ("neg_counts" in values):
        raise UserError(f"{where}: pos_counts and neg_counts go together; give both")
    own = TrainConfig.from_dict({**base.to_dict(), **values}, source=where)  # the schedule the kind derives from
    try:
        derived = strategy_overrides(own, kind, ratio) if kind else {}
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    return Strategy(name, TrainConfig.from_dict({**own.to_dict(), **derived, **values}, source=where), kind)


def comparison_from_dict(values: dict[str, Any], source: str = "config", base_dir: str | Path = ".") -> Comparison:
    """Build a :class:`Comparison` from the dict of a TOML file (see the module docs)."""
    values = dict(values)
    compare = _table(values.pop("compare", {}), "compare", source)
    strategy_tables = _table(values.pop("strategies", None) or _default_strategy_tables(), "strategies", source)
    synthetic_table = values.pop("synthetic", None)
    for key, value in values.items():
        if isinstance(value, dict):
            raise UserError(f"{source}: unknown table [{key}]; a comparison config has [train], [synthetic], "
                            "[compare] and [strategies.NAME] tables")
    base = TrainConfig.from_dict(values, source=f"{source} [train]")
    synthetic = SyntheticSource.from_dict(_table(synthetic_table, "synthetic", source), source) \
        if synthetic_table is not None else None
    if synthetic and (base.data or base.positives or base.negatives):
        raise UserError(f"{source}: give either a [synthetic] table or data files (data, positives, negatives), "
                        "not both")
    if not synthetic and not (base.data or base.positives):
        raise UserError(f"{source}: no training data; set data (or positives and negatives) in [train], "
                        "or add a [synthetic] table")
    if not synthetic and not base.val:
        raise UserError(f"{source}: a comparison needs validation sets; set val = [\"NAME=FILE\", ...] in [train]")
    strategies = [_parse_strategy(str(n), t, base, Path(base_dir), source) for n, t in strategy_tables.items()]
    if not strategies:
        raise UserError(f"{source}: [strategies] is empty; declare at least one strategy")
    unknown = sorted(set(compare) - {"seeds", "reference", "equal_budget"})
    if unknown:
        raise UserError(f"{source} [compare]: unknown key {unknown[0]!r}; known keys: equal_budget, reference, seeds")
    comparison = Comparison(base, strategies, str(compare.get("reference", strategies[0].name)),
                            compare.get("seeds", 5), synthetic, compare.get("equal_budget", True), source)
    comparison.strategy(comparison.reference)
    _check_seeds(comparison.seeds, f"{source} [compare] seeds")
    if not isinstance(comparison.equal_budget, bool):
        raise UserError(f"{source} [compare]: equal_budget must be true or false")
    check_planned_budgets(comparison)
    return comparison


def _table(value: Any, name: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{source}: {name} must be a TOML table ([{name}]), got {type(value).__name__}")
    return value


def _check_seeds(seeds: Any, where: str) -> None:
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise UserError(f"{where} must be a whole number >= 1, got {seeds!r}")


def load_comparison(path: str | Path) -> Comparison:
    """Read a comparison TOML file; data paths are relative to its folder.

    Raises
    ------
    UserError
        Naming the first bad setting (unknown kind or key, unequal budgets...).
    """
    path = Path(path)
    return comparison_from_dict(load_config(path), source=str(path), base_dir=path.parent)


# ---------------------------------------------------------------------------
# budgets

@dataclass(frozen=True)
class Budget:
    """Phases, samples and optimizer steps a configuration plans (or a pool allows)."""

    phases: int
    samples: int
    steps: int
    stop_reason: str | None = None


def planned_budget(config: TrainConfig, labels: np.ndarray | None = None) -> Budget:
    """The budget of ``config``; with ``labels``, of the phases those pools can supply."""
    pos, neg = config.phase_counts()
    if labels is None:
        phases, reason = len(pos), None
        steps = sum(min(b, max(p, n)) for b, p, n in zip(config.phase_batches(), pos, neg))
    else:
        sampler = HandPickedBatchSampler.from_config(labels, config)
        phases, reason = sampler.n_phases, sampler.stop_reason
        steps = sum(sampler.batches_in(p) for p in range(phases))
    samples = sum(pos[:phases]) + sum(neg[:phases])
    return Budget(phases, samples * config.epochs_per_phase, steps * config.epochs_per_phase, reason)


def check_planned_budgets(comparison: Comparison) -> list[str]:
    """Check every strategy plans the reference's samples and steps.

    Raises :class:`UserError` on a difference (or warns, with
    ``equal_budget = false``); returns the warnings given.
    """
    reference = planned_budget(comparison.strategy(comparison.reference).config)
    problems = []
    for strategy in comparison.strategies:
        budget = planned_budget(strategy.config)
        if (budget.samples, budget.steps) != (reference.samples, reference.steps):
            problems.append(f"strategy {strategy.name!r} plans {budget.samples} samples in {budget.steps} steps, "
                            f"the reference {comparison.reference!r} {reference.samples} in {reference.steps}")
    if problems and comparison.equal_budget:
        raise UserError(f"{comparison.source}: {problems[0]}; give it the same per-phase totals and n_batches, "
                        "or set equal_budget = false in [compare]")
    for problem in problems:
        warnings.warn(problem, BudgetWarning, stacklevel=2)
    return problems


# ---------------------------------------------------------------------------
# running

@dataclass
class _Task:
    """One training run, everything a worker process needs (picklable)."""

    strategy: str
    seed: int
    config: TrainConfig
    run_dir: Path
    resume: bool
    pools: PairTable
    validation: dict[str, PairTable]
    threads: int | None = None
    phase_progress: bool = False

    @property
    def label(self) -> str:
        return f"{self.strategy}/seed{self.seed}"


def _train_task(task: _Task, phase_progress: Callable[[str], None] | bool = False) -> float:
    """Train (or resume) one run; returns its wall time in seconds. Runs in a worker or in-process."""
    import torch

    from itertrain.training import train

    if task.threads:
        torch.set_num_threads(task.threads)
    if phase_progress is False and task.phase_progress:
        phase_progress = True
    if phase_progress is True:
        def phase_progress(line: str, _label=task.label) -> None:
            print(f"{_label}: {line}", file=sys.stderr, flush=True)
    elif callable(phase_progress):
        emit = phase_progress
        phase_progress = lambda line: emit(f"{task.label}: {line}")  # noqa: E731
    started = time.perf_counter()
    train(task.pools, task.config, task.run_dir, resume=task.resume, validation=task.validation,
          progress=phase_progress)
    return time.perf_counter() - started


@dataclass
class ComparisonResult:
    """What :func:`run_comparison` wrote and found.

    Attributes
    ----------
    out_dir : pathlib.Path
    runs : pandas.DataFrame
        ``runs.tsv``.
    summary : pandas.DataFrame
        ``summary.tsv``.
    trained : list of str
        ``strategy/seed<k>`` of the runs trained or resumed by this call.
    skipped : list of str
        Runs already finished, not retrained.
    warnings : list of str
        Budget problems (pools that ran dry, unequal plans).
    figures : list of pathlib.Path
    """

    out_dir: Path
    runs: pd.DataFrame
    summary: pd.DataFrame
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def _emitter(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if progress:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return lambda msg: None


def _prepare_out(out: Path, comparison: Comparison, overwrite: bool) -> None:
    """Create ``out`` or check it holds a comparison with the same settings; record the plan."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    plan_path = out / PLAN_FILE
    if out.is_dir() and any(out.iterdir()) and not plan_path.is_file():
        raise UserError(f"{out}: the folder is not empty and holds no comparison ({PLAN_FILE}); "
                        "choose another --out")
    if overwrite and plan_path.is_file():
        shutil.rmtree(out)
    plan = comparison.plan()
    if plan_path.is_file():
        plan = _merged_plan(json.loads(plan_path.read_text(encoding="utf-8")), plan, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(plan_path, json.dumps(plan, indent=2, default=str) + "\n")
    except OSError as err:
        raise UserError(f"{out}: cannot write the comparison folder ({err.strerror}); choose a writable --out") \
            from None


def _merged_plan(old: dict[str, Any], new: dict[str, Any], out: Path) -> dict[str, Any]:
    """The recorded plan plus new strategies; a change to a recorded one is an error."""
    how = "use another --out, or --overwrite to start the comparison again"
    for key in ("synthetic", "base_seed"):
        if old.get(key) != json.loads(json.dumps(new[key], default=str)):
            raise UserError(f"{out}: the comparison there used another {key} ({old.get(key)!r}); {how}")
    strategies = dict(old.get("strategies", {}))
    defaults = json.loads(json.dumps(_comparable_settings(TrainConfig()), default=str))
    for name, settings in new["strategies"].items():
        settings = json.loads(json.dumps(settings, default=str))
        # a setting the recorded plan lacks (added to itertrain since) had its default value
        changed = sorted(k for k in settings if name in strategies
                         and strategies[name].get(k, defaults.get(k)) != settings[k])
        if changed:
            raise UserError(f"{out}: strategy {name!r} was trained with other settings "
                            f"({', '.join(changed)}); rename the strategy, {how}")
        strategies[name] = settings
    return {**new, "strategies": strategies}


def _run_dir(out: Path, strategy: str, seed: int) -> Path:
    return out / "runs" / strategy / f"seed{seed}"


def _is_finished(run_dir: Path) -> bool:
    return (run_dir / RUN_FINISHED).is_file()


class _Data:
    """Pools and validation sets, built once per distinct data setting and seed.

    Two configurations share them when they differ only in settings that
    cannot change the data (schedule, model, optimizer, loss, device...);
    any other setting, including ones added to TrainConfig later, keeps
    them apart.
    """

    _TRAINING_ONLY = frozenset({
        "max_iter", "pos_samples", "neg_ratio_start", "neg_ratio_step", "neg_ratios", "pos_counts", "neg_counts",
        "recycle_positives", "n_batches", "batch_size", "batching", "epochs_per_phase", "augment_shift",
        "score_shift", "val_every", "arch", "encoding", "dropout", "loss", "focal_gamma",
        "optimizer", "lr", "lr_schedule", "class_weight", "precision", "compile", "threads", "device", "report",
    })

    def __init__(self, synthetic: SyntheticSource | None):
        self.synthetic = synthetic
        self._pools: dict[str, PairTable] = {}
        self._validation: dict[str, dict[str, PairTable]] = {}

    def pools(self, config: TrainConfig) -> PairTable:
        key = self._key(config)
        if key not in self._pools:
            self._pools[key] = self.synthetic.pools(config) if self.synthetic else load_training_pairs(config)
        return self._pools[key]

    def validation(self, config: TrainConfig) -> dict[str, PairTable]:
        key = self._key(config)
        if key not in self._validation:
            sets = self.synthetic.validation(config) if self.synthetic else {}
            for name, table in load_validation_sets(config).items():
                if name in sets:
                    raise UserError(f"validation set name {name!r} is taken by the synthetic held-out set; "
                                    "name yours with NAME=FILE")
                sets[name] = table
            self._validation[key] = sets
        return self._validation[key]

    def _key(self, config: TrainConfig) -> str:
        data = {k: v for k, v in config.to_dict().items() if k not in self._TRAINING_ONLY}
        return json.dumps(data, sort_keys=True, default=str)


def _check_finished_settings(run_dir: Path, config: TrainConfig) -> None:
    saved_path = run_dir / "config.toml"
    saved = TrainConfig.from_dict(load_config(saved_path), source=str(saved_path))
    changed = [k for k, v in _comparable_settings(saved).items() if _comparable_settings(config)[k] != v]
    if changed or saved.seed != config.seed:
        raise UserError(f"{run_dir}: finished with other settings ({', '.join(changed) or 'seed'}); "
                        "use another --out or --overwrite")


def _default_jobs(tasks: list[_Task]) -> int:
    """One process per GPU when the runs may use GPUs, else one per CPU core; at most one per run."""
    import torch

    on_gpu = any(t.config.device != "cpu" for t in tasks) and torch.cuda.is_available()
    return max(1, min(len(tasks), torch.cuda.device_count() if on_gpu else _cores()))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _device_for(config: TrainConfig, index: int) -> TrainConfig:
    """Spread ``device = "auto"`` runs over the GPUs, when there are several."""
    import torch

    if config.device != "auto" or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return config
    return config.replace(device=f"cuda:{index % torch.cuda.device_count()}")


def run_comparison(
    comparison: Comparison,
    out_dir: str | Path,
    *,
    seeds: int | None = None,
    jobs: int | None = None,
    only: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool | Callable[[str], None] = True,
    phase_progress: bool | Callable[[str], None] = False,
) -> ComparisonResult:
    """Train every strategy once per seed (resuming what is unfinished) and write the tables and figures.

    Parameters
    ----------
    comparison : Comparison
        From :func:`load_comparison`.
    out_dir : path
        The comparison folder; an existing one is continued (finished runs
        are not retrained; strategies and seeds may be added).
    seeds : int, optional
        Seeds per strategy (default ``comparison.seeds``): ``base seed + k``
        for ``k < seeds``.
    jobs : int, optional
        Runs trained at once in separate processes (default: the number of
        GPUs, else of CPU cores, at most the number of runs). 1 trains in
        this process.
    only : sequence of str, optional
        Train only these strategies (the tables still show every strategy
        with finished runs).
    overwrite : bool
        Delete an earlier comparison in ``out_dir`` first.
    progress : bool or callable
        One line per run started/finished (stderr, or the callable).
    phase_progress : bool or callable
        Also one line per phase of every run (a callable only with jobs=1;
        with worker processes the lines go to stderr).

    Returns
    -------
    ComparisonResult
    """
    seeds = comparison.seeds if seeds is None else seeds
    _check_seeds(seeds, "--seeds")
    if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
        raise UserError(f"--jobs must be a whole number >= 1, got {jobs!r}")
    selected = [comparison.strategy(name) for name in only] if only else comparison.strategies
    emit = _emitter(progress)
    out = Path(out_dir)
    _prepare_out(out, comparison, overwrite)

    data = _Data(comparison.synthetic)
    notes = _check_pool_budgets(comparison, seeds, data)
    for note in notes:
        if progress:
            emit(f"warning: {note}")
        else:
            warnings.warn(note, BudgetWarning, stacklevel=2)
    tasks, skipped = _tasks(comparison, selected, seeds, out, data, phase_progress is not False)
    jobs = jobs or _default_jobs(tasks)
    emit(f"comparison: {len(comparison.strategies)} strategies x {seeds} seeds; {len(skipped)} run(s) finished "
         f"before, {len(tasks)} to train with {min(jobs, max(len(tasks), 1))} process(es) into {out}")
    failures = _execute(tasks, jobs, emit, phase_progress)
    result = write_outputs(comparison, out, seeds)
    result.trained = [t.label for t in tasks if t.label not in failures]
    result.skipped, result.warnings = skipped, notes
    if failures:
        shown = "; ".join(f"{label}: {message}" for label, message in list(failures.items())[:3])
        raise UserError(f"{len(failures)} run(s) failed ({shown}); fix the cause and run the same command again "
                        "to train only the missing runs")
    return result


def _check_pool_budgets(comparison: Comparison, seeds: int, data: _Data) -> list[str]:
    """Warnings for runs whose pools cannot supply the reference's budget."""
    notes = []
    reference = comparison.strategy(comparison.reference)
    for k in range(seeds):
        ref_config = reference.at_seed(k, comparison.base.seed)
        ref_budget = planned_budget(ref_config, data.pools(ref_config).labels)
        for strategy in comparison.strategies:
            config = strategy.at_seed(k, comparison.base.seed)
            budget = planned_budget(config, data.pools(config).labels)
            if (budget.samples, budget.steps) != (ref_budget.samples, ref_budget.steps):
                why = f": {budget.stop_reason}" if budget.stop_reason else ""
                notes.append(f"{strategy.name}/seed{config.seed} will see {budget.samples} samples in "
                             f"{budget.steps} steps, the reference {ref_budget.samples} in {ref_budget.steps}{why}")
    return notes


def _tasks(comparison: Comparison, selected: list[Strategy], seeds: int, out: Path, data: _Data,
           phase_progress: bool) -> tuple[list[_Task], list[str]]:
    """The runs to train, seed by seed (so early results are complete pairs), and those already finished."""
    tasks, skipped = [], []
    for k in range(seeds):
        for strategy in selected:
            config = strategy.at_seed(k, comparison.base.seed)
            run_dir = _run_dir(out, strategy.name, config.seed)
            if _is_finished(run_dir):
                _check_finished_settings(run_dir, config)
                skipped.append(f"{strategy.name}/seed{config.seed}")
                continue
            resume = (run_dir / "config.toml").is_file()
            config = _device_for(config, len(tasks))
            tasks.append(_Task(strategy.name, config.seed, config, run_dir, resume, data.pools(config),
                               data.validation(config), phase_progress=phase_progress))
    return tasks, skipped


def _execute(tasks: list[_Task], jobs: int, emit: Callable[[str], None],
             phase_progress: bool | Callable[[str], None]) -> dict[str, str]:
    """Train the tasks; returns the failures by run label (a Ctrl-C stops everything)."""
    failures: dict[str, str] = {}
    if jobs == 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks, 1):
            emit(f"[{i}/{len(tasks)}] {'resuming' if task.resume else 'training'} {task.label}")
            try:
                seconds = _train_task(task, phase_progress)
            except UserError as err:
                failures[task.label] = str(err)
                emit(f"[{i}/{len(tasks)}] {task.label} failed: {err}")
                continue
            emit(f"[{i}/{len(tasks)}] {task.label} done in {seconds:.1f}s")
        return failures
    threads = max(1, _cores() // jobs)
    for task in tasks:
        task.threads = threads
    context = multiprocessing.get_context("spawn")
    executor = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    try:
        futures = {executor.submit(_train_task, task): task for task in tasks}
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            task = futures[future]
            try:
                emit(f"[{i}/{len(tasks)}] {task.label} done in {future.result():.1f}s")
            except Exception as err:  # noqa: BLE001 - reported per run; the others go on
                failures[task.label] = str(err).splitlines()[0] if str(err) else type(err).__name__
                emit(f"[{i}/{len(tasks)}] {task.label} failed: {failures[task.label]}")
    except KeyboardInterrupt:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    return failures


# ---------------------------------------------------------------------------
# tables

def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t")


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """Budget, wall time and final (last-phase) metrics of one finished run folder."""
    run_dir = Path(run_dir)
    log = _read_tsv(run_dir / "training_log.tsv")
    batches = _read_tsv(run_dir / "batches.tsv")
    summary = json.loads((run_dir / RUN_FINISHED).read_text(encoding="utf-8"))
    saved = load_config(run_dir / "config.toml")
    epochs = int(saved.get("epochs_per_phase", 1))
    last = log.iloc[-1]
    row = {
        "samples_seen": int((batches["n_pos"] + batches["n_neg"]).sum()) * epochs,
        "steps": len(batches) * epochs,
        "batches_without_positive": float((batches["n_pos"] == 0).mean()) if len(batches) else math.nan,
        "positives_seen": int(batches["n_pos"].sum()) * epochs,
        "negatives_seen": int(batches["n_neg"].sum()) * epochs,
        "phases": int(summary["phases_completed"]),
        "wall_seconds": float(log["seconds"].sum()),
        "stop_reason": summary.get("stop_reason") or "",
    }
    for name in summary.get("validation_sets", []):
        for metric in REPORTED_METRICS:
            row[f"{name}_{metric}"] = float(last[f"{name}_{metric}"])
    return row


def collect_runs(comparison: Comparison, out_dir: str | Path, seeds: int) -> pd.DataFrame:
    """``runs.tsv``: one row per finished run of every strategy and seed ``k < seeds``.

    Columns: ``strategy, kind, seed``; ``samples_seen`` and ``steps`` (pairs
    drawn and optimizer steps, times ``epochs_per_phase``);
    ``batches_without_positive`` (the fraction of the run's batches that
    held no positive); ``positives_seen, negatives_seen, phases``;
    ``wall_seconds`` (the sum of the per-phase times of training and
    validation in ``training_log.tsv``); ``budget_ok`` (False where the run
    saw other numbers of samples or steps than the reference's run of the
    same seed, empty without one); ``stop_reason`` (why fewer phases ran);
    then ``<set>_average_precision`` and ``<set>_roc_auc`` of the last
    phase on every validation set.
    """
    out = Path(out_dir)
    rows = []
    for strategy in comparison.strategies:
        for k in range(seeds):
            seed = comparison.base.seed + k
            run_dir = _run_dir(out, strategy.name, seed)
            if _is_finished(run_dir):
                rows.append({"strategy": strategy.name, "kind": strategy.kind or "", "seed": seed,
                             **run_row(run_dir)})
    runs = pd.DataFrame(rows)
    if runs.empty:
        return runs
    reference = runs[runs["strategy"] == comparison.reference].set_index("seed")[["samples_seen", "steps"]]
    ref = reference.reindex(runs["seed"]).to_numpy()
    same = (runs[["samples_seen", "steps"]].to_numpy() == ref).all(axis=1)
    known = ~np.isnan(ref.astype(float)).any(axis=1)
    runs.insert(runs.columns.get_loc("stop_reason"), "budget_ok",
                pd.array([bool(s) if k else pd.NA for s, k in zip(same, known)], dtype="boolean"))
    return runs


def measure_columns(runs: pd.DataFrame) -> list[str]:
    """The columns ``summary.tsv`` summarises: validation metrics, then the budget."""
    metrics = [c for c in runs.columns if any(c.endswith(f"_{m}") for m in REPORTED_METRICS)]
    return metrics + [c for c in BUDGET_COLUMNS if c in runs.columns]


def summarize(runs: pd.DataFrame, reference: str) -> pd.DataFrame:
    """``summary.tsv``: per strategy and measure, mean ± sd over seeds and a paired t-test against ``reference``.

    Columns: ``strategy, measure, n, mean, sd, reference, n_pairs,
    diff_vs_reference`` (mean of the per-seed differences, strategy minus
    reference), ``t, p_value`` (two-sided paired t-test over the seeds both
    have; empty for the reference itself and when the differences do not
    vary). ``sd`` uses n - 1.
    """
    if runs.empty:
        return pd.DataFrame(columns=["strategy", "measure", "n", "mean", "sd", "reference", "n_pairs",
                                     "diff_vs_reference", "t", "p_value"])
    rows = []
    ref_runs = runs[runs["strategy"] == reference].set_index("seed")
    for strategy, group in runs.groupby("strategy", sort=False):
        group = group.set_index("seed")
        for measure in measure_columns(runs):
            values = group[measure].to_numpy(dtype=float)
            shared = group.index.intersection(ref_runs.index)
            mine = group.loc[shared, measure].to_numpy(dtype=float)
            theirs = ref_runs.loc[shared, measure].to_numpy(dtype=float)
            t, p = paired_t_test(mine, theirs) if strategy != reference else (math.nan, math.nan)
            rows.append({
                "strategy": strategy, "measure": measure, "n": len(values),
                "mean": float(np.mean(values)) if len(values) else math.nan,
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                "reference": reference, "n_pairs": len(shared),
                "diff_vs_reference": float(np.mean(mine - theirs)) if len(shared) else math.nan,
                "t": t, "p_value": p,
            })
    return pd.DataFrame(rows)


def paired_t_test(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired Student t-test of ``x - y`` (as ``scipy.stats.ttest_rel``).

    Returns
    -------
    (t, p) : float
        NaN when there are fewer than two pairs or the differences are all equal.
    """
    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2:
        return math.nan, math.nan
    sd = float(np.std(d, ddof=1))
    if sd == 0 or not math.isfinite(sd):
        return math.nan, math.nan
    t = float(np.mean(d)) / (sd / math.sqrt(n))
    df = n - 1
    return t, _regularized_beta(df / (df + t * t), df / 2, 0.5)


def _regularized_beta(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(x, a, b) / a
    return 1.0 - front * _beta_fraction(1 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def summary_markdown(summary: pd.DataFrame) -> str:
    """The validation metrics of ``summary.tsv`` as a Markdown table: mean ± sd, then Δ and p vs the reference."""
    if summary.empty:
        return "No finished runs yet.\n"
    measures = [m for m in summary["measure"].unique() if m not in BUDGET_COLUMNS]
    reference = summary["reference"].iloc[0]
    header = "| strategy | n | " + " | ".join(m.replace("_", " ") for m in measures) + " |"
    lines = [header, "|" + " --- |" * (len(measures) + 2)]
    for strategy, group in summary.groupby("strategy", sort=False):
        cells = []
        for measure in measures:
            row = group[group["measure"] == measure].iloc[0]
            cell = f"{_fmt(row['mean'])} ± {_fmt(row['sd'])}"
            if strategy != reference and math.isfinite(row["diff_vs_reference"]):
                cell += f" (Δ {row['diff_vs_reference']:+.3f}, p {_fmt(row['p_value'], 3)})"
            cells.append(cell)
        lines.append(f"| {strategy} | {int(group['n'].iloc[0])} | " + " | ".join(cells) + " |")
    n_pairs = int(summary["n_pairs"].max())
    note = (f"\nMean ± sd over seeds of the last phase's metrics; Δ: mean paired difference from "
            f"{reference} (same seed), p: two-sided paired t-test over {n_pairs} seed(s)")
    if n_pairs < 5:
        note += f"; with {n_pairs} seeds the test can only detect large, consistent differences"
    return "\n".join(lines) + note + ".\n"


def write_outputs(comparison: Comparison, out_dir: str | Path, seeds: int) -> ComparisonResult:
    """(Re)build ``runs.tsv``, ``summary.tsv``, ``summary.md`` and the figures from the run folders."""
    out = Path(out_dir)
    runs = collect_runs(comparison, out, seeds)
    summary = summarize(runs, comparison.reference)
    write_table(runs, out / "runs.tsv")
    write_table(summary, out / "summary.tsv")
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    figures = write_figures(comparison, out, runs) if not runs.empty else []
    return ComparisonResult(out, runs, summary, figures=figures)


# ---------------------------------------------------------------------------
# figures

def _val_sets(runs: pd.DataFrame) -> list[str]:
    suffix = f"_{REPORTED_METRICS[0]}"
    return [c[: -len(suffix)] for c in runs.columns if c.endswith(suffix)]


def write_figures(comparison: Comparison, out_dir: str | Path, runs: pd.DataFrame) -> list[Path]:
    """``figures/final_metrics.png`` and ``figures/metric_vs_phase.png``."""
    from itertrain.report import _save

    figures_dir = Path(out_dir) / "figures"
    figures_dir.mkdir(exist_ok=True)
    written = []
    for name, figure in (("final_metrics", _final_metrics_figure(runs, comparison.reference)),
                         ("metric_vs_phase", _phase_figure(comparison, Path(out_dir), runs))):
        path = figures_dir / f"{name}.png"
        _save(figure, path)
        written.append(path)
    return written


def _final_metrics_figure(runs: pd.DataFrame, reference: str):
    from itertrain.report import _new_figure

    sets = _val_sets(runs)
    strategies = list(dict.fromkeys(runs["strategy"]))
    figure = _new_figure(max(6.0, 1.1 * len(strategies)) * len(sets), 7)
    axes = figure.subplots(len(REPORTED_METRICS), len(sets), squeeze=False)
    jitter = np.random.default_rng(0)
    for col, name in enumerate(sets):
        for row, metric in enumerate(REPORTED_METRICS):
            ax = axes[row, col]
            column = f"{name}_{metric}"
            for i, strategy in enumerate(strategies):
                values = runs.loc[runs["strategy"] == strategy, column].to_numpy(dtype=float)
                color = "C3" if strategy == reference else "C0"
                ax.scatter(i + jitter.uniform(-0.12, 0.12, len(values)), values, s=18, color=color, alpha=0.7)
                sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
                ax.errorbar(i + 0.3, np.mean(values), yerr=sd, fmt="_", color="k", capsize=3, markersize=12)
            ref = runs.loc[runs["strategy"] == reference, column]
            if len(ref):
                ax.axhline(ref.mean(), color="C3", linestyle=":", linewidth=1)
            ax.set_xticks(range(len(strategies)), strategies, rotation=30, ha="right", fontsize="small")
            ax.set_title(f"{name}: {metric.replace('_', ' ')}", fontsize="medium")
    figure.suptitle("Last phase: one dot per seed, mean ± sd (black), reference mean (dotted)",
                    fontsize="medium")
    return figure


def _phase_figure(comparison: Comparison, out: Path, runs: pd.DataFrame):
    from itertrain.report import _integer_phases, _new_figure

    sets = _val_sets(runs)
    figure = _new_figure(5 * len(sets), 4)
    axes = figure.subplots(1, len(sets), squeeze=False)[0]
    seeds = sorted(runs["seed"].unique())
    for i, strategy in enumerate(dict.fromkeys(runs["strategy"])):
        logs = [_read_tsv(_run_dir(out, strategy, seed) / "training_log.tsv") for seed in seeds
                if _is_finished(_run_dir(out, strategy, seed))]
        for ax, name in zip(axes, sets):
            column = f"{name}_{REPORTED_METRICS[0]}"
            table = pd.concat([log.set_index("iteration")[column] for log in logs], axis=1)
            mean, sd = table.mean(axis=1), table.std(axis=1, ddof=1)
            style = "-" if strategy == comparison.reference else "--"
            ax.plot(table.index, mean, style, marker="o", markersize=3, color=f"C{i % 10}", label=strategy)
            if table.shape[1] > 1:
                ax.fill_between(table.index, mean - sd, mean + sd, color=f"C{i % 10}", alpha=0.12)
    for ax, name in zip(axes, sets):
        ax.set(xlabel="phase", ylabel="average precision", title=f"{name}: mean over seeds (band: ± sd)")
        _integer_phases(ax)
    axes[0].legend(fontsize="small", loc="best")
    return figure
