"""Several processes (GPUs or machines) under ``torchrun``, with DistributedDataParallel.

Every rank builds the same phases and hand-picked batches from the shared seed
(they are a pure function of it), then trains on its own disjoint share of each
global batch: the batch's positives are dealt out evenly and so are its
negatives, so each share holds a positive whenever the batch holds at least
one per rank. Each rank's loss is the *sum* of its share's per-sample losses
scaled by ``world_size / global_batch_size``; DDP averages gradients over
ranks, so a step is exactly one step on the global batch's mean loss, however
unequal the shares.

A single process is the same code with ``world_size == 1``: every collective
is then a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from itertrain.errors import UserError

__all__ = ["Distributed", "rank_share", "min_batch_positives"]

_TIMEOUT = datetime.timedelta(minutes=10)


def rank_share(batch: np.ndarray, labels: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's disjoint share of a global batch.

    Positives and negatives are split separately into ``world_size`` parts as
    even as possible (``numpy.array_split``), so every share of a batch with
    at least ``world_size`` positives holds a positive. Order within the batch
    is kept.
    """
    if world_size == 1:
        return batch
    is_pos = labels[batch] == 1
    pos_at, neg_at = np.flatnonzero(is_pos), np.flatnonzero(~is_pos)
    mine = np.zeros(len(batch), dtype=bool)
    mine[np.array_split(pos_at, world_size)[rank]] = True
    # deal the negatives from the other end, so the ranks that got an extra positive get fewer negatives
    mine[np.array_split(neg_at, world_size)[world_size - 1 - rank]] = True
    return batch[mine]


def min_batch_positives(pos_samples: int, n_batches: int) -> int:
    """The fewest positives a hand-picked batch of a phase can hold."""
    return pos_samples // n_batches


@dataclass
class Distributed:
    """The process group this process belongs to (``world_size == 1`` when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device_name: str) -> Distributed:
        """Join the process group ``torchrun`` describes in the environment, if any.

        ``nccl`` when training on CUDA, ``gloo`` on CPU.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            use_cuda = device_name != "cpu" and torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=_TIMEOUT)
        return cls(rank, world_size, local_rank)

    def device(self, name: str) -> str:
        """One GPU per process: ``cuda``/``auto`` become ``cuda:<local rank>``."""
        if self.active and name in ("cuda", "auto") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return name

    def check_batches(self, config) -> None:
        """Refuse, before training, batches with fewer positives than ranks."""
        if not self.active or config.batching != "handpicked":
            return
        per_phase = zip(config.phase_counts()[0], config.phase_batches())
        fewest, pos_samples, n_batches = min((min_batch_positives(p, b), p, b) for p, b in per_phase)
        if fewest < self.world_size:
            raise UserError(
                f"a hand-picked batch holds as few as {fewest} positive(s) (pos_samples={pos_samples}, "
                f"n_batches={n_batches}), fewer than the {self.world_size} processes that each need one; "
                f"raise pos_samples to {self.world_size * n_batches} or lower n_batches"
            )

    def share(self, batch: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return rank_share(batch, labels, self.rank, self.world_size)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (in place on every rank)."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, part: np.ndarray) -> np.ndarray:
        """Concatenate every rank's array, in rank order (on every rank)."""
        if not self.active:
            return part
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, part)
        return np.concatenate(parts)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        if not self.active:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def slice_of(self, n: int) -> slice:
        """This rank's contiguous part of ``range(n)`` (for sharded evaluation)."""
        bounds = np.linspace(0, n, self.world_size + 1).astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def close(self) -> None:
        """Wait for every process, then shut the group down.

        Without it each process exits with the group's threads still running,
        which aborted a process now and then ("terminate called without an
        active exception") after a run that had finished.
        """
        if self.active and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
