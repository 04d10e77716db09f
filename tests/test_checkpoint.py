"""Checkpoints reload the same model and never execute code."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import itertrain as it

from conftest import SMALL


@pytest.fixture
def run(tmp_path, small_pairs):
    return it.train(small_pairs, it.TrainConfig(**SMALL), tmp_path / "run", progress=False)


def test_reloaded_checkpoint_predicts_the_same_scores(run, small_pairs):
    loaded = it.load_checkpoint(run.last_checkpoint)
    assert loaded.arch == "arch_00b" and loaded.shape == (50, 20)
    assert loaded.metadata["phase"] == 3 and loaded.metadata["config"]["pos_samples"] == 20
    np.testing.assert_array_equal(it.predict_scores(loaded.model, small_pairs),
                                  it.predict_scores(run.model, small_pairs))


def test_run_folder_resolves_to_its_last_checkpoint(run):
    assert it.resolve_checkpoint(run.run_dir) == run.last_checkpoint


def test_prediction_batch_size_does_not_change_scores(run, small_pairs):
    a = it.predict_scores(run.model, small_pairs, batch_size=7)
    b = it.predict_scores(run.model, small_pairs, batch_size=512)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(Boom()))
    torch_file = tmp_path / "model.pt"
    torch.save({"weight": Boom()}, torch_file)
    for path in (evil, torch_file):
        with pytest.raises(it.UserError, match="not a safetensors checkpoint|never pickles"):
            it.load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_checkpoint_for_another_architecture_or_shape_is_refused(run):
    with pytest.raises(it.UserError, match="trained for architecture 'arch_00b'"):
        it.load_checkpoint(run.last_checkpoint, expect_arch="mirbind")
    with pytest.raises(it.UserError, match="trained for 50x20 matrices, not 40x20"):
        it.load_checkpoint(run.last_checkpoint, expect_shape=(40, 20))
