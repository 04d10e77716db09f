"""The built-in demo: the notebook's schedule on synthetic pairs, then a held-out check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from itertrain.config import TrainConfig
from itertrain.evaluation import score_metrics
from itertrain.io import write_table
from itertrain.predict import predict_scores
from itertrain.synthetic import make_synthetic
from itertrain.training import TrainResult, train

__all__ = ["run_demo", "DemoResult"]

HOLDOUT_POS, HOLDOUT_NEG = 1000, 10000


@dataclass
class DemoResult:
    training: TrainResult
    holdout: dict[str, Any]


def run_demo(config: TrainConfig | None = None, out_dir: str | Path = "demo-run", *,
             synthetic: str = "seed-match", n_pos: int = 5000, n_neg: int = 10000,
             overwrite: bool = False, progress: bool | Callable[[str], None] = True) -> DemoResult:
    """Train on built-in synthetic pools and score a held-out synthetic set (1:10).

    The held-out pairs come from the same generator with another seed, so
    they were never in the pools.
    """
    config = config or TrainConfig()
    shape = tuple(config.shape)
    pools = make_synthetic(synthetic, n_pos, n_neg, shape, seed=config.seed)
    result = train(pools, config, out_dir, overwrite=overwrite, progress=progress)
    holdout = make_synthetic(synthetic, HOLDOUT_POS, HOLDOUT_NEG, shape, seed=config.seed + 1_000_003)
    scores = predict_scores(result.model, holdout, device=next(result.model.parameters()).device)
    metrics = {"set": f"synthetic:{synthetic} held-out", "n_pos": HOLDOUT_POS, "n_neg": HOLDOUT_NEG,
               **score_metrics(holdout.labels, scores)}
    write_table(pd.DataFrame([metrics]).round(4), Path(out_dir) / "holdout_metrics.tsv")
    return DemoResult(result, metrics)
