"""Training throughput on a CUDA GPU (information only: not one of run_all's targets).

Two workloads, each trained with ``itertrain.train`` and with the hand-written
loop of ``training.py`` (same model, optimizer, seed and batches, matrices
pre-encoded on the GPU), timed in turns, best of ``REPEAT`` (the first run
also pays for CUDA start-up and kernel selection):

* the demo schedule: the notebook's defaults (100 positives per phase,
  ratio 1 growing by 0.5, 10 hand-picked batches, 25 phases asked for) on
  the demo's synthetic pools (``make_synthetic("notebook", 5000, 10000)``;
  the negatives run out after 18 phases);
* a real-data-sized run: the CLASH 2013 training set from
  ``shared/data/mirbind-clash2013/`` when it is there (30,784 pairs,
  15,392 per class), else ``make_synthetic("seed-match", 15000, 15000)``;
  1,000 positives per phase, ratio 1 growing by 0.5, 10 batches per phase
  (batches of 200 to 1,000 pairs), as many phases as the pools allow.

Without a CUDA device it prints "no CUDA device: skipped" and returns one
SKIPPED row, so ``run_all.py`` can always call it. ``--device cpu`` runs the
same on the CPU and ``--quick`` shortens both schedules, to check the script
on a machine without a GPU. Takes well under 5 minutes on a GPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import itertrain
from _common import row, script_main, skipped
from training import race

REPEAT = 2
REPO = Path(__file__).resolve().parents[1]
REAL_DATA = "data/mirbind-clash2013/train_set_1_1_CLASH2013_paper.tsv"


def real_data_pairs():
    """The CLASH 2013 training pools if the shared data is there, else synthetic pools of the same size."""
    for shared in (REPO / "shared", REPO.parent / "shared"):
        if (shared / REAL_DATA).is_file():
            return itertrain.load_pairs(shared / REAL_DATA), "CLASH2013 train set"
    return itertrain.make_synthetic("seed-match", 15_000, 15_000, seed=0), "synthetic 15,000 + 15,000"


def workloads(device: str, quick: bool):
    """(name, pairs, config) of each workload."""
    demo_pools = itertrain.make_synthetic("notebook", 5000, 10000, seed=0)
    real_pools, real_name = real_data_pairs()
    max_iter = 2 if quick else 25
    return [
        ("demo schedule", demo_pools, itertrain.TrainConfig(device=device, max_iter=max_iter)),
        (f"real-data size ({real_name})", real_pools,
         itertrain.TrainConfig(device=device, max_iter=max_iter, pos_samples=1000, n_batches=10)),
    ]


def main(device: str = "cuda", quick: bool = False) -> list[dict]:
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return [skipped("GPU training throughput (gpu.py)", "no CUDA device")]
    where = torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else "CPU"
    rows = []
    for name, pairs, config in workloads(device, quick):
        n_samples, seconds = race(pairs, config, REPEAT)
        rows.append(row(f"{device}: itertrain.train, {name}", n_samples / seconds["itertrain"], "samples/s",
                        baseline=n_samples / seconds["hand"], baseline_name="hand loop, pre-encoded",
                        note=f"{where}; {n_samples:,} samples per run, best of {REPEAT}"))
    return rows


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to check the script")
    parser.add_argument("--quick", action="store_true", help="two phases per workload")


if __name__ == "__main__":
    script_main(main, _arguments, description=__doc__.splitlines()[0])
