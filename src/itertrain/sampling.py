"""Pools, the ratio schedule and hand-picked mini-batches.

Everything here works on index arrays; no table or matrix is copied. A run's
phases and batches are a pure function of ``(labels, seed, schedule)``:

* each class pool is put in one seeded random order when the sampler is built;
* phase ``p`` takes the next ``pos_samples`` positives and ``int(ratio_p *
  pos_samples)`` negatives from those orders (a slice: O(drawn), never
  O(pool)), so no sample is seen in two phases;
* the batches of phase ``p`` are shuffled with a generator seeded by
  ``(seed, p)``, so any phase can be rebuilt on its own (resume, several
  processes) without replaying the ones before it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler

from itertrain.errors import UserError

__all__ = ["Phase", "HandPickedBatchSampler", "ratio_schedule"]

_POOL_STREAM, _BATCH_STREAM = 0, 1


def ratio_schedule(max_iter: int = 25, start: float = 1.0, step: float = 0.5) -> list[float]:
    """Negative:positive ratio of each phase: ``start + phase * step``."""
    return [start + phase * step for phase in range(max_iter)]


@dataclass(frozen=True)
class Phase:
    """One phase of iterative training.

    Attributes
    ----------
    index : int
        Phase number, from 0.
    neg_ratio : float
        Negative:positive ratio of this phase.
    positives, negatives : numpy.ndarray of int64
        Dataset indices drawn for this phase.
    batches : list of numpy.ndarray of int64
        Dataset indices of each mini-batch, in training order.
    """

    index: int
    neg_ratio: float
    positives: np.ndarray
    negatives: np.ndarray
    batches: list[np.ndarray]

    def batch_counts(self, labels: np.ndarray) -> list[tuple[int, int]]:
        """``(n_pos, n_neg)`` of each batch."""
        counts = []
        for batch in self.batches:
            n_pos = int(np.count_nonzero(labels[batch]))
            counts.append((n_pos, len(batch) - n_pos))
        return counts


class HandPickedBatchSampler(Sampler[list[int]]):
    """Batch sampler for iterative training with hand-picked mini-batches.

    Usable as ``DataLoader(dataset, batch_sampler=sampler)``: iterating yields
    the index lists of every batch of every phase, in order. ``phase(p)``
    gives one phase with its boundaries, which the training loop uses to
    checkpoint after each phase.

    Parameters
    ----------
    labels : array-like of 0/1, shape (N,)
        Label of every dataset item; positives (1) and negatives (0) form
        the two pools.
    pos_samples : int, default 100
        Positives drawn per phase.
    neg_ratios : sequence of float, optional
        Ratio per phase; by default ``ratio_schedule(max_iter, start, step)``.
    neg_ratio_start, neg_ratio_step : float, default 1.0, 0.5
    max_iter : int, default 25
        Number of phases asked for; fewer run when a pool runs dry
        (see ``n_phases`` and ``stop_reason``).
    n_batches : int or sequence of int, default 10
        Mini-batches per phase (one number, or one per phase).
    batching : {"handpicked", "random"}, default "handpicked"
        ``handpicked`` splits the phase's positives and negatives into
        ``n_batches`` parts each and pairs them, so every batch holds
        positives; ``random`` shuffles the same subset into batches of the
        same sizes (the baseline).
    seed : int, default 0
    pos_counts, neg_counts : sequence of int, optional
        Explicit positives and negatives per phase (instead of
        ``pos_samples`` and the ratios).
    recycle_positives : bool, default False
        When the positive pool is used up, start another pass over it in a
        fresh order instead of stopping (for strategies that need more
        positives than the pool holds, e.g. balanced batches).

    Raises
    ------
    UserError
        When hand-picking cannot put a positive in every batch, or when the
        pools cannot supply even the first phase.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        *,
        pos_samples: int = 100,
        neg_ratios: Sequence[float] | None = None,
        neg_ratio_start: float = 1.0,
        neg_ratio_step: float = 0.5,
        max_iter: int = 25,
        n_batches: int | Sequence[int] = 10,
        batching: str = "handpicked",
        seed: int = 0,
        pos_counts: Sequence[int] | None = None,
        neg_counts: Sequence[int] | None = None,
        recycle_positives: bool = False,
    ) -> None:
        labels = np.asarray(labels)
        if batching not in ("handpicked", "random"):
            raise UserError(f"batching must be 'handpicked' or 'random', got {batching!r}")
        if (pos_counts is None) != (neg_counts is None) or (pos_counts is not None and len(pos_counts) != len(neg_counts)):
            raise UserError("pos_counts and neg_counts go together, one count per phase each")
        if pos_counts is None:
            ratios = list(neg_ratios) if neg_ratios is not None else ratio_schedule(
                max_iter, neg_ratio_start, neg_ratio_step)
            pos_counts = [int(pos_samples)] * len(ratios)
            neg_counts = [int(r * pos_samples) for r in ratios]
        elif neg_ratios is not None and len(neg_ratios) == len(pos_counts):
            ratios = list(neg_ratios)  # the configured ratios, for the log (counts were derived from them)
        else:
            ratios = [n / p for p, n in zip(pos_counts, neg_counts)]
        per_phase = [int(n_batches)] * len(pos_counts) if np.ndim(n_batches) == 0 else [int(b) for b in n_batches]
        if len(per_phase) != len(pos_counts):
            raise UserError(f"n_batches: {len(per_phase)} values for {len(pos_counts)} phases")
        short = [p for p, (c, b) in enumerate(zip(pos_counts, per_phase)) if c < b]
        if batching == "handpicked" and short:
            p = short[0]
            raise UserError(
                f"pos_samples={pos_counts[p]} cannot put a positive in each of n_batches={per_phase[p]} "
                "hand-picked batches; lower n_batches or raise pos_samples"
            )
        self.labels = labels
        self.pos_counts = [int(c) for c in pos_counts]
        self.neg_counts = [int(c) for c in neg_counts]
        self.ratios = [float(r) for r in ratios]
        self.batches_per_phase = per_phase
        self.batching = batching
        self.seed = int(seed)
        self.recycle_positives = bool(recycle_positives)

        index_dtype = np.int32 if len(labels) < 2**31 else np.int64
        pool_rng = np.random.default_rng([self.seed, _POOL_STREAM])
        self.pos_order = _shuffled(np.flatnonzero(labels == 1).astype(index_dtype), pool_rng)
        self.neg_order = _shuffled(np.flatnonzero(labels == 0).astype(index_dtype), pool_rng)
        self._pos_offsets = np.concatenate([[0], np.cumsum(self.pos_counts, dtype=np.int64)])
        self._neg_offsets = np.concatenate([[0], np.cumsum(self.neg_counts, dtype=np.int64)])
        self._passes: dict[int, np.ndarray] = {0: self.pos_order}
        self.n_phases, self.stop_reason = self._feasible_phases()
        if self.n_phases == 0:
            raise UserError(f"the pools cannot supply the first phase: {self.stop_reason}")

    @classmethod
    def from_config(cls, labels: Sequence[int] | np.ndarray, config) -> HandPickedBatchSampler:
        """Build the sampler a :class:`~itertrain.config.TrainConfig` describes."""
        pos_counts, neg_counts = config.phase_counts()
        return cls(
            labels,
            pos_counts=pos_counts,
            neg_counts=neg_counts,
            neg_ratios=config.ratios(),
            n_batches=config.phase_batches(),
            batching=config.batching,
            seed=config.seed,
            recycle_positives=config.recycle_positives,
        )

    @property
    def pos_samples(self) -> int:
        """Positives drawn in the first phase (every phase, unless counts were given per phase)."""
        return self.pos_counts[0]

    # ------------------------------------------------------------------------
    def _feasible_phases(self) -> tuple[int, str | None]:
        n_pos, n_neg = len(self.pos_order), len(self.neg_order)
        if self.recycle_positives and n_pos == 0:
            return 0, "the positive pool is empty"
        for p, (n_pos_p, n_neg_p) in enumerate(zip(self.pos_counts, self.neg_counts)):
            if not self.recycle_positives and self._pos_offsets[p + 1] > n_pos:
                left = n_pos - int(self._pos_offsets[p])
                return p, (f"phase {p} needs {n_pos_p} positives but only {left} of "
                           f"{n_pos} remain in the positive pool")
            if self._neg_offsets[p + 1] > n_neg:
                left = n_neg - int(self._neg_offsets[p])
                return p, (f"phase {p} needs {n_neg_p} negatives but only {left} of "
                           f"{n_neg} remain in the negative pool")
        return len(self.neg_counts), None

    def remaining_after(self, p: int) -> tuple[int, int]:
        """Positives and negatives left in the pools once phase ``p`` has drawn
        (with recycled positives: left in the current pass)."""
        n_pos, drawn = len(self.pos_order), int(self._pos_offsets[p + 1])
        pos_left = (n_pos - drawn % n_pos) % n_pos if self.recycle_positives else n_pos - drawn
        return pos_left, len(self.neg_order) - int(self._neg_offsets[p + 1])

    def _positives(self, start: int, stop: int) -> np.ndarray:
        """Positions ``start:stop`` of the sequence of positive draws."""
        n = len(self.pos_order)
        if not self.recycle_positives:
            return self.pos_order[start:stop]
        parts = []
        while start < stop:
            pass_index, offset = divmod(start, n)
            if pass_index not in self._passes:  # a fresh order for every pass over the pool
                rng = np.random.default_rng([self.seed, _POOL_STREAM, 1, pass_index])
                self._passes[pass_index] = self.pos_order[rng.permutation(n)]
            take = min(stop - start, n - offset)
            parts.append(self._passes[pass_index][offset:offset + take])
            start += take
        return np.concatenate(parts)

    def phase(self, p: int) -> Phase:
        """The draws and batches of phase ``p`` (0 <= p < n_phases)."""
        if not 0 <= p < self.n_phases:
            raise IndexError(f"phase {p} outside 0..{self.n_phases - 1}")
        positives = self._positives(int(self._pos_offsets[p]), int(self._pos_offsets[p + 1])).astype(np.int64)
        negatives = self.neg_order[self._neg_offsets[p]:self._neg_offsets[p + 1]].astype(np.int64)
        rng = np.random.default_rng([self.seed, _BATCH_STREAM, p])
        pos_parts = np.array_split(positives, self.batches_per_phase[p])
        neg_parts = np.array_split(negatives, self.batches_per_phase[p])
        if self.batching == "handpicked":
            batches = [rng.permutation(np.concatenate(pair)) for pair in zip(pos_parts, neg_parts)]
        else:
            sizes = [len(a) + len(b) for a, b in zip(pos_parts, neg_parts)]
            mixed = rng.permutation(np.concatenate([positives, negatives]))
            batches = np.split(mixed, np.cumsum(sizes)[:-1])
        batches = [b for b in batches if len(b)]
        return Phase(p, self.ratios[p], positives, negatives, batches)

    def phases(self, start: int = 0) -> Iterator[Phase]:
        """Every feasible phase from ``start`` on."""
        for p in range(start, self.n_phases):
            yield self.phase(p)

    def __iter__(self) -> Iterator[list[int]]:
        for phase in self.phases():
            for batch in phase.batches:
                yield batch.tolist()

    def __len__(self) -> int:
        return sum(self.batches_in(p) for p in range(self.n_phases))

    def batches_in(self, p: int) -> int:
        """Number of (non-empty) batches of phase ``p``."""
        return min(self.batches_per_phase[p], max(self.pos_counts[p], self.neg_counts[p]))


def _shuffled(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rng.shuffle(indices)
    return indices
