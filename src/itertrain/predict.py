"""Scoring pairs with a trained model, in small batches."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from itertrain.encoding import complement_codes, pair_matrices_torch
from itertrain.errors import UserError
from itertrain.io import PairTable

__all__ = ["predict_scores", "resolve_checkpoint", "PREDICT_BATCH"]

PREDICT_BATCH = 512
"""Pairs per forward pass: on CPU ~512 ran 2x faster than 4,096 here, and
memory stays a few MB whatever the table's size."""

_PHASE = re.compile(r"_(\d+)\.safetensors$")


@torch.no_grad()
def predict_scores(model: nn.Module, pairs: PairTable, *, batch_size: int = PREDICT_BATCH,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Probability of the positive class for every pair.

    Matrices are built per batch on ``device``; the whole table's matrices
    never exist at once.

    Returns
    -------
    numpy.ndarray of float32, shape (len(pairs),)
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    codes_a = torch.from_numpy(pairs.codes_a)
    partners = torch.from_numpy(complement_codes(pairs.codes_b))
    scores = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), batch_size):
        stop = min(start + batch_size, len(pairs))
        x = pair_matrices_torch(codes_a[start:stop].to(device), partners[start:stop].to(device))
        scores[start:stop] = torch.sigmoid(model(x.unsqueeze(1))).float().cpu().numpy()
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
    phases = [(int(m.group(1)), p) for p in folder.glob("model_*.safetensors")
              if (m := _PHASE.search(p.name))]
    if not phases:
        raise UserError(f"{path}: holds no checkpoint (model_*.safetensors); is it a run folder?")
    return max(phases)[1]
