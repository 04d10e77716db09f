"""`itertrain compare`: equal budgets, the method's batches, the statistics, resuming, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from itertrain.cli import main
from itertrain.compare import (STRATEGY_KINDS, BudgetWarning, comparison_from_dict, load_comparison,
                               paired_t_test, planned_budget, run_comparison, summarize)
from itertrain.errors import UserError

# tiny: 3 phases with 8 positives in 4 batches, ratios 1, 3, 5; 20x10 matrices
TRAIN = dict(max_iter=3, pos_samples=8, neg_ratio_start=1.0, neg_ratio_step=2.0, n_batches=4,
             shape=[20, 10], device="cpu")
SYNTHETIC = dict(n_pos=200, n_neg=1000, val_pos=40, val_neg=160)


def config_values(strategies=None, **train):
    values = {**TRAIN, **train, "synthetic": dict(SYNTHETIC)}
    if strategies is not None:
        values["strategies"] = strategies
    return values


def toml_text(values: dict) -> str:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = ["[train]"] + [f"{k} = {value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    for name, table in values.items():
        if isinstance(table, dict) and name != "strategies":
            lines += [f"[{name}]"] + [f"{k} = {value(v)}" for k, v in table.items()]
    for name, table in values.get("strategies", {}).items():
        lines += [f"[strategies.{json.dumps(name)}]"] + [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a busy machine: one thread is ~10x faster than an oversubscribed two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    """All six built-in strategies, two seeds, trained once for several tests."""
    out = tmp_path_factory.mktemp("compare") / "six"
    comparison = comparison_from_dict(config_values())
    result = run_comparison(comparison, out, seeds=2, jobs=1, progress=False)
    return comparison, result


def test_every_strategy_sees_the_same_samples_and_steps(six):
    comparison, result = six
    runs = pd.read_csv(result.out_dir / "runs.tsv", sep="\t")
    assert [s.name for s in comparison.strategies] == list(STRATEGY_KINDS)
    assert len(runs) == 6 * 2 and set(runs["strategy"]) == set(STRATEGY_KINDS)
    planned = {planned_budget(s.config) for s in comparison.strategies}
    assert len(planned) == 1
    budget = planned.pop()
    assert (runs["samples_seen"] == budget.samples).all() and (runs["steps"] == budget.steps).all()
    assert (runs["samples_seen"] == (8 * 2 + 8 * 4 + 8 * 6)).all() and (runs["steps"] == 12).all()
    assert runs["budget_ok"].all() and (runs["phases"] == 3).all()
    assert runs["wall_seconds"].gt(0).all()
    for column in ("heldout_average_precision", "heldout_roc_auc"):
        assert runs[column].between(0, 1).all()


def test_the_method_never_has_a_batch_without_positive(six):
    _, result = six
    runs = result.runs.set_index("strategy")
    assert (runs.loc["iterative-handpicked", "batches_without_positive"] == 0).all()
    assert (runs.loc["balanced", "batches_without_positive"] == 0).all()
    # with 3-8 positives spread over 4 random batches, some batches of the fixed-ratio runs get none
    assert runs.loc["fixed-random", "batches_without_positive"].max() > 0
    batches = pd.read_csv(result.out_dir / "runs" / "iterative-handpicked" / "seed0" / "batches.tsv", sep="\t")
    assert (batches["n_pos"] > 0).all()


def test_derived_strategies_keep_each_phase_total(six):
    comparison, _ = six
    totals = {s.name: [p + n for p, n in zip(*s.config.phase_counts())] for s in comparison.strategies}
    assert all(t == [16, 32, 48] for t in totals.values())
    weighted = comparison.strategy("fixed-weighted").config
    assert weighted.class_weight == [1.0, 5.0] and weighted.batching == "random"
    assert comparison.strategy("fixed-random").config.pos_counts == [3, 5, 8]
    balanced = comparison.strategy("balanced").config
    assert balanced.pos_counts == [8, 16, 24] and balanced.recycle_positives
    assert comparison.strategy("focal").config.loss == "focal"


def test_summary_matches_a_direct_computation(six):
    stats = pytest.importorskip("scipy.stats")
    _, result = six
    runs = pd.read_csv(result.out_dir / "runs.tsv", sep="\t")
    summary = pd.read_csv(result.out_dir / "summary.tsv", sep="\t")
    reference = runs[runs["strategy"] == "iterative-handpicked"].set_index("seed")
    checked = 0
    for strategy, group in runs.groupby("strategy"):
        group = group.set_index("seed")
        for measure in ("heldout_average_precision", "heldout_roc_auc", "batches_without_positive"):
            row = summary[(summary["strategy"] == strategy) & (summary["measure"] == measure)].iloc[0]
            values = group[measure].to_numpy()
            assert row["n"] == 2
            assert row["mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert row["sd"] == pytest.approx(values.std(ddof=1), rel=1e-12, abs=1e-15)
            diff = values - reference.loc[group.index, measure].to_numpy()
            assert row["diff_vs_reference"] == pytest.approx(diff.mean(), abs=1e-15)
            if strategy != "iterative-handpicked" and np.std(diff) > 0:
                expected = stats.ttest_rel(values, reference.loc[group.index, measure].to_numpy())
                assert row["t"] == pytest.approx(expected.statistic, rel=1e-9)
                assert row["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
                checked += 1
            else:
                assert math.isnan(row["p_value"])
    assert checked >= 8
    text = (result.out_dir / "summary.md").read_text()
    assert "iterative-handpicked" in text and "with 2 seeds" in text
    header = text.splitlines()[0]
    assert "heldout average precision" in header and "batches without positive" not in header
    assert all((result.out_dir / "figures" / f"{n}.png").stat().st_size > 1000
               for n in ("final_metrics", "metric_vs_phase"))


@pytest.mark.parametrize("n", [2, 3, 5, 10, 40])
def test_paired_t_test_matches_scipy(n):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(n)
    for shift in (0.0, 0.3, 3.0):
        x, y = rng.normal(size=n) + shift, rng.normal(size=n)
        t, p = paired_t_test(x, y)
        expected = stats.ttest_rel(x, y)
        assert t == pytest.approx(expected.statistic, rel=1e-10)
        assert p == pytest.approx(expected.pvalue, rel=1e-8, abs=1e-300)
    assert all(math.isnan(v) for v in paired_t_test([1.0, 2.0], [0.0, 1.0]))  # constant difference
    assert all(math.isnan(v) for v in paired_t_test([1.0], [0.0]))


def test_summary_of_a_hand_made_table():
    runs = pd.DataFrame({"strategy": ["a", "a", "a", "b", "b", "b"], "seed": [0, 1, 2, 0, 1, 2],
                         "v_average_precision": [0.5, 0.6, 0.7, 0.55, 0.7, 0.75]})
    summary = summarize(runs, "a").set_index(["strategy", "measure"])
    b = summary.loc[("b", "v_average_precision")]
    assert b["mean"] == pytest.approx(2 / 3) and b["diff_vs_reference"] == pytest.approx(0.2 / 3)
    d = np.array([0.05, 0.1, 0.05])
    assert b["t"] == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(3)))


def _mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*.safetensors"))}


def test_an_interrupted_comparison_resumes_without_retraining(tmp_path):
    strategies = {"a": {"kind": "iterative-handpicked"}, "b": {"kind": "fixed-random"}}
    comparison = comparison_from_dict(config_values(strategies))
    out = tmp_path / "cmp"

    def stop_in_third_run(line):  # after its second phase
        if line.startswith("a/seed1: phase   2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_comparison(comparison, out, seeds=2, jobs=1, progress=False, phase_progress=stop_in_third_run)
    finished = {name: _mtimes(out / "runs" / name / "seed0") for name in ("a", "b")}
    partial = {p: t for p, t in _mtimes(out / "runs" / "a" / "seed1").items() if p.name != "best.safetensors"}
    assert len(partial) == 2 and not (out / "runs" / "a" / "seed1" / "summary.json").exists()
    assert not (out / "runs" / "b" / "seed1").exists()

    lines = []
    result = run_comparison(comparison, out, seeds=2, jobs=1, progress=lines.append, phase_progress=lines.append)
    assert result.skipped == ["a/seed0", "b/seed0"]
    assert result.trained == ["a/seed1", "b/seed1"]
    assert "[1/2] resuming a/seed1" in lines
    assert not any(line.startswith(("a/seed0", "b/seed0")) for line in lines)
    assert [line for line in lines if line.startswith("a/seed1: phase")] == \
        [line for line in lines if line.startswith("a/seed1: phase   3/")]  # phases 1-2 were not retrained
    for name, before in finished.items():
        assert _mtimes(out / "runs" / name / "seed0") == before
    after = _mtimes(out / "runs" / "a" / "seed1")
    assert {p: t for p, t in after.items() if p in partial} == partial and len(after) == 4
    runs = pd.read_csv(out / "runs.tsv", sep="\t")
    assert len(runs) == 4 and runs["budget_ok"].all()

    again = run_comparison(comparison, out, seeds=2, jobs=1, progress=False)  # all finished: nothing trains
    assert again.trained == [] and len(again.skipped) == 4

    plan = json.loads((out / "plan.json").read_text())  # as if recorded before TrainConfig had `threads`
    for settings in plan["strategies"].values():
        del settings["threads"]
    (out / "plan.json").write_text(json.dumps(plan))
    assert run_comparison(comparison, out, seeds=2, jobs=1, progress=False).trained == []

    changed = comparison_from_dict(config_values({**strategies, "a": {"kind": "iterative-handpicked",
                                                                       "lr": 0.01}}))
    with pytest.raises(UserError, match="strategy 'a' was trained with other settings \\(lr\\)"):
        run_comparison(changed, out, seeds=2, jobs=1, progress=False)


def test_strategies_added_later_and_parallel_workers(tmp_path):
    strategies = {"a": {"kind": "iterative-handpicked"}, "b": {"kind": "iterative-random"}}
    comparison = comparison_from_dict(config_values(strategies))
    out = tmp_path / "cmp"
    first = run_comparison(comparison, out, seeds=1, jobs=1, only=["a"], progress=False)
    assert first.trained == ["a/seed0"] and list(first.runs["strategy"]) == ["a"]
    before = _mtimes(out / "runs" / "a")
    result = run_comparison(comparison, out, seeds=2, jobs=2, progress=False)  # spawned worker processes
    assert sorted(result.trained) == ["a/seed1", "b/seed0", "b/seed1"] and result.skipped == ["a/seed0"]
    assert {p: t for p, t in _mtimes(out / "runs" / "a").items() if p in before} == before
    assert len(result.runs) == 4 and result.runs["budget_ok"].all()


def test_a_pool_that_runs_dry_is_reported(tmp_path):
    # (a) draws 72 negatives, fixed 1:5 draws 80; the pool has 75, so its third phase cannot run
    values = config_values({"a": {"kind": "iterative-handpicked"}, "c": {"kind": "fixed-random"}})
    values["synthetic"]["n_neg"] = 75
    comparison = comparison_from_dict(values)
    with pytest.warns(BudgetWarning, match="c/seed0 will see 48 samples in 8 steps, the reference 96 in 12"):
        result = run_comparison(comparison, tmp_path / "cmp", seeds=1, jobs=1, progress=False)
    runs = result.runs.set_index("strategy")
    assert runs.loc["c", "samples_seen"] == 48 and runs.loc["c", "phases"] == 2
    assert not runs.loc["c", "budget_ok"] and "negative pool" in runs.loc["c", "stop_reason"]
    assert runs.loc["a", "budget_ok"]


@pytest.mark.parametrize("strategies, extra, message", [
    ({"x": {"kind": "fixed-ratio"}}, {}, "unknown kind 'fixed-ratio'"),
    ({"x": {"kind": "balanced", "ratio": 3}}, {}, "takes no ratio"),
    ({"x": {"focal_gama": 1.0}}, {}, "unknown setting 'focal_gama'; did you mean 'focal_gamma'"),
    ({"x": {"kind": "focal", "seed": 3}}, {}, "cannot set its own seed"),
    ({"a": {"kind": "iterative-handpicked"}, "b": {"n_batches": 2}}, {}, "plans 96 samples in 6 steps"),
    ({"a b": {}}, {}, "strategy name may hold only"),
    (None, {"compare": {"reference": "nope"}}, "no strategy named 'nope'"),
    (None, {"compare": {"seeds": 0}}, "seeds must be a whole number >= 1"),
    (None, {"synthetic": {"kind": "noise"}}, "kind must be one of"),
])
def test_bad_configs_exit_2_with_one_line(tmp_path, capsys, strategies, extra, message):
    values = config_values(strategies)
    values.update(extra)
    path = tmp_path / "bad.toml"
    path.write_text(toml_text(values))
    assert main(["compare", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("itertrain: error:") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_data_errors_exit_2(tmp_path, capsys):
    path = tmp_path / "nodata.toml"
    path.write_text(toml_text({k: v for k, v in config_values().items() if k != "synthetic"}))
    assert main(["compare", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "no training data" in capsys.readouterr().err
    values = config_values(data="pairs.tsv")
    path.write_text(toml_text(values))
    assert main(["compare", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "either a [synthetic] table or data files" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    path.write_text(toml_text(config_values()))
    assert main(["compare", "--config", str(path), "--out", str(tmp_path / "busy"), "--seeds", "1"]) == 2
    assert "holds no comparison" in capsys.readouterr().err


def test_cli_end_to_end(tmp_path, capsys):
    path = tmp_path / "cmp.toml"
    path.write_text(toml_text(config_values()))
    out = tmp_path / "out"
    assert main(["compare", "--config", str(path), "--out", str(out), "--seeds", "1", "--jobs", "1",
                 "--strategies", "iterative-handpicked,balanced", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| balanced | 1 |" in printed and "trained 2 run(s), 0 finished before" in printed
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["balanced", "iterative-handpicked"]
    for name in ("runs.tsv", "summary.tsv", "summary.md", "plan.json", "figures/final_metrics.png"):
        assert (out / name).is_file()


def test_example_configs_load():
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    demo = load_comparison(examples / "compare-demo.toml")
    assert [s.kind for s in demo.strategies] == list(STRATEGY_KINDS) and demo.synthetic is not None
    assert len({planned_budget(s.config) for s in demo.strategies}) == 1
    clash = load_comparison(examples / "compare-clash.toml")
    assert len({planned_budget(s.config) for s in clash.strategies}) == 1 and len(clash.base.val) == 2


def test_pools_are_built_once_per_data_setting_and_seed():
    from itertrain import TrainConfig
    from itertrain.compare import SyntheticSource, _Data

    data = _Data(SyntheticSource(n_pos=50, n_neg=400, val_pos=20, val_neg=80))
    base = TrainConfig(pos_samples=10, n_batches=2)
    training_only = base.replace(epochs_per_phase=3, augment_shift=2, score_shift=1, val_every=2, batch_size=8,
                                 encoding="wc+wobble", lr=0.01)
    assert data.pools(training_only) is data.pools(base)  # same data: built once, shared
    assert data.validation(training_only) is data.validation(base)
    other_seed = data.pools(base.replace(seed=1))
    assert other_seed is not data.pools(base)
    assert not np.array_equal(other_seed.codes_a, data.pools(base).codes_a)
