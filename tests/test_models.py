"""Every registered architecture: builds for several shapes, gives one logit per pair, trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import itertrain as it
from itertrain.models import MODELS, build_model

SHAPES = [(50, 20), (40, 22)]
NAMES = sorted(MODELS)


def _batch(shape: tuple[int, int], n: int = 6, seed: int = 0) -> torch.Tensor:
    """Random 0/1 pair matrices, about a quarter of the cells set (as Watson–Crick matrices)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, *shape, generator=gen) < 0.25).float()


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_the_expected_architectures_are_registered():
    assert {"arch_00b", "mirbind_cnn", "resnet_small"} <= set(MODELS)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_one_logit_per_pair(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape=shape)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        out = model(_batch(shape))
        assert out.shape == (6,), f"{name} {shape} in {mode} mode ({_n_params(model)} parameters): {out.shape}"
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all(), f"{name} {shape} ({_n_params(model)} parameters) gave {out}"


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    shape = (50, 20)
    model = build_model(name, shape=shape, dropout=0.0).train()
    x = _batch(shape, n=8)
    y = torch.tensor([1.0, 0.0] * 4)
    loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not missing and not bad, (
        f"{name} ({_n_params(model)} parameters): no gradient for {missing}, non-finite for {bad}")
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_without_dropout(name):
    """dropout=0: train-mode outputs repeat (models without batch norm); eval-mode outputs always do."""
    torch.manual_seed(0)
    model = build_model(name, dropout=0.0)
    x = _batch((50, 20), n=8)
    mode = "eval" if _has_batchnorm(model) else "train"
    getattr(model, mode)()
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first, second), f"{name} in {mode} mode ({_n_params(model)} parameters)"


@pytest.mark.parametrize("name", NAMES)
def test_dropout_override_sets_every_rate(name):
    for rate in (0.0, 0.5):
        model = build_model(name, dropout=rate)
        rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
        assert rates and all(r == rate for r in rates), f"{name}: dropout={rate} gave rates {rates}"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_weights(name):
    torch.manual_seed(1)
    a = build_model(name)
    torch.manual_seed(1)
    b = build_model(name)
    for (key, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), f"{name}: {key} differs between two builds with the same seed"


def test_mirbind_cnn_pooling_floors_odd_sizes():
    model = build_model("mirbind_cnn", shape=(50, 20))
    assert model.features(_batch((50, 20))).shape == (6, 128 * 6 * 2)


def test_mirbind_cnn_refuses_too_small_matrices():
    with pytest.raises(it.UserError, match="8x8"):
        build_model("mirbind_cnn", shape=(6, 20))


def test_unknown_architecture_lists_the_names():
    with pytest.raises(it.UserError) as err:
        build_model("no_such_arch")
    message = str(err.value)
    assert "no_such_arch" in message
    for name in NAMES:
        assert name in message


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("encoding", ["wc+wobble", "wc+wobble+gc", "wc+wobble+pairs", "wc+wobble+bases"])
def test_every_architecture_takes_the_channels_of_an_encoding(name, encoding):
    from itertrain.models import input_channels

    channels = it.ENCODINGS[encoding]
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels).eval()
    assert input_channels(model) == channels
    x = torch.rand(4, channels, 50, 20).round()
    assert model(x).shape == (4,)
    with pytest.raises(RuntimeError):  # a one-channel input does not fit
        model(_batch((50, 20), n=4))


def test_factories_without_in_channels_still_build_for_one_channel():
    @it.register_model("_legacy_test_arch")
    def legacy(shape, dropout):
        return nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1], 1), nn.Flatten(0))

    try:
        assert build_model("_legacy_test_arch")(_batch((50, 20), n=3)).shape == (3,)
    finally:
        del MODELS["_legacy_test_arch"]


@pytest.mark.parametrize("name", NAMES)
def test_built_models_are_channels_last_and_score_like_the_default_layout(name):
    from itertrain.models import input_memory_format

    torch.manual_seed(0)
    model = build_model(name, in_channels=2).eval()
    assert input_memory_format(model) == torch.channels_last
    plain = build_model(name, in_channels=2).to(memory_format=torch.contiguous_format).eval()
    plain.load_state_dict(model.state_dict())
    assert input_memory_format(plain) == torch.contiguous_format
    pairs = it.make_synthetic("seed-match", 40, 40, seed=4)
    np.testing.assert_allclose(it.predict_scores(model, pairs, encoding="wc+wobble"),
                               it.predict_scores(plain, pairs, encoding="wc+wobble"), rtol=1e-4, atol=1e-6)
