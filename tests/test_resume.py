"""Interrupted runs resume to exactly the run that was never interrupted."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import itertrain as it

from conftest import table_frame

# 6 passes per phase make a phase last ~1 s: the CLI tests signal the child when they read a phase
# line, and with 0.2 s phases a busy machine let the child finish before the signal came
CONFIG = dict(max_iter=5, pos_samples=150, n_batches=10, neg_ratio_step=1.0, epochs_per_phase=6, device="cpu",
              seed=4)


def comparable(log):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in log]


def read_log(run):
    text = (run / "training_log.tsv").read_text().splitlines()
    return [line.split("\t")[:11] + line.split("\t")[12:] for line in text]  # drop `seconds`


def final_weights(run, phase=4):
    return load_file(run / "checkpoints" / f"model_arch_00b_{phase}.safetensors")


@pytest.fixture(scope="module")
def pools():
    return it.make_synthetic("seed-match", 1000, 3000, seed=1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pools):
    run = tmp_path_factory.mktemp("ref") / "run"
    it.train(pools, it.TrainConfig(**CONFIG), run, progress=False)
    return run


def assert_same_run(run, reference):
    assert read_log(run) == read_log(reference)
    assert (run / "batches.tsv").read_text() == (reference / "batches.tsv").read_text()
    expected = final_weights(reference)
    for name, tensor in final_weights(run).items():
        assert torch.equal(tensor, expected[name]), name
    assert not list(run.glob("**/*.tmp"))


def test_interrupt_then_resume_in_process(tmp_path, pools, reference):
    def stop_after_phase_2(line):
        if line.startswith("phase   3/"):
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        it.train(pools, it.TrainConfig(**CONFIG), run, progress=stop_after_phase_2)
    messages = []
    result = it.train(pools, it.TrainConfig(**CONFIG), run, resume=True, progress=messages.append)
    assert any("resuming" in m and "after phase 2" in m for m in messages)
    assert result.n_phases == 5
    assert_same_run(run, reference)


def test_resume_refuses_changed_settings_or_data(tmp_path, pools, reference):
    run = tmp_path / "run"
    it.train(pools, it.TrainConfig(**{**CONFIG, "max_iter": 2}), run, progress=False)
    with pytest.raises(it.UserError, match="different settings .*lr"):
        it.train(pools, it.TrainConfig(**{**CONFIG, "max_iter": 2, "lr": 0.1}), run, resume=True, progress=False)
    other = it.make_synthetic("seed-match", 1000, 3000, seed=2)
    with pytest.raises(it.UserError, match="training data changed"):
        it.train(other, it.TrainConfig(**{**CONFIG, "max_iter": 2}), run, resume=True, progress=False)


def test_crafted_state_file_is_refused(tmp_path, pools):
    run = tmp_path / "run"
    it.train(pools, it.TrainConfig(**{**CONFIG, "max_iter": 1}), run, progress=False)

    class Boom:
        def __reduce__(self):
            return (exec, ("open('PWNED', 'w')",))

    torch.save({"format": "itertrain-state/1", "x": Boom()}, run / "state.pt")
    with pytest.raises(it.UserError, match="unreadable resume state"):
        it.train(pools, it.TrainConfig(**{**CONFIG, "max_iter": 1}), run, resume=True, progress=False)
    assert not (tmp_path / "PWNED").exists()


CLI_FLAGS = ["--max-iter", "5", "--pos-samples", "150", "--n-batches", "10", "--neg-ratio-step", "1",
             "--epochs-per-phase", "6", "--device", "cpu", "--seed", "4"]  # CONFIG, as options


def start_cli_run(tmp_path, pools, sigint=signal.SIG_DFL):
    """The CONFIG run as a CLI subprocess whose progress lines can be read.

    The child starts with SIGINT as a terminal's foreground job has it: a suite
    run in the background of a script (``make test &``, nohup) passes SIG_IGN
    down, and a run that inherits it rightly ignores Ctrl-C.
    """
    data = tmp_path / "pairs.tsv"
    table_frame(pools).to_csv(data, sep="\t", index=False)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "itertrain", "train", "--data", str(data), "--out", str(run),
                             *CLI_FLAGS], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    return proc, run


def resume_cli_run(run):
    resumed = subprocess.run([sys.executable, "-m", "itertrain", "train", "--resume", str(run), "--quiet"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("kill_after_phase, delay", [(0, 0.0), (1, 0.02), (3, 0.1), (4, 0.0)])
def test_sigkill_at_several_points_then_resume_via_cli(tmp_path, pools, reference, kill_after_phase, delay):
    proc, run = start_cli_run(tmp_path, pools)
    # phase lines appear after a phase is committed; "training N phase(s)" before phase 0 starts
    trigger = "training " if kill_after_phase == 0 else f"phase {kill_after_phase:>3}/"
    for line in proc.stderr:
        if line.startswith(trigger):
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    resume_cli_run(run)
    assert_same_run(run, reference)


def test_resume_flag_rejects_new_settings(tmp_path, pools):
    from itertrain.cli import main

    run = tmp_path / "run"
    it.train(pools, it.TrainConfig(**{**CONFIG, "max_iter": 1}), run, progress=False)
    assert main(["train", "--resume", str(run), "--lr", "0.5"]) == 2
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2


def ctrl_c_after_phase_2(proc) -> str:
    """Send SIGINT when the child reports phase 2; its whole stderr once it exits."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("phase   2/"):
            proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    return "".join(lines)


def test_ctrl_c_saves_consistent_state_and_says_how_to_resume(tmp_path, pools, reference):
    proc, run = start_cli_run(tmp_path, pools)
    err = ctrl_c_after_phase_2(proc)
    assert proc.returncode == 130, err
    assert f"Continue with: itertrain train --resume {run}" in err and "Traceback" not in err
    assert not list(run.glob("**/*.tmp"))
    resume_cli_run(run)
    assert_same_run(run, reference)


def test_a_run_started_with_sigint_ignored_keeps_going_like_nohup(tmp_path, pools, reference):
    proc, run = start_cli_run(tmp_path, pools, sigint=signal.SIG_IGN)
    err = ctrl_c_after_phase_2(proc)
    assert proc.returncode == 0, err
    assert_same_run(run, reference)


def test_shift_augmentation_resumes_to_the_uninterrupted_run(tmp_path, pools):
    config = it.TrainConfig(**{**CONFIG, "max_iter": 3, "augment_shift": 3})
    reference = tmp_path / "reference"
    it.train(pools, config, reference, progress=False)

    def stop_after_phase_1(line):
        if line.startswith("phase   2/"):
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        it.train(pools, config, run, progress=stop_after_phase_1)
    it.train(pools, config, run, resume=True, progress=False)
    last = final_weights(reference, phase=2)
    assert all(torch.equal(tensor, last[name]) for name, tensor in final_weights(run, phase=2).items())
    plain = tmp_path / "plain"  # the shifts are drawn: without them the weights differ
    it.train(pools, it.TrainConfig(**{**CONFIG, "max_iter": 3}), plain, progress=False)
    assert not all(torch.equal(tensor, last[name]) for name, tensor in final_weights(plain, phase=2).items())


def test_sigint_stops_at_a_batch_boundary_and_restores_the_handler(tmp_path, pools):
    messages = []

    def ctrl_c_after_phase_0(line):
        messages.append(line)
        if line.startswith("phase   1/"):
            signal.raise_signal(signal.SIGINT)  # to this thread; the handler only records it, the loop raises

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        it.train(pools, it.TrainConfig(**{**CONFIG, "max_iter": 3}), tmp_path / "run", progress=ctrl_c_after_phase_0)
    assert signal.getsignal(signal.SIGINT) is before
    assert "interrupted after phase 0; phases 0-0 are saved" in messages[-1]
    assert len((tmp_path / "run" / "training_log.tsv").read_text().splitlines()) == 2  # header + phase 0
