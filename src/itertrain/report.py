"""Figures and a self-contained HTML page for a run folder.

:func:`write_report` reads what :func:`itertrain.train` wrote and adds::

    figures/training.png    training loss and negative ratio per phase
    figures/metrics.png     validation metrics per phase (when the log has any)
    figures/curves.png      precision-recall and ROC curves (when scores are given)
    report.html             the figures (embedded), the log and config.toml

Metric columns are found by name: any log column that is a name of
:data:`itertrain.evaluation.METRIC_NAMES` or ends with ``_<name>`` (e.g.
``val0_average_precision``); the part before is the validation set's label.

Figures are drawn with Matplotlib's Agg canvas directly (no pyplot), so
writing a report changes no global backend and needs no display.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from itertrain.errors import UserError
from itertrain.evaluation import METRIC_NAMES, average_precision, precision_recall_curve, roc_auc, roc_curve
from itertrain.io import atomic_path, atomic_write_text

__all__ = ["write_report", "read_log", "metric_columns", "precision_recall_curve", "roc_curve",
           "REPORT_FILE", "FIGURES_DIR"]

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
LOG_FILE = "training_log.tsv"
BATCH_FILE = "batches.tsv"
CONFIG_FILE = "config.toml"
SUMMARY_FILE = "summary.json"
_FIGURE_NAMES = ("training", "metrics", "curves")
_DPI = 100

Curves = Mapping[str, tuple[Any, Any]]


# ---------------------------------------------------------------------------
# reading the run folder

def read_log(run_dir: str | Path) -> pd.DataFrame:
    """The run's ``training_log.tsv``, one row per phase, numbers parsed.

    Raises
    ------
    UserError
        When the folder has no log or the log has no phase yet.
    """
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        raise UserError(f"{path}: no such file; give the folder of a training run (made by itertrain train)")
    try:
        log = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable training log ({str(err).strip().splitlines()[0]})") from None
    if len(log) == 0:
        raise UserError(f"{path}: no phase has finished yet; write the report after the first phase")
    if "iteration" not in log.columns:
        raise UserError(f"{path}: no 'iteration' column; is this an itertrain training log?")
    return log


def metric_columns(columns) -> dict[str, dict[str, str]]:
    """Metric columns grouped by metric: ``{metric: {set label: column}}``.

    A column counts when it is a metric name or ends with ``_<metric name>``;
    the longest matching name wins, so ``val0_average_precision`` is average
    precision of ``val0``, not precision of ``val0_average``.
    """
    by_length = sorted(METRIC_NAMES, key=len, reverse=True)
    found: dict[str, dict[str, str]] = {}
    for column in map(str, columns):
        for metric in by_length:
            if column == metric or column.endswith("_" + metric):
                label = column[: -len(metric)].rstrip("_") or "validation"
                found.setdefault(metric, {})[label] = column
                break
    return {m: found[m] for m in METRIC_NAMES if m in found}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _read_batches(run_dir: Path) -> pd.DataFrame | None:
    try:
        batches = pd.read_csv(run_dir / BATCH_FILE, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    return batches if {"iteration", "batch", "loss"} <= set(batches.columns) else None


# ---------------------------------------------------------------------------
# figures

def _new_figure(width: float, height: float):
    """A Figure on an Agg canvas: no pyplot, no global state, no display."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("the report needs Matplotlib; install it with: pip install matplotlib") from None
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _integer_phases(*axes) -> None:
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI)


def _training_figure(log: pd.DataFrame, batches: pd.DataFrame | None):
    figure = _new_figure(8, 6)
    loss_ax, ratio_ax = figure.subplots(2, 1, sharex=True)
    phase = log["iteration"].to_numpy()
    if batches is not None and len(batches):
        # batches spread across their phase so the within-phase spread is visible
        per_phase = batches.groupby("iteration")["batch"].transform("max") + 1
        x = batches["iteration"] + (batches["batch"] + 0.5) / per_phase - 0.5
        loss_ax.scatter(x, batches["loss"], s=6, color="0.7", label="mini-batch", zorder=1)
    loss_ax.plot(phase, log["train_loss"], marker="o", color="C0", label="phase mean", zorder=2)
    loss_ax.set_ylabel("training loss")
    loss_ax.legend(loc="best")
    loss_ax.set_title("Training loss per phase")
    ratio_ax.plot(phase, log["neg_ratio"], marker="o", color="C1")
    ratio_ax.set_ylabel("negative : positive ratio")
    ratio_ax.set_xlabel("phase")
    ratio_ax.set_title("Negative ratio per phase")
    _integer_phases(loss_ax, ratio_ax)
    return figure


def _metrics_figure(log: pd.DataFrame, metrics: dict[str, dict[str, str]]):
    n = len(metrics)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    figure = _new_figure(4.5 * cols, 3.2 * rows)
    axes = np.atleast_1d(figure.subplots(rows, cols, sharex=True, squeeze=False)).ravel()
    phase = log["iteration"].to_numpy()
    for ax, (metric, sets) in zip(axes, metrics.items()):
        for label, column in sets.items():
            values = pd.to_numeric(log[column], errors="coerce").to_numpy()
            scored = np.isfinite(values)  # phases skipped by val_every have no value; join the scored ones
            ax.plot(phase[scored], values[scored], marker="o", label=label)
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("phase")
        ax.legend(loc="best", fontsize="small")
        _integer_phases(ax)
    for ax in axes[n:]:
        ax.set_visible(False)
    return figure


def _curves_figure(curves: Curves):
    figure = _new_figure(10, 4.5)
    pr_ax, roc_ax = figure.subplots(1, 2)
    for i, (name, (labels, scores)) in enumerate(curves.items()):
        color = f"C{i % 10}"
        precision, recall = precision_recall_curve(labels, scores)
        if precision.size:
            pr_ax.step(recall, precision, where="post", color=color,
                       label=f"{name} (AP {average_precision(labels, scores):.3f})")
            prevalence = float(np.mean(np.asarray(labels, dtype=float)))
            pr_ax.axhline(prevalence, color=color, linestyle=":", linewidth=1)
        fpr, tpr = roc_curve(labels, scores)
        if fpr.size:
            roc_ax.plot(fpr, tpr, color=color, label=f"{name} (AUC {roc_auc(labels, scores):.3f})")
    roc_ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (dotted: chance)",
              xlim=(0, 1), ylim=(0, 1.02))
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    for ax in (pr_ax, roc_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right" if ax is roc_ax else "upper right", fontsize="small")
    return figure


def _check_curves(curves: Curves) -> None:
    for name, pair in curves.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise UserError(f"curves[{name!r}]: give a (labels, scores) pair")
        n_labels, n_scores = np.size(pair[0]), np.size(pair[1])
        if n_labels != n_scores:
            raise UserError(f"curves[{name!r}]: {n_labels} labels but {n_scores} scores; give one score per label")


# ---------------------------------------------------------------------------
# HTML

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figure { margin: 1em 0; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.scroll { overflow-x: auto; }
"""

_CAPTIONS = {
    "training": "Training loss (phase mean; grey: mini-batches) and negative ratio per phase",
    "metrics": "Validation metrics per phase",
    "curves": "Precision-recall and ROC curves",
}


def _img(png: bytes, name: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    caption = html.escape(_CAPTIONS[name])
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _summary_html(run_dir: Path) -> str:
    text = _read_text(run_dir / SUMMARY_FILE)
    try:
        summary = json.loads(text) if text else None
    except json.JSONDecodeError:
        summary = None
    if not isinstance(summary, dict):
        return "<p>No summary.json (the run may still be going).</p>"
    return _html_list(summary)


def _html_list(mapping: dict) -> str:
    """A nested <ul> of a JSON object; numbers rounded for reading."""
    def show(value) -> str:
        if isinstance(value, dict):
            return _html_list(value)
        if isinstance(value, float):
            return html.escape(_number(value))
        if isinstance(value, list):
            return html.escape(", ".join(map(str, value)))
        return html.escape(str(value))
    items = "".join(f"<li>{html.escape(str(k))}: {show(v)}</li>" for k, v in mapping.items())
    return f"<ul>{items}</ul>"


def _number(value: float) -> str:
    return f"{value:.4g}"


def _page(run_dir: Path, figures: dict[str, bytes], log: pd.DataFrame) -> str:
    title = f"itertrain run {run_dir.resolve().name}"
    config = _read_text(run_dir / CONFIG_FILE)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
        f"<h1>{html.escape(title)}</h1>", _summary_html(run_dir),
        "<h2>Figures</h2>", *(_img(png, name) for name, png in figures.items()),
        "<h2>Training log</h2>",
        f'<div class="scroll">{log.to_html(index=False, na_rep="", float_format=_number)}</div>',
        f"<h2>Configuration ({CONFIG_FILE})</h2>",
        f"<pre>{html.escape(config)}</pre>" if config is not None else f"<p>No {CONFIG_FILE} in the run folder.</p>",
        "</body>", "</html>",
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------

def write_report(run_dir: str | Path, curves: Curves | None = None) -> Path:
    """Write the figures and ``report.html`` of a run folder.

    Parameters
    ----------
    run_dir : path
        A folder written by :func:`itertrain.train` (it needs ``training_log.tsv``).
    curves : mapping of str to (labels, scores), optional
        Per validation set, its 0/1 labels and the model's scores: draws the
        precision-recall and ROC curves.

    Returns
    -------
    pathlib.Path
        The HTML page. Figures of a previous report that this one does not
        draw (e.g. curves) are removed, so the folder matches the page.
    """
    run_dir = Path(run_dir)
    log = read_log(run_dir)
    if curves:
        _check_curves(curves)
    figures_dir = run_dir / FIGURES_DIR
    try:
        figures_dir.mkdir(exist_ok=True)
    except OSError as err:
        raise UserError(f"{figures_dir}: cannot create the figures folder ({err.strerror})") from None

    drawn = {"training": _training_figure(log, _read_batches(run_dir))}
    metrics = {m: {k: c for k, c in sets.items() if pd.to_numeric(log[c], errors="coerce").notna().any()}
               for m, sets in metric_columns(log.columns).items()}
    metrics = {m: sets for m, sets in metrics.items() if sets}
    if metrics:
        drawn["metrics"] = _metrics_figure(log, metrics)
    if curves:
        drawn["curves"] = _curves_figure(curves)

    pngs = {}
    for name in _FIGURE_NAMES:
        path = figures_dir / f"{name}.png"
        if name in drawn:
            _save(drawn[name], path)
            pngs[name] = path.read_bytes()
        else:
            path.unlink(missing_ok=True)
    page = run_dir / REPORT_FILE
    atomic_write_text(page, _page(run_dir, pngs, log))
    return page
