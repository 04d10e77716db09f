"""Model architectures, chosen by name from a registry.

Every model takes a float tensor of pair matrices shaped ``(N, C, La, Lb)``
(``C`` channels: 1 for the notebook's Watson–Crick matrix, more for the
richer encodings of :data:`itertrain.encoding.ENCODINGS`) and returns one
logit per pair, shaped ``(N,)``. Register a new architecture
with :func:`register_model`; a checkpoint records the name and arguments so
that :func:`build_model` can rebuild it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from itertrain.errors import UserError

__all__ = ["MODELS", "register_model", "build_model", "input_channels", "input_memory_format",
           "Arch00b", "MirBindCNN", "ResNetSmall"]

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Class or function decorator adding an architecture to :data:`MODELS`.

    The factory is called as ``factory(shape=(La, Lb), dropout=None | float)``,
    plus ``in_channels=C`` when the input has more than one channel.
    """

    def add(factory: ModelFactory) -> ModelFactory:
        MODELS[name] = factory
        return factory

    return add


def build_model(name: str, shape: tuple[int, int] = (50, 20), dropout: float | None = None,
                in_channels: int = 1) -> nn.Module:
    """Instantiate the registered architecture ``name`` for ``shape`` matrices of ``in_channels`` channels."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise UserError(
            f"unknown architecture {name!r}; choose one of: {', '.join(sorted(MODELS))}"
        ) from None
    if in_channels == 1:  # factories registered before channels existed keep working
        model = factory(shape=tuple(shape), dropout=dropout)
    else:
        model = factory(shape=tuple(shape), dropout=dropout, in_channels=in_channels)
    # Channels-last convolutions measured 1.5x faster to train and 2x faster to
    # score on this project's 2-core CPU (mirbind_cnn, fp32; 1.35x / 3x in bf16).
    return model.to(memory_format=torch.channels_last)


def _first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def input_channels(model: nn.Module) -> int:
    """Channels the model's first convolution takes (1 when it has none)."""
    first = _first_conv(model)
    return 1 if first is None else first.in_channels


def input_memory_format(model: nn.Module) -> torch.memory_format:
    """The layout to give the model's input: its first convolution's (channels-last for built models)."""
    first = _first_conv(model)
    if first is not None and first.weight.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


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
    in_channels : int, default 1
        Input channels (see :data:`itertrain.encoding.ENCODINGS`).
    """

    def __init__(self, shape: tuple[int, int] = (50, 20), dropout: float | None = None, in_channels: int = 1):
        super().__init__()
        rates = (0.2, 0.2, 0.4) if dropout is None else (dropout,) * 3
        flat = 32 * (shape[0] // 2) * (shape[1] // 2)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
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


def _rates(default: tuple[float, ...], dropout: float | None) -> tuple[float, ...]:
    """The architecture's own dropout rates, or ``dropout`` in every place."""
    return default if dropout is None else (float(dropout),) * len(default)


@register_model("mirbind_cnn")
class MirBindCNN(nn.Module):
    """The miRBind CNN (Klimentová et al. 2022): three convolution blocks and three dense blocks.

    3 × [Conv 3×3 (same) with 32 / 64 / 128 filters → LeakyReLU 0.3 →
    BatchNorm2d → MaxPool 2 → Dropout 0.25] → Flatten →
    3 × [Dense 128 / 64 / 32 → LeakyReLU 0.3 → BatchNorm1d → Dropout 0.25] →
    Dense 1 (a logit; the sigmoid lives in the loss).

    The pools floor odd sizes, so a 50×20 matrix becomes 25×10, 12×5 and
    6×2 (1,536 features after flattening). LeakyReLU's slope is Keras' default
    (0.3), as miRBind's Keras model had; batch normalization uses PyTorch's
    defaults (momentum 0.1, eps 1e-5).

    Parameters
    ----------
    shape : (int, int)
        Matrix shape (50, 20 for target site × miRNA); each side must be >= 8
        so that three poolings leave at least one cell.
    dropout : float, optional
        Replaces every dropout rate (0 switches dropout off).
    in_channels : int, default 1
        Input channels (see :data:`itertrain.encoding.ENCODINGS`).
    """

    FILTERS = (32, 64, 128)
    UNITS = (128, 64, 32)

    def __init__(self, shape: tuple[int, int] = (50, 20), dropout: float | None = None, in_channels: int = 1):
        super().__init__()
        if min(shape) < 8:
            raise UserError(f"mirbind_cnn needs matrices of at least 8x8, got {shape[0]}x{shape[1]}")
        rates = _rates((0.25,) * 6, dropout)
        layers: list[nn.Module] = []
        rows, cols, channels = shape[0], shape[1], in_channels
        for filters, rate in zip(self.FILTERS, rates[:3]):
            layers += [
                nn.Conv2d(channels, filters, kernel_size=3, padding=1),
                nn.LeakyReLU(0.3),
                nn.BatchNorm2d(filters),
                nn.MaxPool2d(2),
                nn.Dropout(rate),
            ]
            rows, cols, channels = rows // 2, cols // 2, filters
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = []
        width = channels * rows * cols
        for units, rate in zip(self.UNITS, rates[3:]):
            head += [nn.Linear(width, units), nn.LeakyReLU(0.3), nn.BatchNorm1d(units), nn.Dropout(rate)]
            width = units
        head.append(nn.Linear(width, 1))
        self.head = nn.Sequential(*head)
        _keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(-1)


class _BasicBlock(nn.Module):
    """conv 3×3 → BN → ReLU → conv 3×3 → BN, plus the input (1×1 conv + BN when the shape changes) → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


@register_model("resnet_small")
class ResNetSmall(nn.Module):
    """A small residual network (ResNet-14 style, ~0.7 M parameters).

    Stem: Conv 3×3 32 (same) → BN → ReLU. Three stages of two basic blocks
    (conv 3×3 → BN → ReLU → conv 3×3 → BN, added to the input, → ReLU) with
    32 / 64 / 128 channels; the first block of stages 2 and 3 has stride 2 and
    a 1×1 convolution + BN on its skip path. Then global average pooling →
    Dropout 0.3 → Dense 1 (a logit).

    A 50×20 matrix is 50×20, 25×10 and 13×5 in the three stages; any shape
    works thanks to the global pooling.

    Parameters
    ----------
    shape : (int, int)
        Matrix shape (50, 20 for target site × miRNA); only recorded.
    dropout : float, optional
        Replaces the dropout rate before the last layer (0 switches it off).
    in_channels : int, default 1
        Input channels (see :data:`itertrain.encoding.ENCODINGS`).
    """

    CHANNELS = (32, 64, 128)
    BLOCKS = 2

    def __init__(self, shape: tuple[int, int] = (50, 20), dropout: float | None = None, in_channels: int = 1):
        super().__init__()
        (rate,) = _rates((0.3,), dropout)
        self.shape = tuple(shape)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, self.CHANNELS[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(self.CHANNELS[0]),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        channels = self.CHANNELS[0]
        for stage, width in enumerate(self.CHANNELS):
            for b in range(self.BLOCKS):
                blocks.append(_BasicBlock(channels, width, stride=2 if stage > 0 and b == 0 else 1))
                channels = width
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(rate), nn.Linear(channels, 1),
        )
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        for block in blocks:  # start each residual branch near identity (zero-init the last BN)
            nn.init.zeros_(block.body[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x))).squeeze(-1)
