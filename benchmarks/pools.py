"""Pools: memory per pooled pair, phase draws that do not grow with the pool, table loading.

What is measured:

* Pools of 1e4, 1e6 and 1e7 labelled pairs (``make_synthetic``; 20 % positives)
  with their ``HandPickedBatchSampler``. Memory per pooled pair counts what a
  run keeps for the whole run: the ``PairTable`` (uint8 codes, 70 bytes for a
  50+20 nt pair, plus the int8 label) and the sampler's two shuffled index
  arrays (``pos_order``, ``neg_order``), divided by N. Target <= 100 bytes.
* The time to draw one phase of 10,000 pairs (2,000 positives at ratio 4,
  10 hand-picked batches): ``sampler.phase(p)`` for a phase in the middle of
  the run, median of many calls, timed in turns across the three pool sizes.
  A draw slices the pre-shuffled orders, so it should not depend on the pool
  size: target time(1e7) / time(1e4) <= 2.
* Loading a TSV of 1e6 rows with ``itertrain.load_pairs`` (read, check,
  encode), against plain ``pandas.read_csv(path, sep="\\t", dtype=str)`` (parse
  only, no checks, no encoding) of the same file. 1e6 rows and not 1e7: writing
  and reading 740 MB of text twice would take most of the benchmark's time
  budget, and both costs are linear in the rows. Each load runs in a fresh
  subprocess so its peak RSS is its own: the figure is the peak RSS during
  the load (``VmHWM`` of ``/proc/self/status``, so Linux only; not
  ``ru_maxrss``, which a child inherits from its parent's size at fork)
  minus the RSS just before it. The ratio (our time / parse-only time)
  shows what checking and encoding add on top of parsing; no target.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from _common import best, interleaved, median, row, script_main
from itertrain import HandPickedBatchSampler, make_synthetic

SIZES = (10_000, 1_000_000, 10_000_000)
POS_FRACTION = 0.2
POS_SAMPLES, NEG_RATIO = 2_000, 4.0  # a phase of 2,000 + 8,000 = 10,000 pairs
N_BATCHES = 10
DRAWS = 300
LOAD_ROWS = 1_000_000
LOAD_REPEAT = 2


# ---------------------------------------------------------------------------
# pools and phase draws

def build_pool(n: int):
    """A pool of ``n`` pairs and a sampler whose phases hold 10,000 pairs each."""
    n_pos = int(n * POS_FRACTION)
    pairs = make_synthetic("notebook", n_pos, n - n_pos, seed=1)
    n_phases = n_pos // POS_SAMPLES
    sampler = HandPickedBatchSampler(pairs.labels, pos_samples=POS_SAMPLES, neg_ratios=[NEG_RATIO] * n_phases,
                                     n_batches=N_BATCHES, seed=1)
    return pairs, sampler


def bytes_per_pair(pairs, sampler) -> float:
    return (pairs.nbytes + sampler.pos_order.nbytes + sampler.neg_order.nbytes) / len(pairs)


def pool_rows() -> list[dict]:
    pools = {n: build_pool(n) for n in SIZES}
    middle = {n: sampler.n_phases // 2 for n, (_, sampler) in pools.items()}
    for n, (_, sampler) in pools.items():
        drawn = sampler.phase(middle[n])
        if len(drawn.positives) + len(drawn.negatives) != POS_SAMPLES * (1 + NEG_RATIO):
            raise RuntimeError(f"pool {n:,}: a phase does not hold 10,000 pairs; the figure would be void")
    draws = interleaved({n: (lambda s=sampler, p=middle[n]: s.phase(p)) for n, (_, sampler) in pools.items()},
                        repeat=DRAWS, warmup=3)
    draw_ms = {n: median(seconds) * 1e3 for n, seconds in draws.items()}
    small, large = SIZES[0], SIZES[-1]
    rows = [row(f"memory per pooled pair, N={n:,}", bytes_per_pair(*pools[n]), "B/pair",
                target=("value", "<=", 100) if n == large else None,
                note="PairTable.nbytes + sampler.pos_order + sampler.neg_order, / N" if n == large else "")
            for n in SIZES]
    rows += [row(f"draw a phase of 10,000 pairs, N={n:,} vs {small:,}", draw_ms[n], "ms",
                 baseline=draw_ms[small], baseline_name=f"N={small:,}",
                 target=("ratio", "<=", 2) if n == large else None)
             for n in SIZES[1:]]
    return rows


# ---------------------------------------------------------------------------
# loading a table

def write_tsv(path: Path, n: int, seed: int = 3) -> None:
    """``n`` rows of random 50 nt / 20 nt ACGT pairs and 0/1 labels, written with NumPy (fast)."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    tab, newline = np.full((n, 1), ord("\t"), np.uint8), np.full((n, 1), ord("\n"), np.uint8)
    labels = (rng.random((n, 1)) < POS_FRACTION).astype(np.uint8) + ord("0")
    lines = np.hstack([letters[rng.integers(0, 4, (n, 50))], tab,
                       letters[rng.integers(0, 4, (n, 20))], tab, labels, newline])
    with open(path, "wb") as fh:
        fh.write(b"seq_a\tseq_b\tlabel\n")
        lines.tofile(fh)


_LOADER = textwrap.dedent("""
    import json, sys, time
    import pandas as pd
    import itertrain

    def status_kb(field):  # VmRSS: resident now; VmHWM: this process's peak resident set
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))

    path, what = sys.argv[1], sys.argv[2]
    before = status_kb("VmRSS")
    start = time.perf_counter()
    if what == "read_csv":
        result = pd.read_csv(path, sep="\\t", dtype=str)
    else:
        result = itertrain.load_pairs(path)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_delta": (status_kb("VmHWM") - before) * 1024, "rows": len(result)}))
""")


def load_in_subprocess(path: Path, what: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _LOADER, str(path), what], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


def load_rows() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="itertrain-bench-") as tmp:
        path = Path(tmp) / "pairs.tsv"
        write_tsv(path, LOAD_ROWS)
        runs: dict[str, list[dict]] = {"read_csv": [], "load_pairs": []}
        for _ in range(LOAD_REPEAT):
            for what in runs:
                runs[what].append(load_in_subprocess(path, what))
    for what, results in runs.items():
        if any(r["rows"] != LOAD_ROWS for r in results):
            raise RuntimeError(f"{what} did not read {LOAD_ROWS:,} rows")
    seconds = {what: best([r["seconds"] for r in results]) for what, results in runs.items()}
    peak_mb = {what: min(r["peak_delta"] for r in results) / 2**20 for what, results in runs.items()}
    return [
        row(f"load_pairs, TSV of {LOAD_ROWS:,} rows: time", seconds["load_pairs"], "s",
            baseline=seconds["read_csv"], baseline_name="pandas.read_csv dtype=str",
            note="ratio = our time / parse-only time: load_pairs also checks the letters, labels "
                 "and lengths and encodes to uint8 codes"),
        row(f"load_pairs, TSV of {LOAD_ROWS:,} rows: peak RSS growth", peak_mb["load_pairs"], "MB",
            baseline=peak_mb["read_csv"], baseline_name="pandas.read_csv dtype=str",
            note="peak RSS during the load minus RSS before it, each load in a fresh subprocess"),
    ]


def main() -> list[dict]:
    return pool_rows() + load_rows()


if __name__ == "__main__":
    script_main(main, description=__doc__.splitlines()[0])
