"""Checkpoints: model weights in safetensors, plus what is needed to rebuild the model.

A checkpoint is one ``.safetensors`` file. Its header holds JSON metadata
(architecture, matrix shape, input encoding, dropout override, phase, the run's
configuration);
its body holds only tensors. Loading parses the header and copies tensors, so
it never executes code from the file, unlike a pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from itertrain.encoding import encoding_channels
from itertrain.errors import UserError
from itertrain.io import atomic_path
from itertrain.models import build_model

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "save_checkpoint", "load_checkpoint", "read_metadata",
           "checkpoint_phase"]

CHECKPOINT_FORMAT = "itertrain-checkpoint/1"
SUFFIX = ".safetensors"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model and its metadata."""

    model: nn.Module
    arch: str
    shape: tuple[int, int]
    encoding: str
    metadata: dict[str, Any]
    path: Path

    @property
    def score_shift(self) -> int:
        """The test-time shifts the model was validated with (0: none)."""
        return int(self.metadata.get("score_shift") or 0)

    def scores(self, pairs, *, device: str | torch.device = "cpu", batch_size: int | None = None) -> np.ndarray:
        """Positive-class probabilities of ``pairs``, scored as in training's validation.

        Uses the checkpoint's encoding and test-time shifts; see
        :func:`itertrain.predict.predict_scores`.
        """
        from itertrain.predict import PREDICT_BATCH, predict_scores

        return predict_scores(self.model, pairs, batch_size=batch_size or PREDICT_BATCH, device=device,
                              encoding=self.encoding, score_shift=self.score_shift)


def save_checkpoint(path: str | Path, model: nn.Module, *, arch: str, shape: tuple[int, int],
                    encoding: str = "wc", dropout: float | None = None, **extra: Any) -> Path:
    """Write ``model``'s weights and rebuild information to ``path`` atomically.

    Parameters
    ----------
    arch : str
        Registry name of the architecture (``"custom"`` for a user module,
        which then has to be passed to :func:`load_checkpoint`).
    encoding : str, default "wc"
        The model's input encoding (a key of :data:`itertrain.encoding.ENCODINGS`).
    extra
        More JSON-serialisable metadata (phase, config, metrics...).
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        path = path.with_name(path.name + SUFFIX)
    meta = {"format": CHECKPOINT_FORMAT, "arch": arch, "shape": list(shape), "encoding": encoding,
            "dropout": dropout, **extra}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"itertrain": json.dumps(meta)})
    return path


def checkpoint_phase(path: str | Path) -> int | None:
    """The phase in a checkpoint's name ``model_<arch>_<phase>.safetensors`` (None for ``best``)."""
    suffix = Path(path).name.removesuffix(SUFFIX).rsplit("_", 1)[-1]
    return int(suffix) if Path(path).name.startswith("model_") and suffix.isdigit() else None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The itertrain metadata of a checkpoint, without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file; check the path")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(
            f"{path}: not a safetensors checkpoint ({str(err).splitlines()[0] if str(err) else 'unreadable'}); "
            "itertrain only loads .safetensors files it wrote, never pickles"
        ) from None
    try:
        meta = json.loads(header["itertrain"])
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise KeyError("format")
    except (KeyError, json.JSONDecodeError, AttributeError):
        raise UserError(f"{path}: a safetensors file but not an itertrain checkpoint (no itertrain metadata)") from None
    return meta


def load_checkpoint(path: str | Path, *, model: nn.Module | None = None,
                    expect_arch: str | None = None, expect_shape: tuple[int, int] | None = None,
                    device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model of a checkpoint and load its weights.

    Parameters
    ----------
    model : torch.nn.Module, optional
        Load into this module instead of rebuilding one from the registry
        (needed for user-supplied architectures).
    expect_arch, expect_shape : optional
        Refuse a checkpoint trained for another architecture or matrix shape.

    Raises
    ------
    UserError
        Not a checkpoint, a mismatch with the expectations, or weights that do
        not fit the architecture.
    """
    path = Path(path)
    meta = read_metadata(path)
    arch, shape = meta["arch"], tuple(meta["shape"])
    encoding = meta.get("encoding", "wc")  # checkpoints from before encodings existed are "wc"
    if expect_arch is not None and arch != expect_arch:
        raise UserError(f"{path}: trained for architecture {arch!r}, not {expect_arch!r}")
    if expect_shape is not None and tuple(expect_shape) != shape:
        raise UserError(f"{path}: trained for {shape[0]}x{shape[1]} matrices, not "
                        f"{expect_shape[0]}x{expect_shape[1]}; use the same --shape as in training")
    if model is None:
        if arch == "custom":
            raise UserError(f"{path}: holds a user-supplied architecture; pass the module as model=")
        model = build_model(arch, shape, meta.get("dropout"), encoding_channels(encoding))
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        state = {key: fh.get_tensor(key) for key in fh.keys()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit architecture {arch!r} ({str(err).splitlines()[0]})") from None
    model.to(device).eval()
    return Checkpoint(model, arch, shape, encoding, meta, path)
