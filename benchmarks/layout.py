"""Model speed by memory layout and precision: samples/s of training steps and of scoring.

For each architecture, three set-ups are timed in turns (so that they share the
machine's noise), on the same random batch of 512 two-channel inputs
(``wc+wobble``):

* ``contiguous fp32``: the default PyTorch layout; the baseline;
* ``channels-last fp32``: what :func:`itertrain.build_model` returns;
* ``channels-last bf16``: plus ``--precision bf16`` (autocast).

A training step is forward, loss, backward and an Adam step; scoring is a
forward pass under ``torch.no_grad()``. Threads: torch's default unless
``--threads`` says otherwise. Targets: the channels-last layout must not be
slower than the contiguous one for ``mirbind_cnn``, the recipe's model.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from _common import best, interleaved, row, script_main
from itertrain.models import build_model

BATCH = 512
CHANNELS = 2
ARCHS = ("arch_00b", "mirbind_cnn")
SETUPS = {"contiguous fp32": (torch.contiguous_format, None),
          "channels-last fp32": (torch.channels_last, None),
          "channels-last bf16": (torch.channels_last, torch.bfloat16)}


def _steps(arch: str, layout: torch.memory_format, dtype: torch.dtype | None):
    """A training step and a scoring call of ``arch`` in ``layout`` and ``dtype``."""
    torch.manual_seed(0)
    model = build_model(arch, in_channels=CHANNELS).to(memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    x = (torch.rand(BATCH, CHANNELS, 50, 20) < 0.2).float().contiguous(memory_format=layout)
    y = (torch.rand(BATCH) < 0.3).float()

    def autocast():
        return torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def train_step():
        model.train()
        with autocast():
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def score():
        model.eval()
        with autocast():
            model(x)

    return train_step, score


def main(threads: int | None = None, repeat: int = 5) -> list:
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)
    rows = []
    n_threads = torch.get_num_threads()
    threads_label = f"{n_threads} thread{'s' if n_threads > 1 else ''}"
    for arch in ARCHS:
        steps = {name: _steps(arch, *setup) for name, setup in SETUPS.items()}
        for kind, which in (("train", 0), ("score", 1)):
            seconds = interleaved({name: fns[which] for name, fns in steps.items()}, repeat=repeat, warmup=2)
            speed = {name: BATCH / best(s) for name, s in seconds.items()}
            base = speed["contiguous fp32"]
            for name in ("channels-last fp32", "channels-last bf16"):
                target = ("ratio", ">=", 1.0) if arch == "mirbind_cnn" and name == "channels-last fp32" else None
                rows.append(row(f"{arch} {kind}, {name} ({threads_label})", speed[name],
                                "samples/s", baseline=base, baseline_name="contiguous fp32", target=target))
    return rows


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions per set-up (best is kept)")


if __name__ == "__main__":
    script_main(main, _arguments, description=__doc__.splitlines()[0])
