"""Invariants of pools, schedule and hand-picked batches (property-based)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

import itertrain as it


@st.composite
def setups(draw):
    n_pos = draw(st.integers(1, 300))
    n_neg = draw(st.integers(0, 900))
    n_batches = draw(st.integers(1, 12))
    pos_samples = draw(st.integers(n_batches, max(n_batches, 40)))
    ratios = draw(st.lists(st.floats(0.05, 6, allow_nan=False), min_size=1, max_size=12))
    seed = draw(st.integers(0, 2**16))
    labels = np.r_[np.ones(n_pos, np.int8), np.zeros(n_neg, np.int8)]
    labels = np.random.default_rng(seed).permutation(labels)
    return labels, dict(pos_samples=pos_samples, neg_ratios=ratios, n_batches=n_batches, seed=seed)


def expected_phases(labels, pos_samples, neg_ratios, **_):
    """How many phases the pools can supply, by direct counting."""
    pos_left, neg_left = int(labels.sum()), int((labels == 0).sum())
    for p, ratio in enumerate(neg_ratios):
        need_neg = int(ratio * pos_samples)
        if pos_samples > pos_left or need_neg > neg_left:
            return p
        pos_left -= pos_samples
        neg_left -= need_neg
    return len(neg_ratios)


def build(labels, **kw):
    try:
        return it.HandPickedBatchSampler(labels, **kw)
    except it.UserError:
        assert expected_phases(labels, **kw) == 0
        return None


@settings(max_examples=150, deadline=None)
@given(setups())
def test_handpicked_invariants(setup):
    labels, kw = setup
    sampler = build(labels, **kw)
    assume(sampler is not None)
    assert sampler.n_phases == expected_phases(labels, **kw)
    assert (sampler.stop_reason is None) == (sampler.n_phases == len(kw["neg_ratios"]))
    seen = []
    for phase in sampler.phases():
        # counts follow the schedule
        assert len(phase.positives) == kw["pos_samples"]
        assert len(phase.negatives) == int(kw["neg_ratios"][phase.index] * kw["pos_samples"])
        assert labels[phase.positives].all() and not labels[phase.negatives].any()
        # the batches are exactly the phase's draws, each batch holds a positive
        in_batches = np.concatenate(phase.batches)
        assert sorted(in_batches) == sorted(np.r_[phase.positives, phase.negatives])
        assert all(labels[b].sum() >= 1 for b in phase.batches)
        sizes = [len(b) for b in phase.batches]
        assert len(sizes) == kw["n_batches"] and max(sizes) - min(sizes) <= 2  # as even as possible
        seen.append(in_batches)
    seen = np.concatenate(seen) if seen else np.array([], int)
    assert len(np.unique(seen)) == len(seen), "a sample was reused across phases"
    assert len(sampler) == sum(len(p.batches) for p in sampler.phases())


@settings(max_examples=60, deadline=None)
@given(setups())
def test_random_batching_uses_same_subset_and_sizes(setup):
    labels, kw = setup
    hand = build(labels, **kw)
    assume(hand is not None)
    rand = it.HandPickedBatchSampler(labels, batching="random", **kw)
    for p in range(hand.n_phases):
        a, b = hand.phase(p), rand.phase(p)
        np.testing.assert_array_equal(a.positives, b.positives)
        np.testing.assert_array_equal(a.negatives, b.negatives)
        assert sorted(map(len, a.batches)) == sorted(map(len, b.batches))
        assert sorted(np.concatenate(a.batches)) == sorted(np.concatenate(b.batches))


def test_notebook_demo_pools_run_dry_at_phase_18():
    labels = np.r_[np.ones(5000), np.zeros(10000)]
    sampler = it.HandPickedBatchSampler(labels)  # the notebook's defaults
    assert sampler.n_phases == 18
    assert "phase 18 needs 1000 negatives" in sampler.stop_reason
    assert "negative pool" in sampler.stop_reason


def test_positive_pool_running_dry_is_named():
    sampler = it.HandPickedBatchSampler(np.r_[np.ones(250), np.zeros(10**4)], pos_samples=100, max_iter=5)
    assert sampler.n_phases == 2 and "positive pool" in sampler.stop_reason


def test_rejects_batches_that_cannot_hold_a_positive():
    with pytest.raises(it.UserError, match="cannot put a positive in each"):
        it.HandPickedBatchSampler(np.r_[np.ones(100), np.zeros(100)], pos_samples=5, n_batches=10)


def test_rejects_pools_too_small_for_one_phase():
    with pytest.raises(it.UserError, match="first phase"):
        it.HandPickedBatchSampler(np.r_[np.ones(50), np.zeros(500)], pos_samples=100)


def test_same_seed_same_batches_and_phases_are_independent():
    labels = np.random.default_rng(0).integers(0, 2, 5000)
    a = it.HandPickedBatchSampler(labels, seed=11, max_iter=5)
    b = it.HandPickedBatchSampler(labels, seed=11, max_iter=5)
    c = it.HandPickedBatchSampler(labels, seed=12, max_iter=5)
    assert list(a) == list(b)
    assert list(a) != list(c)
    # a phase can be rebuilt alone (resume, several processes) and equals the sequential one
    later = [x.tolist() for x in b.phase(3).batches]
    assert later == [x.tolist() for x in list(a.phases())[3].batches]


def test_works_as_a_dataloader_batch_sampler():
    labels = torch.tensor([1] * 60 + [0] * 200)
    dataset = TensorDataset(torch.arange(260), labels)
    sampler = it.HandPickedBatchSampler(labels.numpy(), pos_samples=20, n_batches=4, max_iter=3)
    batches = list(DataLoader(dataset, batch_sampler=sampler))
    assert len(batches) == len(sampler) == 12
    for ids, y in batches:
        assert y.sum() >= 1
        assert (labels[ids] == y).all()
    all_ids = torch.cat([ids for ids, _ in batches])
    assert len(all_ids.unique()) == len(all_ids)


def test_ratio_schedule():
    assert it.ratio_schedule(4, 1, 0.5) == [1, 1.5, 2, 2.5]


def test_explicit_counts_and_recycled_positives():
    labels = np.r_[np.ones(30), np.zeros(400)]
    sampler = it.HandPickedBatchSampler(labels, pos_counts=[20, 20, 20], neg_counts=[20, 50, 0], n_batches=4,
                                        recycle_positives=True)
    assert sampler.n_phases == 3 and sampler.stop_reason is None
    phases = list(sampler.phases())
    assert [len(p.positives) for p in phases] == [20, 20, 20]
    assert [len(p.negatives) for p in phases] == [20, 50, 0]
    drawn = np.concatenate([p.positives for p in phases])
    # the first 30 draws are one pass over the pool, the next 30 another (fresh order)
    assert sorted(drawn[:30]) == sorted(drawn[30:]) == list(range(30))
    assert not np.array_equal(drawn[:30], drawn[30:])
    assert all(labels[b].sum() >= 1 for p in phases for b in p.batches)
    negs = np.concatenate([p.negatives for p in phases])
    assert len(np.unique(negs)) == len(negs)
    without = it.HandPickedBatchSampler(labels, pos_counts=[20, 20], neg_counts=[20, 20], n_batches=4)
    assert without.n_phases == 1 and "positive pool" in without.stop_reason
