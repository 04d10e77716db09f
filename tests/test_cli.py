"""The command line end to end on small data: demo, train, predict, errors."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import itertrain as it
from itertrain.cli import main

from conftest import DATA_DIR, needs_shared_data, table_frame

TINY = ["--max-iter", "3", "--pos-samples", "20", "--n-batches", "4", "--device", "cpu", "--quiet"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "itertrain", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_demo_small_pools_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-pos", "300", "--n-neg", "400", *TINY[:-1]]) == 0
    captured = capsys.readouterr()
    assert "phase   1/3" in captured.err
    assert "held-out synthetic set" in captured.out and "average precision" in captured.out
    assert len(read_tsv(out / "training_log.tsv")) == 3
    assert all(int(b["n_pos"]) > 0 for b in read_tsv(out / "batches.tsv"))
    assert (out / "holdout_metrics.tsv").is_file()


def test_demo_notebook_generator_reports_the_dry_pool(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--synthetic", "notebook", "--out", out, "--n-pos", "100", "--n-neg", "100",
            "--pos-samples", "20", "--n-batches", "4", "--device", "cpu"]
    assert main(list(map(str, args))) == 0
    captured = capsys.readouterr()
    assert "stopped early: phase 3 needs 50 negatives but only 10 of 100 remain in the negative pool" in captured.out
    assert len(list((out / "checkpoints").glob("*.safetensors"))) == 3


def test_train_then_predict_keeps_columns(tmp_path, pairs_tsv):
    run = tmp_path / "run"
    assert main(["train", "--data", str(pairs_tsv), "--out", str(run), *TINY]) == 0
    assert len(read_tsv(run / "training_log.tsv")) == 3
    scored = tmp_path / "scored.csv"
    frame = pd.read_csv(pairs_tsv, sep="\t")
    frame.insert(0, "id", range(len(frame)))
    frame.to_csv(tmp_path / "input.csv", index=False)
    assert main(["predict", "--model", str(run), "--input", str(tmp_path / "input.csv"),
                 "--output", str(scored)]) == 0
    result = pd.read_csv(scored)
    assert list(result.columns) == ["id", "seq_a", "seq_b", "label", "score"]
    assert result["id"].tolist() == list(range(len(frame)))
    assert result["score"].between(0, 1).all()
    pairs = it.load_pairs(pairs_tsv)
    expected = it.predict_scores(it.load_checkpoint(run / "checkpoints" / "model_arch_00b_2.safetensors").model,
                                 pairs)
    assert result["score"].to_numpy() == pytest.approx(expected, rel=1e-5)


def test_train_from_positives_and_negatives_with_config_file(tmp_path, small_pairs):
    frame = table_frame(small_pairs, "gene", "miRNA", label=None)
    frame[:200].to_csv(tmp_path / "pos.tsv", sep="\t", index=False)
    frame[200:].to_csv(tmp_path / "neg.tsv", sep="\t", index=False)
    (tmp_path / "run.toml").write_text(
        'positives = "pos.tsv"\nnegatives = "neg.tsv"\nmax_iter = 5\npos_samples = 10\nn_batches = 2\n'
        'optimizer = "Adam"\nbatching = "random"\ndevice = "cpu"\n')
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "run.toml"), "--max-iter", "2", "--out", str(run),
                 "--quiet"]) == 0
    log = read_tsv(run / "training_log.tsv")
    assert len(log) == 2 and log[0]["optimizer"] == "Adam" and log[0]["pick_minibatches"] == "False"
    saved = it.TrainConfig.from_dict(it.load_config(run / "config.toml"))
    assert saved.max_iter == 2 and saved.positives == str(tmp_path / "pos.tsv")


def test_explicit_ratio_list(tmp_path, pairs_tsv):
    run = tmp_path / "run"
    assert main(["train", "--data", str(pairs_tsv), "--out", str(run), "--neg-ratios", "1,3,2", "--pos-samples",
                 "10", "--n-batches", "2", "--device", "cpu", "--quiet"]) == 0
    assert [r["neg_samples"] for r in read_tsv(run / "training_log.tsv")] == ["10", "30", "20"]


def test_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path, pairs_tsv):
    bad = tmp_path / "bad.tsv"
    bad.write_text("seq_a\tseq_b\tlabel\nACGT\tACGT\tmaybe\n")
    cases = [
        (["train", "--data", bad, "--out", tmp_path / "r1"], "labels must be 0 or 1"),
        (["train", "--data", tmp_path / "missing.tsv", "--out", tmp_path / "r2"], "no such file"),
        (["train", "--data", pairs_tsv, "--out", tmp_path / "r3", "--lr", "-1"], "lr must be a positive"),
        (["train", "--data", pairs_tsv, "--out", tmp_path / "r4", "--pos-samples", "3"], "cannot put a positive"),
        (["predict", "--model", tmp_path / "nothing", "--input", pairs_tsv, "--output", tmp_path / "o.tsv"],
         "no such checkpoint or run folder"),
    ]
    for args, message in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r3").exists() and not (tmp_path / "o.tsv").exists()


def test_help_lists_every_option():
    proc = run_cli("train", "--help")
    assert proc.returncode == 0
    for option in ["--max-iter", "--pos-samples", "--neg-ratio-start", "--neg-ratio-step", "--n-batches",
                   "--batching", "--optimizer", "--lr", "--arch", "--seed", "--device", "--data", "--positives",
                   "--negatives", "--seq-a-col", "--seq-b-col", "--label-col", "--config", "--out"]:
        assert option in proc.stdout, option


@needs_shared_data
def test_train_on_mirbind_file_and_predict_evaluation_set(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", "--data", DATA_DIR / "train_set_1_1_CLASH2013_paper.tsv", "--out", run,
                   "--max-iter", "2", "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "scores.tsv"
    proc = run_cli("predict", "--model", run, "--input", DATA_DIR / "evaluation_set_1_10_CLASH2013_paper.tsv",
                   "--output", out)
    assert proc.returncode == 0, proc.stderr
    scored = pd.read_csv(out, sep="\t")
    assert len(scored) == 11000 and list(scored.columns) == ["miRNA", "gene", "label", "score"]


def test_richer_encoding_trains_predicts_and_evaluates_through_its_checkpoint(tmp_path, pairs_tsv):
    run = tmp_path / "run"
    assert main(["train", "--data", str(pairs_tsv), "--out", str(run), "--encoding", "wc+wobble+bases",
                 "--val", str(pairs_tsv), *TINY]) == 0
    loaded = it.load_checkpoint(run / "checkpoints" / "best.safetensors")
    assert loaded.encoding == "wc+wobble+bases" and loaded.metadata["config"]["encoding"] == "wc+wobble+bases"
    scored = tmp_path / "scored.tsv"
    assert main(["predict", "--model", str(run), "--input", str(pairs_tsv), "--output", str(scored)]) == 0
    pairs = it.load_pairs(pairs_tsv)
    explicit = it.predict_scores(loaded.model, pairs, encoding="wc+wobble+bases")
    assert pd.read_csv(scored, sep="\t")["score"].to_numpy() == pytest.approx(explicit, rel=1e-5)
    # without the argument the encoding follows from the model's 10 input channels
    np.testing.assert_array_equal(it.predict_scores(loaded.model, pairs), explicit)
    metrics = tmp_path / "metrics.tsv"
    assert main(["evaluate", "--model", str(run), "--data", str(pairs_tsv), "--output", str(metrics)]) == 0
    best = read_tsv(run / "training_log.tsv")
    selected = max(best, key=lambda row: float(row["pairs_average_precision"]))
    assert float(read_tsv(metrics)[0]["average_precision"]) == pytest.approx(
        float(selected["pairs_average_precision"]), abs=1e-4)
