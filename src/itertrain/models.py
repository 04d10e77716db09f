"""Model architectures, chosen by name from a registry.

Every model takes a float tensor of pair matrices shaped ``(N, 1, La, Lb)``
and returns one logit per pair, shaped ``(N,)``. Register a new architecture
with :func:`register_model`; a checkpoint records the name and arguments so
that :func:`build_model` can rebuild it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from itertrain.errors import UserError

__all__ = ["MODELS", "register_model", "build_model", "Arch00b"]

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Class or function decorator adding an architecture to :data:`MODELS`.

    The factory is called as ``factory(shape=(La, Lb), dropout=None | float)``.
    """

    def add(factory: ModelFactory) -> ModelFactory:
        MODELS[name] = factory
        return factory

    return add


def build_model(name: str, shape: tuple[int, int] = (50, 20), dropout: float | None = None) -> nn.Module:
    """Instantiate the registered architecture ``name`` for ``shape`` matrices."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise UserError(
            f"unknown architecture {name!r}; choose one of: {', '.join(sorted(MODELS))}"
        ) from None
    return factory(shape=tuple(shape), dropout=dropout)


def _keras_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases, as the notebook's Keras layers had."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


@register_model("arch_00b")
class Arch00b(nn.Module):
    """The notebook's ``arch_00b``: one 3×3 convolution and three dense layers.

    Conv 32 3×3 (same) + ReLU → MaxPool 2 → Dropout 0.2 → Flatten →
    Dense 128 ReLU → Dropout 0.2 → Dense 64 ReLU → Dropout 0.4 →
    Dense 32 ReLU → Dense 1 (a logit; the sigmoid lives in the loss).

    Parameters
    ----------
    shape : (int, int)
        Matrix shape (50, 20 for target site × miRNA).
    dropout : float, optional
        Replaces every dropout rate (0 switches dropout off).
    """

    def __init__(self, shape: tuple[int, int] = (50, 20), dropout: float | None = None):
        super().__init__()
        rates = (0.2, 0.2, 0.4) if dropout is None else (dropout,) * 3
        flat = 32 * (shape[0] // 2) * (shape[1] // 2)
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(rates[0]),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(flat, 128), nn.ReLU(), nn.Dropout(rates[1]),
            nn.Linear(128, 64), nn.ReLU(), nn.Dropout(rates[2]),
            nn.Linear(64, 32), nn.ReLU(),
            nn.Linear(32, 1),
        )
        _keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(-1)
