"""Validation after every phase, best-checkpoint selection, evaluate/report/negatives commands."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

import itertrain as it
from itertrain.cli import main
from itertrain.checkpoint import read_metadata
from itertrain.training import _best_phase

from conftest import SMALL, table_frame


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture
def val_sets():
    return {"easy": it.make_synthetic("seed-match", 60, 240, seed=10),
            "hard": it.make_synthetic("seed-match", 30, 600, seed=11)}


def test_metrics_logged_per_phase_and_best_checkpoint_is_the_best_phase(tmp_path, small_pairs, val_sets):
    result = it.train(small_pairs, it.TrainConfig(**SMALL), tmp_path / "run", validation=val_sets, progress=False)
    log = read_tsv(tmp_path / "run" / "training_log.tsv")
    for name in ("easy", "hard"):
        for metric in it.evaluation.METRIC_NAMES:
            assert f"{name}_{metric}" in log[0]
    # each logged value is what the phase's checkpoint scores on that set
    for row in log:
        model = it.load_checkpoint(tmp_path / "run" / row["checkpoint"]).model
        scores = it.predict_scores(model, val_sets["easy"])
        assert float(row["easy_average_precision"]) == pytest.approx(
            it.average_precision(val_sets["easy"].labels, scores), abs=1e-5)
    aps = [float(r["easy_average_precision"]) for r in log]
    best = int(np.argmax(aps))
    assert result.best_phase == best
    best_file = load_file(tmp_path / "run" / "checkpoints" / "best.safetensors")
    phase_file = load_file(tmp_path / "run" / log[best]["checkpoint"])
    assert all((best_file[k] == phase_file[k]).all() for k in phase_file)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_phase"] == best and summary["validation_sets"] == ["easy", "hard"]
    assert it.resolve_checkpoint(tmp_path / "run").name == "best.safetensors"


def test_best_phase_rule():
    log = [{"v_average_precision": x} for x in (0.2, 0.5, 0.5, math.nan, 0.1)]
    assert _best_phase(log, "v_average_precision") == 1  # the earliest of equals; NaN never wins
    assert _best_phase(log, None) is None
    assert _best_phase([{"v_average_precision": math.nan}], "v_average_precision") is None


def test_val_every_scores_every_nth_and_the_last_phase_and_picks_best_among_them(tmp_path, small_pairs,
                                                                                   val_sets):
    config = it.TrainConfig(**{**SMALL, "max_iter": 5}, val_every=2)
    result = it.train(small_pairs, config, tmp_path / "run", validation=val_sets, progress=False)
    log = read_tsv(tmp_path / "run" / "training_log.tsv")
    scored = [int(r["iteration"]) for r in log if r["easy_average_precision"] != ""]
    assert scored == [1, 3, 4]  # every 2nd phase, and the last one
    assert all(r["hard_roc_auc"] == "" for r in log if int(r["iteration"]) not in scored)
    aps = {int(r["iteration"]): float(r["easy_average_precision"]) for r in log if r["easy_average_precision"]}
    assert result.best_phase == max(aps, key=aps.get)
    meta = read_metadata(tmp_path / "run" / "checkpoints" / "best.safetensors")
    assert meta["phase"] == result.best_phase
    # the report plots the scored phases (no curves: these sets were passed in, not named in the config)
    assert main(["report", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "report.html").read_text().count("data:image/png;base64") == 2
    with pytest.raises(it.UserError, match="val_every must be a whole number >= 1"):
        it.TrainConfig(val_every=0)


def test_epochs_per_phase_and_cosine_schedule_train(tmp_path, small_pairs):
    one = it.train(small_pairs, it.TrainConfig(**SMALL), tmp_path / "a", progress=False)
    two = it.train(small_pairs, it.TrainConfig(**SMALL, epochs_per_phase=3, lr_schedule="cosine"), tmp_path / "b",
                   progress=False)
    assert one.log[0]["train_loss"] != two.log[0]["train_loss"]
    assert len(read_tsv(tmp_path / "b" / "batches.tsv")) == 16  # one row per batch, loss averaged over passes


def test_cli_train_with_val_then_evaluate_report(tmp_path, pairs_tsv, small_pairs):
    val = tmp_path / "val.tsv"
    table_frame(it.make_synthetic("seed-match", 50, 200, seed=9)).to_csv(val, sep="\t", index=False)
    run = tmp_path / "run"
    assert main(["train", "--data", str(pairs_tsv), "--val", f"v={val}", "--out", str(run), "--max-iter", "3",
                 "--pos-samples", "20", "--n-batches", "4", "--device", "cpu", "--quiet"]) == 0
    assert "v_average_precision" in read_tsv(run / "training_log.tsv")[0]
    out_json = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(run), "--data", f"v={val}", str(pairs_tsv),
                 "--output", str(out_json)]) == 0
    payload = json.loads(out_json.read_text())
    assert [s["set"] for s in payload["sets"]] == ["v", "pairs"]
    best_row = read_tsv(run / "training_log.tsv")[json.loads((run / "summary.json").read_text())["best_phase"]]
    assert payload["sets"][0]["average_precision"] == pytest.approx(float(best_row["v_average_precision"]),
                                                                    abs=1e-5)
    assert main(["evaluate", "--model", str(run), "--data", str(val), "--output", str(tmp_path / "m.tsv")]) == 0
    assert pd.read_csv(tmp_path / "m.tsv", sep="\t").columns[3] == "average_precision"
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64") == 3  # training, metrics, curves


def test_cli_negatives_and_repair_pool(tmp_path, small_pairs):
    positives = table_frame(small_pairs.subset(np.flatnonzero(small_pairs.labels == 1)), "gene", "miRNA")
    positives.to_csv(tmp_path / "pos.tsv", sep="\t", index=False)
    assert main(["negatives", "--positives", str(tmp_path / "pos.tsv"), "--ratio", "3",
                 "--out", str(tmp_path / "neg.tsv"), "--seed", "2"]) == 0
    negatives = pd.read_csv(tmp_path / "neg.tsv", sep="\t")
    assert len(negatives) == 3 * len(positives) and (negatives["label"] == 0).all()
    known = set(zip(positives["gene"], positives["miRNA"]))
    assert not known & set(zip(negatives["gene"], negatives["miRNA"]))
    run = tmp_path / "run"
    assert main(["train", "--positives", str(tmp_path / "pos.tsv"), "--negatives", "repair:2", "--out", str(run),
                 "--max-iter", "2", "--pos-samples", "20", "--n-batches", "4", "--device", "cpu", "--quiet"]) == 0
    assert [r["neg_samples"] for r in read_tsv(run / "training_log.tsv")] == ["20", "30"]
    assert main(["train", "--positives", str(tmp_path / "pos.tsv"), "--negatives", "repair:x",
                 "--out", str(tmp_path / "r2")]) == 2


def test_bias_free_validation_set_is_the_same_in_train_and_evaluate(tmp_path, small_pairs, capsys):
    positives = table_frame(it.make_synthetic("seed-match", 40, 0, seed=12))
    positives["miRNA_group"] = 0
    positives.to_csv(tmp_path / "eval.tsv", sep="\t", index=False)
    train_file = tmp_path / "train.tsv"
    table_frame(small_pairs).to_csv(train_file, sep="\t", index=False)
    spec = f"unbiased=repair:3:{tmp_path / 'eval.tsv'}"
    run = tmp_path / "run"
    assert main(["train", "--data", str(train_file), "--val", spec, "--out", str(run), "--max-iter", "2",
                 "--pos-samples", "20", "--n-batches", "4", "--device", "cpu", "--quiet"]) == 0
    logged = float(read_tsv(run / "training_log.tsv")[-1]["unbiased_average_precision"])
    out = tmp_path / "m.json"
    assert main(["evaluate", "--model", str(run / "checkpoints" / "model_arch_00b_1.safetensors"), "--data", spec,
                 "--avoid", str(train_file), "--output", str(out)]) == 0
    result = json.loads(out.read_text())["sets"][0]
    assert (result["n_pos"], result["n_neg"]) == (40, 120)
    assert result["average_precision"] == pytest.approx(logged, abs=1e-5)
    assert main(["evaluate", "--baseline", "seed-match", "--data", spec, "--avoid", str(train_file)]) == 0
    assert "baseline seed-match" in capsys.readouterr().out


def test_score_shift_averages_shifted_scores_and_travels_with_the_checkpoint(tmp_path, small_pairs, val_sets):
    import torch

    from itertrain.encoding import shift_sequences

    config = it.TrainConfig(**SMALL, augment_shift=2, score_shift=2)
    it.train(small_pairs, config, tmp_path / "run", validation=val_sets, progress=False)
    checkpoint = it.load_checkpoint(tmp_path / "run" / "checkpoints" / "best.safetensors")
    assert checkpoint.score_shift == 2
    easy = val_sets["easy"]
    by_shift = []
    for shift in range(-2, 3):  # the definition: the mean of the five shifted tables' scores
        moved = easy.subset(np.arange(len(easy)))
        moved.codes_a = shift_sequences(torch.from_numpy(easy.codes_a), torch.full((len(easy),), shift)).numpy()
        by_shift.append(it.predict_scores(checkpoint.model, moved))
    assert np.allclose(checkpoint.scores(easy), np.mean(by_shift, axis=0), atol=1e-6)
    assert not np.allclose(by_shift[0], by_shift[2])  # the shifts do change the scores
    # training's validation, evaluate and the checkpoint agree on the metric
    best_row = read_tsv(tmp_path / "run" / "training_log.tsv")[it.load_checkpoint(
        tmp_path / "run" / "checkpoints" / "best.safetensors").metadata["phase"]]
    assert float(best_row["easy_average_precision"]) == pytest.approx(
        it.average_precision(easy.labels, checkpoint.scores(easy)), abs=1e-5)
