"""Run reports: figures from a real run folder, the self-contained HTML page, the curves."""

from __future__ import annotations

import base64
import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import itertrain
from itertrain.errors import UserError
from itertrain.evaluation import precision_recall_curve, roc_curve
from itertrain.report import FIGURES_DIR, metric_columns, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One real 3-phase run; tests work on copies of it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    config = itertrain.TrainConfig(max_iter=3, pos_samples=50, n_batches=5, device="cpu",
                                   seq_a_col="<site> & \"target\"")  # must come out escaped
    result = itertrain.train(itertrain.make_synthetic("seed-match", 300, 900, seed=0), config, out, progress=False)
    scored = itertrain.make_synthetic("seed-match", 100, 400, seed=1)
    scores = itertrain.predict_scores(result.model, scored)
    return out, {"val 1:4": (scored.labels, scores), "shuffled": (scored.labels, np.random.default_rng(0).random(500))}


@pytest.fixture
def run(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run[0], copy)
    return copy


@pytest.fixture
def curves(trained_run):
    return trained_run[1]


def _add_validation_columns(run_dir: Path) -> None:
    log = pd.read_csv(run_dir / "training_log.tsv", sep="\t")
    log["val0_average_precision"] = [0.5, 0.6, 0.7]
    log["val0_roc_auc"] = [0.6, 0.7, 0.8]
    log["val1_average_precision"] = [0.2, np.nan, 0.3]
    log["val1_mcc"] = np.nan  # never measured: no panel
    log.to_csv(run_dir / "training_log.tsv", sep="\t", index=False)


def _check_png(path: Path) -> tuple[int, int]:
    from PIL import Image
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def _embedded(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in IMG.findall(page)]


def _figures(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / FIGURES_DIR).iterdir())


def test_report_without_curves(run):
    page_path = write_report(run)
    assert page_path == run / "report.html"
    assert _figures(run) == ["training.png"]
    width, height = _check_png(run / FIGURES_DIR / "training.png")
    assert width >= 400 and height >= 300
    page = page_path.read_text(encoding="utf-8")
    assert page.count("<img") == 1
    assert _embedded(page) == [(run / FIGURES_DIR / "training.png").read_bytes()]


def test_report_with_metrics_and_curves(run, curves):
    _add_validation_columns(run)
    page = write_report(run, curves=curves).read_text(encoding="utf-8")
    assert _figures(run) == ["curves.png", "metrics.png", "training.png"]
    for name in _figures(run):
        _check_png(run / FIGURES_DIR / name)
    images = _embedded(page)
    assert page.count("<img") == len(images) == 3
    assert sorted(images) == sorted((run / FIGURES_DIR / n).read_bytes() for n in _figures(run))
    assert "val0_average_precision" in page  # the log table shows the new columns
    # a later report without curves drops the stale curve figure
    page = write_report(run).read_text(encoding="utf-8")
    assert _figures(run) == ["metrics.png", "training.png"]
    assert page.count("<img") == 2


def test_report_shows_escaped_config_and_log(run):
    page = write_report(run).read_text(encoding="utf-8")
    config = (run / "config.toml").read_text(encoding="utf-8")
    assert "<site>" in config and html.escape(config) in page
    assert "<site>" not in page
    assert len(re.findall(r"<tr[ >]", page)) == 1 + 3  # header and one row per phase
    assert not list(run.rglob("*.tmp")), "a temporary file was left behind"


def test_metric_columns_groups_by_longest_name():
    columns = ["iteration", "neg_ratio", "val0_average_precision", "val0_precision", "val1_average_precision",
               "roc_auc", "train_loss", "val_1_20_f1"]
    assert metric_columns(columns) == {
        "average_precision": {"val0": "val0_average_precision", "val1": "val1_average_precision"},
        "roc_auc": {"validation": "roc_auc"},
        "precision": {"val0": "val0_precision"},
        "f1": {"val_1_20": "val_1_20_f1"},
    }


def test_curves_agree_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 2)  # rounded: many ties
    precision, recall = precision_recall_curve(labels, scores)
    assert np.isclose(np.sum(np.diff(recall) * precision[1:]), metrics.average_precision_score(labels, scores))
    sk_precision, sk_recall, _ = metrics.precision_recall_curve(labels, scores)
    np.testing.assert_allclose(precision[: sk_precision.size][::-1], sk_precision)
    np.testing.assert_allclose(recall[: sk_recall.size][::-1], sk_recall)
    fpr, tpr = roc_curve(labels, scores)
    sk_fpr, sk_tpr, _ = metrics.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_curves_of_one_class_are_empty():
    assert precision_recall_curve([0, 0], [0.1, 0.2])[0].size == 0
    assert roc_curve([1, 1], [0.1, 0.2])[0].size == 0


def test_report_errors(tmp_path, run):
    with pytest.raises(UserError, match="training_log.tsv: no such file; give the folder of a training run"):
        write_report(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"curves\['val'\]: 3 labels but 2 scores"):
        write_report(run, curves={"val": ([0, 1, 1], [0.2, 0.4])})
    (run / "training_log.tsv").write_text("\t".join(itertrain.training.LOG_COLUMNS) + "\n")
    with pytest.raises(UserError, match="no phase has finished yet"):
        write_report(run)


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run, curves, tmp_path):
    from PIL import Image
    _add_validation_columns(run)
    page = write_report(run, curves=curves)
    url = page.resolve().as_uri()
    shot = tmp_path / "shot.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1200,3000", url, profile=tmp_path / "profile")
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    assert pixels.shape[0] == 1200 * 3000
    # Matplotlib's first line colour (#1f77b4) only shows when the embedded figures were decoded
    blue = np.abs(pixels - [0x1F, 0x77, 0xB4]).sum(axis=1) < 30
    assert blue.sum() > 1000  # ~5000 when rendered, 0 when the images are broken
    dom = _chromium("--dump-dom", url, profile=tmp_path / "profile2").stdout
    assert len(IMG.findall(dom)) == 3
    assert "Training log" in dom and "Configuration (config.toml)" in dom
