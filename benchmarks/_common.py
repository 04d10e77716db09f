"""Helpers shared by the benchmark scripts: timing, result rows, the table, the command line.

Every benchmark reports *rows*: one measured figure, optionally a baseline
measured in the same run, their ratio, and a target. Timing targets are
ratios, never absolute times: the machines these run on differ, and the
development machines are shared (other processes may be running), so every
timing is repeated and the baseline is timed interleaved with the thing it is
compared to, so that both see the same noise.

Nothing here asserts on time: a missed target prints MISS, it is not an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import operator
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

Row = dict[str, Any]

_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}
COLUMNS = ("figure", "measured", "baseline", "ratio", "target", "result")


# ---------------------------------------------------------------------------
# timing

def timings(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    return interleaved({"fn": fn}, repeat, warmup)["fn"]


def interleaved(fns: dict[str, Callable[[], Any]], repeat: int = 3, warmup: int = 1) -> dict[str, list[float]]:
    """Time several functions in turns (A, B, A, B, ...) so that they share the machine's noise."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - start)
    return out


def best(seconds: list[float]) -> float:
    """The fastest run: the least disturbed by other work on the machine."""
    return min(seconds)


def median(seconds: list[float]) -> float:
    return statistics.median(seconds)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch and any BLAS/OpenMP pool on one thread; restore the settings afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # optional: NumPy's own ufuncs are single-threaded anyway
            limits = contextlib.nullcontext()
        else:
            limits = threadpool_limits(limits=1)
        with limits:
            yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------
# rows

def row(figure: str, value: float | None, unit: str, *, baseline: float | None = None,
        baseline_name: str = "", ratio: float | None = None, ratio_unit: str = "x",
        target: tuple[str, str, float] | None = None, status: str | None = None,
        note: str = "") -> Row:
    """One result.

    Parameters
    ----------
    figure : what is measured.
    value, unit : the measurement.
    baseline, baseline_name : the reference measured in the same run (same unit).
    ratio : ``value / baseline`` unless given.
    target : ``("ratio" | "value", ">=" | "<=", threshold)``; PASS/MISS is
        decided on that quantity. Without a target the row is INFO.
    status : force a status (``SKIPPED``, ``ERROR``).
    """
    if ratio is None and value is not None and baseline:
        ratio = value / baseline
    if status is None:
        status = "INFO" if target is None else _judge(target, value, ratio)
    return {"figure": figure, "value": value, "unit": unit, "baseline": baseline,
            "baseline_name": baseline_name, "ratio": ratio, "ratio_unit": ratio_unit,
            "target": list(target) if target else None, "status": status, "note": note}


def _judge(target: tuple[str, str, float], value: float | None, ratio: float | None) -> str:
    on, op, threshold = target
    measured = ratio if on == "ratio" else value
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return "MISS"
    return "PASS" if _OPS[op](measured, threshold) else "MISS"


def skipped(figure: str, why: str) -> Row:
    return row(figure, None, "", status="SKIPPED", note=why)


# ---------------------------------------------------------------------------
# the table

def number(x: float | None) -> str:
    """3 significant digits, thousands separated: 1,230,000 / 45.6 / 0.0123."""
    if x is None:
        return "-"
    if x == 0 or not math.isfinite(x):
        return str(x)
    if abs(x) >= 999.5:
        return f"{round(x, 2 - int(math.floor(math.log10(abs(x))))):,.0f}"
    return f"{x:.3g}"


def _cells(r: Row) -> list[str]:
    measured = "-" if r["value"] is None else f"{number(r['value'])} {r['unit']}".strip()
    baseline = "-"
    if r["baseline"] is not None:
        baseline = f"{number(r['baseline'])} {r['unit']}".strip()
        if r["baseline_name"]:
            baseline += f" ({r['baseline_name']})"
    ratio = "-" if r["ratio"] is None else f"{number(r['ratio'])}{r['ratio_unit']}"
    target = "-"
    if r["target"]:
        on, op, threshold = r["target"]
        suffix = r["ratio_unit"] if on == "ratio" else f" {r['unit']}"
        target = f"{on} {op} {number(threshold)}{suffix}"
    status = r["status"] + (f": {r['note']}" if r["status"] in ("SKIPPED", "ERROR") and r["note"] else "")
    return [r["figure"], measured, baseline, ratio, target, status]


def format_table(rows: list[Row]) -> str:
    """A plain-text table, one line per row, plus the notes of the rows that have one.

    Rows carrying a ``bench`` key (the script they come from) get a first column for it.
    """
    grouped = any("bench" in r for r in rows)
    header = (["bench"] if grouped else []) + list(COLUMNS)
    cells = [header] + [([r.get("bench", "")] if grouped else []) + _cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  [{i}] {r['figure']}: {r['note']}" for i, r in enumerate(rows, 1)
             if r["note"] and r["status"] not in ("SKIPPED", "ERROR")]
    if notes:
        lines += ["", "notes:"] + notes
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# the command line of every script

def script_main(main: Callable[..., list[Row]], add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                description: str | None = None) -> None:
    """Run a benchmark's ``main()``; print its table, or write its rows as JSON (``--json FILE``).

    ``run_all.py`` runs every script in its own process with ``--json`` so
    that one benchmark's memory and thread settings never affect another's.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON instead of printing a table")
    if add_arguments:
        add_arguments(parser)
    args = vars(parser.parse_args())
    json_path = args.pop("json")
    rows = main(**args)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(rows, fh)
    else:
        print(format_table(rows))
    sys.exit(0)
