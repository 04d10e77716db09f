"""Training throughput: itertrain's loop against a hand-written one, and where the demo's time goes.

1. ``itertrain.train`` against a minimal PyTorch loop (samples per second).

   Both train ``arch_00b`` (``itertrain.build_model``) with the same optimizer
   (``make_optimizer("RMSprop", ...)``), the same seed, the same mini-batches
   (the sampler's index arrays: 3 phases of 1,000 positives at ratios 1, 1.5
   and 2, 50 batches each: 7,500 samples, 150 steps) on the notebook's
   synthetic pools (5,000 positives, 10,000 negatives), on the CPU, with
   ``torch.set_flush_denormal(True)``. The hand loop indexes PRE-ENCODED float
   tensors (all matrices built before timing) and does nothing but forward,
   loss, backward, step. ``itertrain.train`` is timed as a whole (run folder,
   sampler, per-batch matrices, a checkpoint and resume state per phase,
   logs); the time its writes take is measured by wrapping the functions in
   ``WRITERS`` and is also reported subtracted. Runs alternate (itertrain,
   hand, itertrain, ...) and the best of each is kept. Both run on one torch
   thread: on a shared 2-core machine two intra-op threads stall whenever
   another process takes a core (10x swings were seen), which would drown
   the ratio. Target >= 0.9x.

2. Where the time of ``itertrain demo --synthetic notebook`` goes.

   The demo is run once, in a fresh interpreter (a subprocess, default
   threads), through ``itertrain.cli.main`` as the ``itertrain`` command
   runs it, with timing wrappers swapped in for the functions it calls by
   module-global name (``make_synthetic``, ``train``, ``pair_features_torch``,
   ``predict_scores`` and the run-folder writers in ``WRITERS``); the source
   is not changed. Wrapped calls nest, and each category gets its exclusive
   time. Parts:

   * start-up and exit: the subprocess's wall time minus the in-process
     run's (interpreter start, ``import itertrain``, exit);
   * data generation: ``make_synthetic`` (pools and hold-out set);
   * encoding: every ``pair_features_torch`` call (training batches and
     hold-out scoring);
   * optimizer steps: the phases' ``seconds`` from the training log (batch
     loop + checkpoint) minus the training batches' encoding and the
     checkpoint writes, i.e. index look-ups, forward, loss, backward, step;
   * writes: run-folder set-up and config, checkpoints, resume state, logs,
     summary, hold-out metrics;
   * hold-out scoring: ``predict_scores`` less its encoding;
   * other: the rest (argument parsing, sampler, model build, metrics).

   The steps' samples/s is shown beside the 1-thread hand loop of part 1.
   Targets: optimizer steps the largest part; encoding + writes < 15 %.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

import itertrain
import itertrain.cli
import itertrain.demo
import itertrain.predict
import itertrain.training
from _common import best, interleaved, row, script_main, single_thread
from itertrain.encoding import complement_codes, pair_matrices_torch

CONFIG = dict(max_iter=3, pos_samples=1000, n_batches=50, arch="arch_00b", optimizer="RMSprop", device="cpu", seed=0)
POOLS = dict(kind="notebook", n_pos=5000, n_neg=10000)
REPEAT = 7
DEMO_ARGS = ["demo", "--synthetic", "notebook", "--overwrite", "--quiet"]
# Functions of itertrain.training that write the run folder (set-up, checkpoints, resume state, logs, summary).
WRITERS = ("prepare_run_dir", "save_checkpoint", "_update_best", "_commit_phase", "_write_log", "_write_tsv",
           "_write_summary", "atomic_write_text")


# ---------------------------------------------------------------------------
# exclusive timing of wrapped functions

class Split:
    """Wall time per category of wrapped functions, exclusive of wrapped calls nested inside."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.returned: dict[str, object] = {}
        self.missing: list[str] = []
        self._children: list[float] = []

    def wrap(self, category: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._children.append(0.0)
            start = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.seconds[category] += elapsed - self._children.pop()
                if self._children:
                    self._children[-1] += elapsed
            self.returned[category] = out
            return out
        return timed

    @contextlib.contextmanager
    def patched(self, targets: dict[tuple[object, str], str]) -> Iterator[Split]:
        """Swap in timed wrappers for ``module.name``; names that no longer exist are listed in ``missing``."""
        saved = []
        try:
            for (module, name), category in targets.items():
                if not hasattr(module, name):
                    self.missing.append(f"{module.__name__}.{name}")
                    continue
                saved.append((module, name, getattr(module, name)))
                setattr(module, name, self.wrap(category, getattr(module, name)))
            yield self
        finally:
            for module, name, original in reversed(saved):
                setattr(module, name, original)


# ---------------------------------------------------------------------------
# 1. itertrain.train against a hand-written loop

def hand_loop(x: torch.Tensor, y: torch.Tensor, batches: list[torch.Tensor], config) -> None:
    """The least a PyTorch user would write: same model, optimizer, seed and batches, on ``x``'s device."""
    torch.manual_seed(config.seed)
    model = itertrain.build_model(config.arch, tuple(config.shape), config.dropout).to(x.device)
    optimizer = itertrain.training.make_optimizer(config.optimizer, model.parameters(), config.lr)
    model.train()
    for index in batches:
        loss = F.binary_cross_entropy_with_logits(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def pre_encoded(pairs, config, device: torch.device):
    """The hand loop's inputs on ``device``: every matrix of the pool, the labels, the sampler's batches."""
    codes_a = torch.from_numpy(pairs.codes_a).to(device)
    partners = torch.from_numpy(complement_codes(pairs.codes_b)).to(device)
    x = pair_matrices_torch(codes_a, partners).unsqueeze(1)
    y = torch.from_numpy(pairs.labels).to(device=device, dtype=torch.float32)
    sampler = itertrain.HandPickedBatchSampler.from_config(pairs.labels, config)
    batches = [torch.from_numpy(b).to(device) for phase in sampler.phases() for b in phase.batches]
    return x, y, batches


def race(pairs, config, repeat: int, split: Split | None = None) -> tuple[int, dict[str, float]]:
    """Samples per run and the best seconds of ``itertrain.train`` and of the hand loop, timed in turns.

    With ``split``, the run-folder writers of ``itertrain.training`` are timed too.
    """
    device = torch.device(config.device)
    x, y, batches = pre_encoded(pairs, config, device)
    finish = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    writers = {(itertrain.training, name): "writes" for name in WRITERS}
    with tempfile.TemporaryDirectory(prefix="itertrain-bench-") as tmp, \
            (split.patched(writers) if split else contextlib.nullcontext()):
        torch.set_flush_denormal(True)
        seconds = interleaved({
            "itertrain": lambda: (itertrain.train(pairs, config, Path(tmp) / "run", overwrite=True,
                                                  progress=False), finish()),
            "hand": lambda: (hand_loop(x, y, batches, config), finish()),
        }, repeat=repeat, warmup=0)
    return sum(len(b) for b in batches), {name: best(s) for name, s in seconds.items()}


def train_vs_hand_loop() -> list[dict]:
    config = itertrain.TrainConfig(**CONFIG)
    pairs = itertrain.make_synthetic(POOLS["kind"], POOLS["n_pos"], POOLS["n_neg"], seed=config.seed)
    split = Split()
    with single_thread():
        n_samples, runs = race(pairs, config, REPEAT, split)
    writes_per_run = split.seconds["writes"] / REPEAT
    hand_speed = n_samples / runs["hand"]
    n_steps = config.n_batches * config.max_iter
    label = f"{config.max_iter} phases, {n_steps} steps, {n_samples:,} samples, 1 thread"
    return [
        row(f"itertrain.train vs hand loop ({label})", n_samples / runs["itertrain"], "samples/s",
            baseline=hand_speed, baseline_name="hand loop, pre-encoded", target=("ratio", ">=", 0.9)),
        row("  itertrain.train without its run-folder writes", n_samples / (runs["itertrain"] - writes_per_run),
            "samples/s", baseline=hand_speed, baseline_name="hand loop, pre-encoded",
            note=f"writes (checkpoints, resume state, logs, config, summary): {writes_per_run * 1e3:.0f} ms per "
                 f"run, mean of {REPEAT} runs, subtracted from the best run"
                 + (f"; not instrumented (renamed?): {', '.join(split.missing)}" if split.missing else "")),
    ]


# ---------------------------------------------------------------------------
# 2. the demo's wall time, part by part

def _demo_targets() -> dict[tuple[object, str], str]:
    training, demo, predict = itertrain.training, itertrain.demo, itertrain.predict
    return {
        (demo, "make_synthetic"): "data generation",
        (demo, "train"): "train",
        (training, "pair_features_torch"): "encoding/train",
        (predict, "pair_features_torch"): "encoding/predict",
        **{(training, name): "writes" for name in WRITERS},
        (training, "save_checkpoint"): "writes/checkpoint",  # inside the phases' logged seconds
        (demo, "atomic_write_text"): "writes",
        (demo, "predict_scores"): "hold-out scoring",
    }


def demo_parts(out_dir: Path) -> dict:
    """Seconds per part of one in-process demo run (``itertrain.cli.main``), its wall time and
    the names that could not be wrapped."""
    split = Split()
    with split.patched(_demo_targets()), contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        status = itertrain.cli.main(DEMO_ARGS + ["--out", str(out_dir)])
        wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"itertrain demo exited with status {status}")
    s = split.seconds
    log = split.returned["train"].log
    logged = sum(r["seconds"] for r in log)
    samples = sum(r["pos_samples"] + r["neg_samples"] for r in log)
    parts = {
        "data generation": s["data generation"],
        "encoding (per-batch matrices)": s["encoding/train"] + s["encoding/predict"],
        "optimizer steps (fwd, bwd, step)": logged - s["encoding/train"] - s["writes/checkpoint"],
        "checkpoint and log writes": s["writes/checkpoint"] + s["writes"],
        "hold-out scoring (forward only)": s["hold-out scoring"],
    }
    parts["other (CLI, sampler, model, metrics)"] = wall - sum(parts.values())
    return {"parts": parts, "wall": wall, "missing": split.missing, "samples": samples,
            "threads": torch.get_num_threads()}


# The demo runs in a fresh interpreter, as the user runs it; this module is imported there for the wrappers.
_DEMO_CHILD = """
import time; started = time.perf_counter()
import json, sys
sys.path.insert(0, sys.argv[1])
import training
imported = time.perf_counter() - started
print(json.dumps({**training.demo_parts(training.Path(sys.argv[2])), "import": imported}))
"""


def demo_breakdown(one_thread_speed: float | None = None) -> list[dict]:
    """The demo's parts; ``one_thread_speed`` (samples/s of the 1-thread hand loop) is shown beside its steps."""
    with tempfile.TemporaryDirectory(prefix="itertrain-bench-") as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _DEMO_CHILD, str(Path(__file__).parent), f"{tmp}/demo"],
                              capture_output=True, text=True)
        total = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the instrumented demo failed: {done.stderr.strip().splitlines()[-1:]}")
    child = json.loads(done.stdout)
    parts = {"start-up and exit (python, imports)": total - child["wall"], **child["parts"]}
    rows = [row("itertrain demo --synthetic notebook: wall", total, "s",
                note=f"one run in a fresh interpreter, default threads; start-up = wall - in-process run, "
                     f"of which importing itertrain took {child['import']:.2f} s"
                     + (f"; not instrumented (renamed?): {', '.join(child['missing'])}" if child["missing"] else ""))]
    rows += [row(f"  {name}", seconds, "s", baseline=total, baseline_name="demo wall",
                 ratio=100 * seconds / total, ratio_unit="%") for name, seconds in parts.items()]
    steps_name = "optimizer steps (fwd, bwd, step)"
    runner_up = max((n for n in parts if n != steps_name), key=parts.get)
    overhead = parts["encoding (per-batch matrices)"] + parts["checkpoint and log writes"]
    steps_speed = child["samples"] / parts[steps_name]
    rows.append(row(f"  optimizer steps: samples/s ({child['threads']} torch threads)", steps_speed, "samples/s",
                    baseline=one_thread_speed, baseline_name="1-thread hand loop above",
                    note="batches of 20-140 here, 40-60 in the hand loop; a ratio well under 1 means the "
                         "default threads lose to one thread on this machine (other processes, 2 cores)"))
    rows += [
        row("demo: optimizer steps vs the next largest part", parts[steps_name], "s",
            baseline=parts[runner_up], baseline_name=runner_up.split(" (")[0], target=("ratio", ">=", 1)),
        row("demo: encoding + writes, share of the wall time", 100 * overhead / total, "%",
            target=("value", "<=", 15)),
    ]
    return rows


def main() -> list[dict]:
    race_rows = train_vs_hand_loop()
    return race_rows + demo_breakdown(one_thread_speed=race_rows[0]["baseline"])


if __name__ == "__main__":
    script_main(main, description=__doc__.splitlines()[0])
