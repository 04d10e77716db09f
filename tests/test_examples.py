"""The example configurations load, validate, and (with the shared data) fit their pools."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import itertrain as it
from itertrain.io import load_training_pairs, load_validation_sets
from itertrain.training import _validates_after

from conftest import needs_shared_data

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "clash2013.toml"


def _recipe() -> it.TrainConfig:
    return it.TrainConfig.from_dict(it.load_config(RECIPE), source=str(RECIPE))


def test_recipe_is_a_valid_config_selected_on_the_1_1_set():
    config = _recipe()
    assert config.arch == "mirbind_cnn" and config.encoding == "wc+wobble+pairs" and config.precision == "bf16"
    assert config.val[0].startswith("eval_1_1=")  # the selection set: validation data, not a reported set
    assert config.report
    # two passes over the 15,392 positives: 20 phases of 1,539, the second pass recycling them
    assert config.recycle_positives and config.max_iter == 20
    assert 15_392 < config.pos_samples * config.max_iter <= 2 * 15_392
    assert (config.augment_shift, config.score_shift) == (3, 2)
    # validation every 5th phase leaves its time to training; the best is chosen among these phases
    assert [p for p in range(20) if _validates_after(p, 20, config.val_every)] == [4, 9, 14, 19]


@needs_shared_data
def test_recipe_pools_hold_every_phase_and_its_validation_sets_load():
    config = _recipe()
    pairs = load_training_pairs(config)
    assert int(pairs.labels.sum()) == 15_392
    assert int((pairs.labels == 0).sum()) == 15_392 * 31  # the file's negatives + 30 re-paired per positive
    sampler = it.HandPickedBatchSampler.from_config(pairs.labels, config)
    assert sampler.stop_reason is None and sampler.n_phases == 20
    negatives = np.concatenate([sampler.phase(p).negatives for p in range(20)])
    assert negatives.size == 445_993 and np.unique(negatives).size == negatives.size  # never one twice
    sets = load_validation_sets(config)
    assert list(sets) == ["eval_1_1", "eval_1_10", "eval_1_20", "unbiased_1_10"]
    assert [int(s.labels.sum()) for s in sets.values()] == [1000] * 4
    assert [len(s) for s in sets.values()] == [2000, 11000, 21000, 11000]
