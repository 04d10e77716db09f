"""Every bad input gets one clear line, exit status 2, no traceback and no partial output."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import itertrain as it
from itertrain.cli import main

from conftest import table_frame

GOOD_ROW = "A" * 50 + "\t" + "U" * 20 + "\t1\n"
NEG_ROW = "C" * 50 + "\t" + "A" * 20 + "\t0\n"
HEADER = "seq_a\tseq_b\tlabel\n"
TRAIN = ["--max-iter", "2", "--pos-samples", "4", "--n-batches", "2", "--device", "cpu", "--quiet"]


def good_table(path, n=20):
    path.write_text(HEADER + GOOD_ROW * n + NEG_ROW * (3 * n))
    return path


def run_main(argv, capsys):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err


def assert_user_error(code, err, *fragments):
    assert code == 2
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("itertrain: error: ")
    for fragment in fragments:
        assert fragment in err, (fragment, err)


TABLES = {
    "empty file": ("", ["the file is empty"]),
    "header only": (HEADER, ["header but no data rows"]),
    "misnamed columns": ("target\tmirna\tlabel\n" + GOOD_ROW, ["no column 'seq_a' or 'seq_b'",
                                                            "columns found: target, mirna, label", "--seq-a-col"]),
    "label yes": (HEADER + GOOD_ROW + GOOD_ROW.replace("\t1\n", "\tyes\n"), ["column 'label'", "line 3 ('yes')"]),
    "label 2": (HEADER + GOOD_ROW.replace("\t1\n", "\t2\n"), ["line 2 ('2')"]),
    "label blank": (HEADER + GOOD_ROW.replace("\t1\n", "\t\n"), ["line 2 ('')"]),
    "label NaN": (HEADER + GOOD_ROW.replace("\t1\n", "\tNaN\n"), ["line 2 ('NaN')"]),
    "bad letters": (HEADER + GOOD_ROW + ("ACGTX" * 10) + "\tACGT\t1\n" + "ACGT\tAC GT\t0\n",
                    ["column 'seq_a'", "only hold A, C, G, T, U or N", "line 3 ('ACGTX"]),
    "too long": (HEADER + "A" * 55 + "\tACGT\t1\n", ["line 2, column 'seq_a'", "55 bases", "--truncate"]),
    "ragged row": (HEADER + GOOD_ROW + "ACGT\tACGT\t1\textra\tfields\n", ["malformed TSV"]),
    "binary junk": ("\x00\x01\x02garbage\xff", []),
}


@pytest.mark.parametrize("case", list(TABLES))
def test_bad_tables(tmp_path, capsys, case):
    content, fragments = TABLES[case]
    path = tmp_path / "bad.tsv"
    path.write_bytes(content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content)
    code, err = run_main(["train", "--data", path, "--out", tmp_path / "run", *TRAIN], capsys)
    assert_user_error(code, err, str(path), *fragments)
    assert not (tmp_path / "run").exists()


def test_missing_file(tmp_path, capsys):
    code, err = run_main(["train", "--data", tmp_path / "nope.tsv", "--out", tmp_path / "run", *TRAIN], capsys)
    assert_user_error(code, err, "nope.tsv: no such file")
    assert not (tmp_path / "run").exists()


def test_unreadable_files(tmp_path, capsys):
    broken = tmp_path / "broken.tsv.gz"
    broken.write_bytes(gzip.compress(b"seq_a\tseq_b\tlabel\n")[:12])
    code, err = run_main(["train", "--data", broken, "--out", tmp_path / "run", *TRAIN], capsys)
    assert_user_error(code, err, str(broken))
    code, err = run_main(["train", "--data", tmp_path, "--out", tmp_path / "run", *TRAIN], capsys)
    assert_user_error(code, err, "is a folder")
    if os.geteuid() != 0:  # root reads anything
        locked = good_table(tmp_path / "locked.tsv")
        locked.chmod(0)
        code, err = run_main(["train", "--data", locked, "--out", tmp_path / "run", *TRAIN], capsys)
        assert_user_error(code, err, "not readable")


@pytest.mark.parametrize("flags, fragments", [
    (["--pos-samples", "3", "--n-batches", "5"], ["pos_samples=3 cannot put a positive in each of n_batches=5"]),
    (["--neg-ratio-start", "0"], ["ratio of phase 0 is 0", "ratios must be > 0"]),
    (["--neg-ratio-start", "-1"], ["ratio of phase 0 is -1"]),
    (["--max-iter", "0"], ["max_iter must be a whole number of phases >= 1"]),
    (["--lr", "-0.01"], ["lr must be a positive number"]),
    (["--epochs-per-phase", "0"], ["epochs_per_phase"]),
    (["--class-weight", "1,-2"], ["class_weight"]),
    (["--arch", "resnet9000"], ["unknown architecture 'resnet9000'"]),
    (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"],
     ["device"]),
])
def test_impossible_configuration(tmp_path, capsys, flags, fragments):
    data = good_table(tmp_path / "good.tsv")
    code, err = run_main(["train", "--data", data, "--out", tmp_path / "run", *TRAIN, *flags], capsys)
    assert_user_error(code, err, *fragments)
    assert not (tmp_path / "run").exists()


def test_too_few_pairs_for_one_phase(tmp_path, capsys):
    data = good_table(tmp_path / "good.tsv", n=3)
    code, err = run_main(["train", "--data", data, "--out", tmp_path / "run", *TRAIN, "--pos-samples", "4"], capsys)
    assert_user_error(code, err, "cannot supply the first phase", "positive pool")


def test_output_folder_not_writable(tmp_path, capsys):
    data = good_table(tmp_path / "good.tsv")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_main(["train", "--data", data, "--out", blocker / "run", *TRAIN], capsys)
    assert_user_error(code, err, "cannot write the run folder")


def test_existing_run_folder_needs_resume_or_overwrite(tmp_path, capsys):
    data = good_table(tmp_path / "good.tsv")
    assert run_main(["train", "--data", data, "--out", tmp_path / "run", *TRAIN], capsys)[0] == 0
    before = (tmp_path / "run" / "training_log.tsv").read_text()
    code, err = run_main(["train", "--data", data, "--out", tmp_path / "run", *TRAIN], capsys)
    assert_user_error(code, err, "already exists", "--resume", "--overwrite")
    assert (tmp_path / "run" / "training_log.tsv").read_text() == before
    assert run_main(["train", "--data", data, "--out", tmp_path / "run", *TRAIN, "--overwrite"], capsys)[0] == 0


def test_predict_and_evaluate_errors(tmp_path, capsys, pairs_tsv):
    code, err = run_main(["predict", "--model", pairs_tsv, "--input", pairs_tsv, "--output", tmp_path / "o.tsv"],
                         capsys)
    assert_user_error(code, err, "not a safetensors checkpoint")
    code, err = run_main(["evaluate", "--model", tmp_path / "none", "--data", pairs_tsv], capsys)
    assert_user_error(code, err, "no such checkpoint or run folder")
    assert not (tmp_path / "o.tsv").exists()


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "itertrain", "--debug", "train", "--data", tmp_path / "x.tsv",
                           "--out", tmp_path / "run"], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from(["t.tsv", "t.csv", "t.tsv.gz", "t.parquet"]))
def test_fuzz_table_reader_with_random_bytes(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content)
    try:
        pairs = it.load_pairs(path)
    except it.UserError as err:
        assert "\n" not in str(err) and str(path) in str(err)
    else:
        assert len(pairs) > 0


rows = st.lists(st.lists(st.text(alphabet="ACGTUNacgu xX,\t\"01-", max_size=60), min_size=0, max_size=5),
                min_size=1, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows, st.sampled_from(["\t", ","]))
def test_fuzz_table_reader_with_malformed_rows(tmp_path, table, sep):
    path = tmp_path / ("t.tsv" if sep == "\t" else "t.csv")
    path.write_text("seq_a" + sep + "seq_b" + sep + "label\n" + "\n".join(sep.join(r) for r in table))
    try:
        pairs = it.load_pairs(path)
    except it.UserError as err:
        assert "\n" not in str(err)
    else:
        assert set(pairs.labels.tolist()) <= {0, 1}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=10), st.integers(1, 30), st.booleans())
def test_fuzz_encoder_with_random_text(seqs, length, truncate):
    try:
        out = it.encode_pairs(seqs, seqs, shape=(length, length), truncate=truncate)
    except it.UserError as err:
        assert "\n" not in str(err)
    else:
        assert out.shape == (len(seqs), length, length) and set(out.ravel().tolist()) <= {0.0, 1.0}


def test_evaluate_output_into_a_missing_folder(tmp_path, capsys, pairs_tsv):
    code, err = run_main(["evaluate", "--baseline", "seed-match", "--data", pairs_tsv,
                          "--output", tmp_path / "no" / "metrics.tsv"], capsys)
    assert_user_error(code, err, "no such folder to write metrics.tsv into; create it first")
    assert not (tmp_path / "no").exists()
