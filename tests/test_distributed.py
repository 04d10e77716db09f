"""Several processes with torchrun + DDP (gloo on CPU) train exactly like one."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import itertrain as it
from itertrain.distributed import rank_share

from conftest import table_frame

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

# 42 positives in 4 batches: 11/11/10/10 positives, so the two ranks' shares are unequal
FLAGS = ["--max-iter", "3", "--pos-samples", "42", "--n-batches", "4", "--neg-ratio-step", "0.75",
         "--dropout", "0", "--device", "cpu", "--seed", "3", "--class-weight", "1,2"]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.integers(0, 60), st.integers(1, 6), st.integers(0, 1000))
def test_rank_shares_partition_the_batch_and_each_holds_a_positive(n_pos, n_neg, world, seed):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_pos, np.int8), np.zeros(n_neg, np.int8)]
    batch = rng.permutation(len(labels)).astype(np.int64)
    shares = [rank_share(batch, labels, r, world) for r in range(world)]
    joined = np.concatenate(shares)
    assert sorted(joined) == sorted(batch), "shares must be disjoint and cover the batch"
    if n_pos >= world:
        assert all(labels[s].sum() >= 1 for s in shares)
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 2


def torchrun(*args, nproc=2, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(29500 + os.getpid() % 1000), "-m", "itertrain", "train", *map(str, args)], env


def log_rows(run):
    with open(run / "training_log.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    table_frame(it.make_synthetic("seed-match", 300, 900, seed=5)).to_csv(folder / "pairs.tsv", sep="\t", index=False)
    table_frame(it.make_synthetic("seed-match", 40, 160, seed=6)).to_csv(folder / "val.tsv", sep="\t", index=False)
    return folder


@pytest.fixture(scope="module")
def single(data):
    run = data / "single"
    proc = subprocess.run([sys.executable, "-m", "itertrain", "train", "--data", data / "pairs.tsv", "--val",
                           data / "val.tsv", "--out", run, "--quiet", *FLAGS], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return run


def assert_equivalent(run, reference):
    ours, theirs = log_rows(run), log_rows(reference)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        for column in ("train_loss", "val_average_precision", "val_roc_auc"):
            assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-4, abs=1e-6), column
    final = "checkpoints/model_arch_00b_2.safetensors"
    expected = load_file(reference / final)
    for name, tensor in load_file(run / final).items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-3, atol=2e-5)  # RMSprop amplifies rounding


def test_two_processes_match_one(data, single):
    run = data / "two"
    cmd, env = torchrun("--data", data / "pairs.tsv", "--val", data / "val.tsv", "--out", run, *FLAGS)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes" in proc.stderr
    assert proc.stdout.count("trained 3 phase(s)") == 1  # only rank 0 reports
    assert_equivalent(run, single)


def test_two_processes_killed_then_resumed_match_one(data, single):
    run = data / "resumed"
    cmd, env = torchrun("--data", data / "pairs.tsv", "--val", data / "val.tsv", "--out", run, *FLAGS)
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    for line in proc.stderr:
        if line.startswith("phase   1/"):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert len(log_rows(run)) == 1
    cmd, env = torchrun("--resume", run)
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    assert_equivalent(run, single)


def test_batches_with_fewer_positives_than_processes_are_refused(data):
    cmd, env = torchrun("--data", data / "pairs.tsv", "--out", data / "refused", "--pos-samples", "6",
                        "--n-batches", "4", "--device", "cpu")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "holds as few as 1 positive(s)" in proc.stderr and "fewer than the 2 processes" in proc.stderr
    assert not (data / "refused").exists()
