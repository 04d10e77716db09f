"""Scoring pairs with a trained model, in small batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from itertrain.checkpoint import checkpoint_phase
from itertrain.encoding import encoding_for_channels, pair_features_torch, shift_sequences
from itertrain.errors import UserError
from itertrain.io import PairTable
from itertrain.models import input_channels, input_memory_format

__all__ = ["predict_scores", "resolve_checkpoint", "best_checkpoint_curves", "PREDICT_BATCH"]

PREDICT_BATCH = 512
"""Pairs per forward pass: on CPU ~512 ran 2x faster than 4,096 here, and
memory stays a few MB whatever the table's size."""


@torch.no_grad()
def predict_scores(model: nn.Module, pairs: PairTable, *, batch_size: int = PREDICT_BATCH,
                   device: str | torch.device = "cpu", encoding: str | None = None,
                   score_shift: int = 0) -> np.ndarray:
    """Probability of the positive class for every pair.

    Matrices are built per batch on ``device``; the whole table's matrices
    never exist at once.

    Parameters
    ----------
    encoding : str, optional
        The model's input encoding; by default the one whose channel count
        the model's first convolution takes (``wc`` for a model without one).
    score_shift : int, default 0
        Average the probabilities over the target sites moved by
        ``-score_shift .. score_shift`` positions (test-time augmentation,
        the scoring twin of training with ``augment_shift``).

    Returns
    -------
    numpy.ndarray of float32, shape (len(pairs),)
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    encoding = encoding or encoding_for_channels(input_channels(model))
    codes_a = torch.from_numpy(pairs.codes_a)
    codes_b = torch.from_numpy(pairs.codes_b)
    layout = input_memory_format(model)
    scores = np.empty(len(pairs), dtype=np.float32)
    shifts = range(-score_shift, score_shift + 1)
    for start in range(0, len(pairs), batch_size):
        stop = min(start + batch_size, len(pairs))
        site, mirna = codes_a[start:stop].to(device), codes_b[start:stop].to(device)
        total = torch.zeros(stop - start, device=device)
        for shift in shifts:
            moved = shift_sequences(site, torch.full((stop - start,), shift)) if shift else site
            total += torch.sigmoid(model(pair_features_torch(moved, mirna, encoding, layout)).float())
        scores[start:stop] = (total / len(shifts)).cpu().numpy()
    model.train(was_training)
    return scores


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's best checkpoint (else its last phase's)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"{path}: no such checkpoint or run folder; check the path")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    best = folder / "best.safetensors"
    if best.is_file():
        return best
    phases = [(phase, p) for p in folder.glob("model_*.safetensors")
              if (phase := checkpoint_phase(p)) is not None]
    if not phases:
        raise UserError(f"{path}: holds no checkpoint (model_*.safetensors); is it a run folder?")
    return max(phases)[1]


def best_checkpoint_curves(run_dir: str | Path, device: str = "auto"
                           ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str | None]:
    """Labels and scores of a run's best checkpoint on each of its validation sets.

    Returns
    -------
    curves : dict of name → (labels, scores)
        Empty when the run had no validation set or its files are gone.
    note : str or None
        Why there are no curves, for the user.
    """
    from itertrain.checkpoint import load_checkpoint
    from itertrain.config import TrainConfig, load_config
    from itertrain.io import load_validation_sets
    from itertrain.training import RUN_MARKER, resolve_device

    run_dir = Path(run_dir)
    if not (run_dir / RUN_MARKER).is_file():
        raise UserError(f"{run_dir}: not an itertrain run folder (no {RUN_MARKER})")
    config = TrainConfig.from_dict(load_config(run_dir / RUN_MARKER), source=str(run_dir / RUN_MARKER))
    if not config.val:
        return {}, "the run has no validation set (--val), so the report has no precision-recall or ROC curves"
    try:
        validation = load_validation_sets(config)
    except UserError as err:
        return {}, f"validation data unavailable ({err}); the report has no curves"
    resolved = resolve_device(device)
    checkpoint = load_checkpoint(resolve_checkpoint(run_dir), device=resolved)
    curves = {name: (pairs.labels, checkpoint.scores(pairs, device=resolved)) for name, pairs in validation.items()}
    return curves, None
