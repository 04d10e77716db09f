"""The training loop: run folder contents, determinism, weights, custom models."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

import itertrain as it
from itertrain.training import BATCH_COLUMNS, LOG_COLUMNS

from conftest import SMALL

NOTEBOOK_FIELDS = ["max_iter", "model_name", "optimizer", "architecture", "pick_minibatches", "iteration",
                   "pos_samples", "neg_ratio", "neg_samples"]


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def weights_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_run_folder_holds_config_logs_and_a_checkpoint_per_phase(tmp_path, small_pairs):
    result = it.train(small_pairs, it.TrainConfig(**SMALL), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert result.n_phases == 4 and result.stop_reason is None
    assert it.TrainConfig.from_dict(it.load_config(run / "config.toml")) == it.TrainConfig(**SMALL)
    log = read_tsv(run / "training_log.tsv")
    assert list(log[0]) == list(LOG_COLUMNS) and LOG_COLUMNS[:9] == tuple(NOTEBOOK_FIELDS)
    assert [int(r["iteration"]) for r in log] == [0, 1, 2, 3]
    assert [int(r["neg_samples"]) for r in log] == [20, 30, 40, 50]
    assert [r["model_name"] for r in log] == [f"model_arch_00b_{p}" for p in range(4)]
    assert all(float(r["train_loss"]) > 0 and float(r["seconds"]) > 0 for r in log)
    for p in range(4):
        assert (run / "checkpoints" / f"model_arch_00b_{p}.safetensors").is_file()
    batches = read_tsv(run / "batches.tsv")
    assert list(batches[0]) == list(BATCH_COLUMNS) and len(batches) == 16
    assert all(int(b["n_pos"]) == 5 for b in batches)
    assert sum(int(b["n_neg"]) for b in batches if b["iteration"] == "3") == 50
    assert not list(run.glob("**/*.tmp")), "a temporary file was left behind"


def test_same_seed_gives_identical_log_and_weights(tmp_path, small_pairs):
    runs = [it.train(small_pairs, it.TrainConfig(**SMALL, seed=5), tmp_path / f"r{i}", progress=False)
            for i in range(2)]
    other = it.train(small_pairs, it.TrainConfig(**SMALL, seed=6), tmp_path / "r3", progress=False)
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]  # noqa: E731
    assert strip(runs[0].log) == strip(runs[1].log)
    for k, v in weights_of(runs[0].model).items():
        assert torch.equal(v, weights_of(runs[1].model)[k]), k
    assert strip(runs[0].log) != strip(other.log)
    assert (tmp_path / "r0" / "batches.tsv").read_text() == (tmp_path / "r1" / "batches.tsv").read_text()


def test_exhausted_pool_stops_cleanly_after_last_complete_phase(tmp_path):
    pairs = it.make_synthetic("notebook", n_pos=100, n_neg=120, seed=0)
    config = it.TrainConfig(pos_samples=20, n_batches=4, max_iter=10, device="cpu")  # 20+30+40 <= 120 < 20+30+40+50
    messages = []
    result = it.train(pairs, config, tmp_path / "run", progress=messages.append)
    assert result.n_phases == 3
    assert "phase 3 needs 50 negatives but only 30 of 120 remain in the negative pool" in result.stop_reason
    assert any("stopped after phase 2" in m for m in messages)
    assert len(read_tsv(tmp_path / "run" / "training_log.tsv")) == 3
    assert len(list((tmp_path / "run" / "checkpoints").glob("*.safetensors"))) == 3


def test_class_weight_and_sample_weights_change_the_loss(tmp_path, small_pairs):
    base = it.train(small_pairs, it.TrainConfig(**SMALL), tmp_path / "a", progress=False)
    weighted = it.train(small_pairs, it.TrainConfig(**SMALL, class_weight=[1, 4]), tmp_path / "b",
                        progress=False)
    assert base.log[0]["train_loss"] != weighted.log[0]["train_loss"]
    ones = it.PairTable(small_pairs.codes_a, small_pairs.codes_b, small_pairs.labels,
                        np.ones(len(small_pairs), np.float32))
    same = it.train(ones, it.TrainConfig(**SMALL), tmp_path / "c", progress=False)
    assert same.log[0]["train_loss"] == pytest.approx(base.log[0]["train_loss"], rel=1e-6)
    zeros = it.PairTable(small_pairs.codes_a, small_pairs.codes_b, small_pairs.labels,
                         np.zeros(len(small_pairs), np.float32))
    assert it.train(zeros, it.TrainConfig(**SMALL), tmp_path / "d", progress=False).log[0]["train_loss"] == 0


@pytest.mark.parametrize("optimizer", ["RMSprop", "Adam", "SGD"])
def test_optimizers_train(tmp_path, small_pairs, optimizer):
    result = it.train(small_pairs, it.TrainConfig(**SMALL, optimizer=optimizer, lr=0.01), tmp_path / "r",
                      progress=False)
    assert result.n_phases == 4 and np.isfinite(result.log[-1]["train_loss"])


def test_learns_the_seed_match_task(tmp_path):
    pools = it.make_synthetic("seed-match", 6000, 12000, seed=0)
    config = it.TrainConfig(pos_samples=600, n_batches=30, neg_ratios=[1, 1, 1.5, 1.5, 2, 2, 2.5, 2.5],
                            device="cpu", lr=0.002)
    result = it.train(pools, config, tmp_path / "r", progress=False)
    held_out = it.make_synthetic("seed-match", 500, 2500, seed=99)
    ap = it.average_precision(held_out.labels, it.predict_scores(result.model, held_out))
    assert ap > 0.3  # twice the base rate (0.17): the model found the seed matches


def test_user_module_through_the_api(tmp_path, small_pairs):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(50 * 20, 1))

        def forward(self, x):
            return self.net(x).squeeze(-1)

    result = it.train(small_pairs, it.TrainConfig(**SMALL), tmp_path / "run", model=Tiny(), progress=False)
    assert result.log[0]["architecture"] == "custom"
    assert result.checkpoints[0].name == "model_custom_0.safetensors"
    with pytest.raises(it.UserError, match="pass the module"):
        it.load_checkpoint(result.checkpoints[-1])
    loaded = it.load_checkpoint(result.checkpoints[-1], model=Tiny()).model
    np.testing.assert_array_equal(it.predict_scores(loaded, small_pairs), it.predict_scores(result.model, small_pairs))


def test_refuses_to_mix_runs_unless_overwrite(tmp_path, small_pairs):
    it.train(small_pairs, it.TrainConfig(**SMALL), tmp_path / "run", progress=False)
    with pytest.raises(it.UserError, match="already exists"):
        it.train(small_pairs, it.TrainConfig(**SMALL), tmp_path / "run", progress=False)
    it.train(small_pairs, it.TrainConfig(**{**SMALL, "max_iter": 2}), tmp_path / "run", overwrite=True, progress=False)
    assert len(list((tmp_path / "run" / "checkpoints").iterdir())) == 2
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "thesis.tex").write_text("precious")
    with pytest.raises(it.UserError, match="not an itertrain run folder"):
        it.train(small_pairs, it.TrainConfig(**SMALL), tmp_path / "notarun", overwrite=True, progress=False)
    assert (tmp_path / "notarun" / "thesis.tex").read_text() == "precious"


def test_focal_loss_is_bce_at_gamma_zero_and_smaller_otherwise(tmp_path, small_pairs):
    bce = it.train(small_pairs, it.TrainConfig(**SMALL), tmp_path / "a", progress=False)
    zero = it.train(small_pairs, it.TrainConfig(**SMALL, loss="focal", focal_gamma=0.0), tmp_path / "b",
                    progress=False)
    focal = it.train(small_pairs, it.TrainConfig(**SMALL, loss="focal"), tmp_path / "c", progress=False)
    assert zero.log[0]["train_loss"] == pytest.approx(bce.log[0]["train_loss"], rel=1e-5)
    assert focal.log[0]["train_loss"] < bce.log[0]["train_loss"]


def test_bf16_autocast_trains_and_fp16_needs_a_gpu(tmp_path, small_pairs):
    result = it.train(small_pairs, it.TrainConfig(**SMALL, precision="bf16"), tmp_path / "a", progress=False)
    assert result.n_phases == 4 and np.isfinite(result.log[-1]["train_loss"])
    assert it.load_checkpoint(result.last_checkpoint).model.features[0].weight.dtype == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(it.UserError, match="fp16 needs a CUDA GPU"):
            it.train(small_pairs, it.TrainConfig(**SMALL, precision="fp16"), tmp_path / "b", progress=False)
        assert not (tmp_path / "b").exists()
