"""Encoding speed: sequence pairs -> (50, 20) float32 Watson-Crick pair matrices.

What is measured (pairs per second, one CPU thread, best of several runs
taken in turns with the baseline):

* ``encode_pairs`` on realistic random ACGT strings (50 nt target sites, 20 nt
  miRNAs): text -> uint8 codes -> float32 matrices, including the allocation of
  the result, i.e. what a user calling the public function gets.
* ``encode_sequences`` alone (text -> codes), which ``load_pairs`` does once
  per table.
* ``pair_matrices`` alone (codes -> matrices), into a new array and into a
  pre-allocated one: the part that is repeated whenever matrices are needed.
* ``pair_matrices_torch`` on index-selected uint8 tensors, per batch of 20 to
  512 pairs: what the training loop does for every mini-batch (on the GPU
  too when ``torch.cuda.is_available()``).

Baselines, measured in the same run:

* the notebook: its algorithm re-implemented here (a pandas ``iterrows`` loop,
  a double loop over the bases and a dict look-up per base pair, writing into
  a zeros float32 array), on a small N so that it takes about a second. Its
  output is checked against ``encode_pairs`` so the comparison is like for like.
* the copy limit: ``numpy.copyto`` of an already-filled float32 array of the
  result's shape into an already-touched destination, i.e. the cost of just
  writing 4 KB per pair. Both buffers are written once before timing; without
  that, first-touch page faults make the copy look up to 20x slower.

Targets (issue 4): ``encode_pairs`` >= 300x the notebook and >= 0.35x the copy
limit. Threads are limited to one (torch, and BLAS/OpenMP pools when
threadpoolctl is installed) so the numbers do not depend on the core count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from _common import best, interleaved, row, script_main, single_thread, timings
from itertrain import encode_pairs
from itertrain.encoding import complement_codes, encode_sequences, pair_matrices, pair_matrices_torch

SHAPE = (50, 20)
N_FAST = 50_000  # 200 MB of float32 matrices: far beyond the caches, as a real table's would be
N_NOTEBOOK = 2_000  # about a second for the notebook's loop
BATCH_SIZES = (20, 140, 512)  # the demo's batches are 20..140 pairs; 512 is predict's batch
POOL = 15_000  # the demo's pool size
PAIRS_PER_BATCH_SIZE = 100_000


def random_sequences(rng: np.random.Generator, n: int, length: int) -> list[str]:
    """``n`` random ACGT strings of ``length`` bases."""
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, size=(n, length))]
    return letters.view(f"S{length}").ravel().astype(str).tolist()


def notebook_encode(frame: pd.DataFrame, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """The notebook's encoding, kept as it was: a row loop, a base loop, a dict look-up."""
    pairs = {"AT": 1, "TA": 1, "GC": 1, "CG": 1}
    matrices = np.zeros((len(frame), *shape), dtype="float32")
    for index, line in frame.iterrows():
        for i, a in enumerate(line.gene.upper()):
            for j, b in enumerate(line.miRNA.upper()):
                key = a + b
                if key in pairs:
                    matrices[index, i, j] = pairs[key]
    return matrices


def notebook_speed(rng: np.random.Generator) -> tuple[float, float]:
    """Pairs/s of the notebook's loop and of ``encode_pairs`` on the same small table."""
    seqs_a = random_sequences(rng, N_NOTEBOOK, SHAPE[0])
    seqs_b = random_sequences(rng, N_NOTEBOOK, SHAPE[1])
    frame = pd.DataFrame({"gene": seqs_a, "miRNA": seqs_b})
    if not np.array_equal(notebook_encode(frame.head(50)), encode_pairs(seqs_a[:50], seqs_b[:50], SHAPE)):
        raise RuntimeError("the notebook baseline and encode_pairs disagree; the comparison would be void")
    seconds = interleaved({"notebook": lambda: notebook_encode(frame),
                           "encode_pairs": lambda: encode_pairs(seqs_a, seqs_b, SHAPE)}, repeat=3, warmup=0)
    return N_NOTEBOOK / best(seconds["notebook"]), N_NOTEBOOK / best(seconds["encode_pairs"])


def copy_limit_and_fast_path(rng: np.random.Generator) -> dict[str, float]:
    """Pairs/s of the copy limit and of the NumPy paths, timed in turns, on N_FAST pairs."""
    seqs_a = random_sequences(rng, N_FAST, SHAPE[0])
    seqs_b = random_sequences(rng, N_FAST, SHAPE[1])
    codes_a = encode_sequences(seqs_a, SHAPE[0])
    codes_b = encode_sequences(seqs_b, SHAPE[1])
    source = pair_matrices(codes_a, codes_b)  # filled, hence touched
    target = np.ones_like(source)  # touched
    seconds = interleaved({
        "copy": lambda: np.copyto(target, source),
        "encode_pairs": lambda: encode_pairs(seqs_a, seqs_b, SHAPE, out=target),
        "encode_pairs_new": lambda: encode_pairs(seqs_a, seqs_b, SHAPE),
        "encode_sequences": lambda: (encode_sequences(seqs_a, SHAPE[0]), encode_sequences(seqs_b, SHAPE[1])),
        "pair_matrices": lambda: pair_matrices(codes_a, codes_b),
        "pair_matrices_out": lambda: pair_matrices(codes_a, codes_b, out=target),
    }, repeat=9)
    return {name: N_FAST / best(s) for name, s in seconds.items()}


def torch_batch_speed(device: torch.device, rng: np.random.Generator) -> dict[int, float]:
    """Pairs/s of per-batch matrix building from a pool of codes held on ``device``."""
    codes_a = torch.from_numpy(rng.integers(1, 5, size=(POOL, SHAPE[0]), dtype=np.uint8)).to(device)
    codes_b = rng.integers(1, 5, size=(POOL, SHAPE[1]), dtype=np.uint8)
    partners = torch.from_numpy(complement_codes(codes_b)).to(device)
    speeds = {}
    for size in BATCH_SIZES:
        n_batches = PAIRS_PER_BATCH_SIZE // size
        batches = [torch.from_numpy(rng.integers(0, POOL, size)).to(device) for _ in range(n_batches)]

        def run():
            for index in batches:
                pair_matrices_torch(codes_a[index], partners[index])
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        speeds[size] = n_batches * size / best(timings(run, repeat=3))
    return speeds


def main() -> list[dict]:
    rng = np.random.default_rng(2024)
    with single_thread():
        notebook, ours_small = notebook_speed(rng)
        fast = copy_limit_and_fast_path(rng)
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        per_batch = {d.type: torch_batch_speed(d, rng) for d in devices}

    unit = "pairs/s"
    rows = [
        row(f"encode_pairs vs notebook (N={N_NOTEBOOK:,}, 1 thread)", ours_small, unit,
            baseline=notebook, baseline_name="notebook iterrows loop", target=("ratio", ">=", 300)),
        row(f"encode_pairs vs copy limit (N={N_FAST:,})", fast["encode_pairs"], unit,
            baseline=fast["copy"], baseline_name="np.copyto", target=("ratio", ">=", 0.35),
            note="text -> codes -> matrices written into a touched float32 array (out=), as the copy writes"),
        row("  encode_pairs into a new array", fast["encode_pairs_new"], unit,
            baseline=fast["copy"], baseline_name="np.copyto",
            note="includes the first-touch page faults of a fresh 4 KB-per-pair result"),
        row("  encode_sequences, text -> codes", fast["encode_sequences"], unit,
            baseline=fast["copy"], baseline_name="np.copyto"),
        row("  pair_matrices, codes -> new array", fast["pair_matrices"], unit,
            baseline=fast["copy"], baseline_name="np.copyto"),
        row("  pair_matrices, codes -> out= (touched)", fast["pair_matrices_out"], unit,
            baseline=fast["copy"], baseline_name="np.copyto", target=("ratio", ">=", 0.35),
            note="same work as the copy it is compared to: write 4 KB per pair into touched memory"),
    ]
    for device, speeds in per_batch.items():
        for size, speed in speeds.items():
            rows.append(row(f"pair_matrices_torch, batch {size} on {device} (pool {POOL:,})", speed, unit))
    return rows


if __name__ == "__main__":
    script_main(main, description=__doc__.splitlines()[0])
