"""Inputs that used to be read silently wrong or refused: headerless and indexed CSV files,
byte-order marks, decimal commas, channels-last, 16-bit and [0, 1] images, near-constant
features, integer column names, and what the scores CSV writes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

import datasets.tabular
from anomaly.cli import main
from datasets import DataError, TableChunks, csv_feature_names, load_table

FAST = ["--n-iter", "4", "--n-energy-steps", "1", "--width", "16", "--quiet"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------------------------
# CSV files


def test_headerless_numeric_csv_is_read_without_a_header(tmp_path, caplog):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 3))
    data[0, 1] = data[0, 0]  # a repeated value in the first row: not unique "column names"
    path = tmp_path / "plain.csv"
    np.savetxt(path, data, delimiter=",")
    with caplog.at_level(logging.WARNING, logger="datasets.tabular"):
        X, y = load_table(path)
    assert X.shape == (20, 3) and y is None
    np.testing.assert_allclose(X, data, rtol=1e-6)
    assert caplog.text.count("read without a header") == 1
    assert csv_feature_names(path) is None
    chunks = TableChunks(path, chunk_rows=7)
    assert chunks.feature_names is None
    np.testing.assert_array_equal(np.concatenate([c for c, _ in chunks]), X)

    # Forced either way; a label column by position.
    assert load_table(path, header=True)[0].shape == (19, 3)
    named = tmp_path / "named.csv"
    named.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match=r"named.csv column '0' is not numeric \(line 1: 'a'\)"):
        load_table(named, header=False)
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("1.5,2,0\n3,4,1\n")
    X, y = load_table(labelled, label_column="2")
    np.testing.assert_array_equal(X, [[1.5, 2], [3, 4]])
    np.testing.assert_array_equal(y, [0, 1])


def test_cli_headerless_csv_trains_on_every_row(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savetxt(tmp_path / "train.csv", rng.normal(size=(30, 2)), delimiter=",")
    code, out, err = run(
        ["fit", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"), "--json", *FAST],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["n_train"] == 30
    code, out, err = run(
        ["fit", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"), "--json", "--header"]
        + FAST,
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["n_train"] == 29
    np.savetxt(tmp_path / "test.csv", rng.normal(size=(5, 2)), delimiter=",")
    scores = tmp_path / "scores.csv"
    code, out, err = run(
        ["score", str(tmp_path / "m"), str(tmp_path / "test.csv"), "--no-header"]
        + ["--out", str(scores), "--quiet"],
        capsys,
    )
    assert code == 0, err
    assert len(pd.read_csv(scores)) == 5


def test_pandas_index_column_is_dropped_with_a_notice(tmp_path, caplog, monkeypatch):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(12, 2)), columns=["a", "b"])
    frame.to_csv(tmp_path / "indexed.csv")  # pandas' default: an unnamed index column first
    with caplog.at_level(logging.WARNING, logger="datasets.tabular"):
        X, _ = load_table(tmp_path / "indexed.csv")
    assert X.shape == (12, 2)
    np.testing.assert_allclose(X, frame.to_numpy(), rtol=1e-6)
    assert "pandas index" in caplog.text
    assert csv_feature_names(tmp_path / "indexed.csv") == ["a", "b"]
    chunks = list(TableChunks(tmp_path / "indexed.csv", chunk_rows=5))
    np.testing.assert_array_equal(np.concatenate([c for c, _ in chunks]), X)

    # An index that stops counting after the rows looked at is refused.
    monkeypatch.setattr(datasets.tabular, "_INDEX_PROBE_ROWS", 5)
    text = (tmp_path / "indexed.csv").read_text().splitlines()
    text[9] = "99" + text[9][text[9].index(",") :]
    (tmp_path / "broken.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"broken.csv: the unnamed first column .* line 10"):
        list(TableChunks(tmp_path / "broken.csv", chunk_rows=5))


def test_id_and_drop_columns(tmp_path, capsys):
    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(30, 2)), columns=["a", "b"])
    train.insert(0, "id", [f"r{i}" for i in range(30)])
    train["note"] = "x"
    train.to_csv(tmp_path / "train.csv", index=False)
    X, _ = load_table(tmp_path / "train.csv", id_column="id", drop_columns=["note"])
    np.testing.assert_allclose(X, train[["a", "b"]].to_numpy(), rtol=1e-6)
    assert csv_feature_names(tmp_path / "train.csv", drop_columns=["id", "note"]) == ["a", "b"]
    with pytest.raises(DataError, match=r"train.csv has no column 'nope'"):
        load_table(tmp_path / "train.csv", drop_columns=["nope"])

    model = tmp_path / "m"
    code, _, err = run(
        ["fit", str(tmp_path / "train.csv"), "--out", str(model), "--id-column", "id"]
        + ["--drop-columns", "note", *FAST],
        capsys,
    )
    assert code == 0, err
    test = train.iloc[:4].copy()
    test["id"] = ["=cmd()", "-2", "+x", "@y"]
    test.to_csv(tmp_path / "test.csv", index=False)
    scores = tmp_path / "scores.csv"
    code, _, err = run(
        ["score", str(model), str(tmp_path / "test.csv"), "--id-column", "id"]
        + ["--drop-columns", "note", "--out", str(scores), "--quiet"],
        capsys,
    )
    assert code == 0, err
    frame = pd.read_csv(scores, dtype={"id": str})
    assert list(frame.columns) == ["id", "anomaly_score", "score_samples", "is_anomaly"]
    # Text cells that a spreadsheet would run as formulas are quoted; numbers are not.
    assert frame["id"].tolist() == ["'=cmd()", "'-2", "'+x", "'@y"]
    assert (frame["anomaly_score"] == -frame["score_samples"]).all()

    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    code, _, err = run(["fit", str(tmp_path / "x.npy"), "--id-column", "id", *FAST], capsys)
    assert code == 1 and "--id-column applies to CSV files" in err


def test_csv_with_a_byte_order_mark(tmp_path, capsys):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(20, 2)), columns=["a", "b"])
    frame.to_csv(tmp_path / "plain.csv", index=False)
    frame.to_csv(tmp_path / "bom.csv", index=False, encoding="utf-8-sig")
    assert (tmp_path / "bom.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert csv_feature_names(tmp_path / "bom.csv") == ["a", "b"]
    np.testing.assert_array_equal(
        load_table(tmp_path / "bom.csv")[0], load_table(tmp_path / "plain.csv")[0]
    )
    code, _, err = run(
        ["fit", str(tmp_path / "plain.csv"), "--out", str(tmp_path / "m"), *FAST], capsys
    )
    assert code == 0, err
    code, _, err = run(
        ["score", str(tmp_path / "m"), str(tmp_path / "bom.csv"), "--out", str(tmp_path / "s.csv")],
        capsys,
    )
    assert code == 0, err


def test_thousands_marks_in_a_decimal_comma_file_are_refused(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text("a;b\n1,5;2\n1.234;3\n")
    with pytest.raises(DataError, match=r"eu.csv line 3, column 'a': '1.234' .*thousands"):
        load_table(path)
    path.write_text("a;b\n1,5;2\n1.234,5;3\n")
    with pytest.raises(DataError, match=r"'1.234,5'"):
        load_table(path)
    path.write_text("a;b\n1,5;2\n1234,5;3\n")
    np.testing.assert_array_equal(load_table(path)[0], [[1.5, 2], [1234.5, 3]])
