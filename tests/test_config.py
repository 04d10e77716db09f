"""TrainConfig: notebook defaults, validation, TOML round trip."""

from __future__ import annotations

import numpy as np
import pytest

import itertrain as it
from itertrain.config import config_to_toml, load_config


def test_defaults_are_the_notebooks():
    c = it.TrainConfig()
    assert (c.max_iter, c.pos_samples, c.neg_ratio_start, c.neg_ratio_step, c.n_batches) == (25, 100, 1, 0.5, 10)
    assert (c.optimizer, c.arch, c.batching, c.shape) == ("RMSprop", "arch_00b", "handpicked", [50, 20])
    assert c.ratios()[:3] == [1.0, 1.5, 2.0] and len(c.ratios()) == 25
    assert c.phase_counts()[1][:3] == [100, 150, 200] and set(c.phase_counts()[0]) == {100}


def test_explicit_ratios_set_the_phase_count():
    c = it.TrainConfig(neg_ratios=[1, 2, 4])
    assert c.max_iter == 3 and c.phase_counts()[1] == [100, 200, 400]


@pytest.mark.parametrize("change, message", [
    (dict(max_iter=0), "max_iter"),
    (dict(pos_samples=0), "pos_samples"),
    (dict(augment_shift=-1), "augment_shift must be a whole number from 0 to 49"),
    (dict(augment_shift=50), "augment_shift"),
    (dict(neg_ratio_start=0), "ratio of phase 0"),
    (dict(neg_ratio_start=1, neg_ratio_step=-0.5, max_iter=4), "ratio of phase 2"),
    (dict(neg_ratios=[]), "neg_ratios is empty"),
    (dict(lr=-0.1), "lr must be a positive"),
    (dict(pos_samples=5, n_batches=10), "cannot put a positive"),
    (dict(optimizer="adagrad"), "optimizer must be one of"),
    (dict(batching="balanced"), "batching must be one of"),
    (dict(class_weight=[1.0]), "class_weight"),
    (dict(dropout=1.5), "dropout"),
    (dict(shape=[50]), "shape"),
])
def test_impossible_values_are_refused(change, message):
    with pytest.raises(it.UserError, match=message):
        it.TrainConfig(**change)


def test_random_batching_may_have_fewer_positives_than_batches():
    assert it.TrainConfig(pos_samples=5, n_batches=10, batching="random").n_batches == 10


def test_toml_round_trip(tmp_path):
    c = it.TrainConfig(max_iter=7, lr=0.01, class_weight=[1, 3], data=str(tmp_path / "x.tsv"))
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(c, header="test"))
    assert it.TrainConfig.from_dict(load_config(path)) == c


def test_relative_data_paths_follow_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.toml"
    path.write_text('[train]\ndata = "pairs.tsv"\nmax_iter = 3\n')
    values = load_config(path)
    assert values == {"data": str(tmp_path / "sub" / "pairs.tsv"), "max_iter": 3}


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(it.UserError, match="did you mean 'pos_samples'"):
        it.TrainConfig.from_dict({"pos_sample": 3})


def test_bad_toml_is_a_user_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("max_iter = = 3")
    with pytest.raises(it.UserError, match="not valid TOML"):
        load_config(path)


def test_explicit_counts_per_phase():
    c = it.TrainConfig(pos_counts=[10, 20], neg_counts=[30, 0], n_batches=5)
    assert c.max_iter == 2 and c.ratios() == [3.0, 0.0] and c.phase_counts() == ([10, 20], [30, 0])
    with pytest.raises(it.UserError, match="go together"):
        it.TrainConfig(pos_counts=[10])
    with pytest.raises(it.UserError, match="one count per phase"):
        it.TrainConfig(pos_counts=[10, 10], neg_counts=[1])


def test_batch_size_sets_batches_per_phase():
    c = it.TrainConfig(pos_samples=100, neg_ratios=[1, 4, 9], batch_size=50)
    assert c.phase_batches() == [4, 10, 20]
    assert it.TrainConfig(pos_samples=12, neg_ratios=[1, 40], batch_size=10).phase_batches() == [3, 12]
    assert it.TrainConfig(pos_samples=12, neg_ratios=[40], batch_size=10, batching="random").phase_batches() == [50]
    sampler = it.HandPickedBatchSampler.from_config(np.r_[np.ones(300), np.zeros(1400)], c)
    assert [len(sampler.phase(p).batches) for p in range(3)] == [4, 10, 20]


def test_repair_specs_are_read_in_one_place(tmp_path):
    from itertrain.config import parse_repair_spec, resolve_data_path

    assert parse_repair_spec("repair:5") == (5, None)
    assert parse_repair_spec("repair:10:data/eval.tsv") == (10, "data/eval.tsv")
    assert parse_repair_spec("negatives.tsv") is None
    for bad in ("repair:x", "repair:0", "repair:", "repair:-2:eval.tsv"):
        with pytest.raises(it.UserError, match=r"write K as a whole number >= 1"):
            parse_repair_spec(bad, "val")
    with pytest.raises(it.UserError, match=r"negatives='repair:3:eval.tsv'.*write repair:K"):
        it.TrainConfig(negatives="repair:3:eval.tsv")
    # the file of a bias-free set is made absolute; the K and the name stay
    assert resolve_data_path("ub=repair:3:eval.tsv", tmp_path, "val") == f"ub=repair:3:{tmp_path / 'eval.tsv'}"
    assert resolve_data_path("repair:4", tmp_path, "negatives") == "repair:4"
    with pytest.raises(it.UserError, match=r"config: val='repair:k:eval.tsv'"):
        resolve_data_path("repair:k:eval.tsv", tmp_path, "val")
