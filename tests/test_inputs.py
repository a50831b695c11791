"""Inputs that used to be read silently wrong or refused: headerless and indexed CSV files,
byte-order marks, decimal commas, channels-last, 16-bit and [0, 1] images, near-constant
features, integer column names, and what the scores CSV writes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

import coreset_meg.datasets.tabular
from coreset_meg.anomaly.cli import main
from coreset_meg.datasets import DataError, TableChunks, csv_feature_names, load_table

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
    with caplog.at_level(logging.WARNING, logger="coreset_meg.datasets.tabular"):
        X, y = load_table(path)
    assert X.shape == (20, 3) and y is None
    np.testing.assert_allclose(X, data, rtol=1e-6)
    assert caplog.text.count("read without a header") == 1
    assert csv_feature_names(path) is None
    chunks = TableChunks(path, chunk_rows=7)
    assert chunks.feature_names is None
    np.testing.assert_array_equal(np.concatenate([c for c, _ in chunks]), X)

    partly = tmp_path / "partly.csv"
    partly.write_text("1,,3\n4,5,6\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coreset_meg.datasets.tabular"):
        assert load_table(partly, label_column=None)[0].shape == (1, 3)
    assert "some of it looks numeric (1, 3)" in caplog.text

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
    with caplog.at_level(logging.WARNING, logger="coreset_meg.datasets.tabular"):
        X, _ = load_table(tmp_path / "indexed.csv")
    assert X.shape == (12, 2)
    np.testing.assert_allclose(X, frame.to_numpy(), rtol=1e-6)
    assert "pandas index" in caplog.text
    assert csv_feature_names(tmp_path / "indexed.csv") == ["a", "b"]
    chunks = list(TableChunks(tmp_path / "indexed.csv", chunk_rows=5))
    np.testing.assert_array_equal(np.concatenate([c for c, _ in chunks]), X)

    # An index that stops counting after the rows looked at is refused.
    monkeypatch.setattr(coreset_meg.datasets.tabular, "_INDEX_PROBE_ROWS", 5)
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
    assert list(frame.columns) == ["id", "anomaly_score", "is_anomaly"]
    # Text cells that a spreadsheet would run as formulas are quoted; numbers are not.
    assert frame["id"].tolist() == ["'=cmd()", "'-2", "'+x", "'@y"]

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
    path.write_text("a;b\n1.234;2,5\n5.678;3\n")  # was read as 1.234 and 5.678
    with pytest.raises(DataError, match=r"eu.csv line 2, column 'a': '1.234' .*thousands"):
        load_table(path)
    path.write_text("a;b\n1,5;2\n1.234;3\n")
    with pytest.raises(DataError, match=r"eu.csv line 3, column 'a': '1.234' .*thousands"):
        load_table(path)
    path.write_text("a;b\n1,5;2\n1.234,5;3\n")
    with pytest.raises(DataError, match=r"'1.234,5'"):
        load_table(path)
    path.write_text("a;b\n1,5;2\n1234,5;3\n")
    np.testing.assert_array_equal(load_table(path)[0], [[1.5, 2], [1234.5, 3]])
    path.write_text("1,5;2\n1234,5;3\n")  # without a header
    np.testing.assert_array_equal(load_table(path)[0], [[1.5, 2], [1234.5, 3]])


# ----------------------------------------------------------------------------------------------
# Images

TINY = dict(n_iter=4, n_energy_steps=1, width=16, random_state=0)


def _digits_u8(n=24):
    """Grey 8x8 "digits": a dark background with a bright bar, uint8 (n, 8, 8)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, size=(n, 8, 8)).astype(np.uint8)
    images[:, 2:6, 3:5] = rng.integers(180, 256, size=(n, 4, 2))
    return images


def _png_folder(folder, images, bits=8):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        array = image.astype(np.uint16) * 257 if bits == 16 else image
        Image.fromarray(array).save(folder / f"{i:03d}.png")
    return folder


def test_channels_last_images_from_the_loader_fit_as_channels_first(tmp_path):
    from coreset_meg.anomaly import MEGDetector
    from coreset_meg.datasets import load_image_folder

    images, _, _ = load_image_folder(_png_folder(tmp_path / "d", _digits_u8()))
    assert images.shape == (24, 8, 8, 1)
    det = MEGDetector(**TINY).fit(images)
    assert det.input_shape_ == (1, 8, 8)
    first = images.transpose(0, 3, 1, 2)
    ref = MEGDetector(**TINY).fit(first)
    np.testing.assert_array_equal(det.score_samples(images), ref.score_samples(first))
    np.testing.assert_array_equal(det.score_samples(first), ref.score_samples(first))
    colour = np.repeat(images, 3, axis=3)  # (N, 8, 8, 3)
    assert MEGDetector(**TINY, view="pixels").fit(colour).input_shape_ == (3, 8, 8)


def test_16_bit_pngs_are_scaled_by_their_bit_depth(tmp_path):
    from coreset_meg.datasets import load_image_folder

    digits = _digits_u8(4)
    eight, _, _ = load_image_folder(_png_folder(tmp_path / "8", digits))
    sixteen, _, _ = load_image_folder(_png_folder(tmp_path / "16", digits, bits=16))
    np.testing.assert_array_equal(sixteen, eight)
    colour, _, _ = load_image_folder(tmp_path / "16", grayscale=False)
    np.testing.assert_array_equal(colour, np.repeat(eight, 3, axis=3))


def test_float_images_in_0_1_need_a_declared_range():
    from coreset_meg.anomaly import MEGDetector

    digits = _digits_u8()[:, None]
    symmetric = digits / np.float32(127.5) - np.float32(1.0)
    unit = digits.astype(np.float32) / 255
    with pytest.raises(ValueError, match=r"image_range='unit'"):
        MEGDetector(**TINY).fit(unit)
    det = MEGDetector(**TINY).fit(symmetric)
    with pytest.raises(ValueError, match=r"no negative value"):
        det.score_samples(unit)  # the case: [0, 1] scored as if in [-1, 1]
    bright = np.clip(symmetric[:1], 0, 1)  # in [-1, 1], with no negative value
    with pytest.raises(ValueError, match=r"no negative value"):
        det.score_samples(bright)
    det.set_params(image_range="symmetric")
    assert np.isfinite(det.score_samples(bright)).all()  # declared: taken as it is
    unit_det = MEGDetector(**TINY, image_range="unit").fit(unit)
    np.testing.assert_allclose(
        unit_det.score_samples(unit), det.score_samples(symmetric), rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ValueError, match=r"image_range='unit': float images must be in \[0, 1\]"):
        unit_det.score_samples(symmetric)


def test_integer_images_are_scaled_by_their_dtype():
    from coreset_meg.anomaly import MEGDetector

    digits = _digits_u8()[:, None]
    det = MEGDetector(**TINY).fit(digits)
    wide = digits.astype(np.uint16) * 257
    np.testing.assert_allclose(det.score_samples(wide), det.score_samples(digits), atol=1e-4)
    det16 = MEGDetector(**TINY).fit(wide)
    np.testing.assert_allclose(det16.score_samples(wide), det.score_samples(digits), atol=1e-4)
    with pytest.raises(ValueError, match=r"int32 values in \[0, 65535\]"):
        det.score_samples(wide.astype(np.int32))


def test_uint8_npy_images_from_the_command_line(tmp_path, capsys):
    np.save(tmp_path / "train.npy", _digits_u8()[:, None])
    np.save(tmp_path / "test.npy", _digits_u8(6)[:, :, :, None])  # channels last
    model = tmp_path / "m"
    code, _, err = run(["fit", str(tmp_path / "train.npy"), "--out", str(model), *FAST], capsys)
    assert code == 0, err
    X, _ = load_table(tmp_path / "train.npy")
    assert X.dtype == np.uint8
    scores = tmp_path / "s.csv"
    code, _, err = run(
        ["score", str(model), str(tmp_path / "test.npy"), "--out", str(scores), "--quiet"], capsys
    )
    assert code == 0, err
    assert len(pd.read_csv(scores)) == 6


def test_one_colour_file_in_a_grey_folder_is_named(tmp_path, caplog):
    from PIL import Image

    from coreset_meg.datasets import load_image_folder

    folder = _png_folder(tmp_path / "d", _digits_u8(3))
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / "zz-colour.png")
    with caplog.at_level(logging.WARNING, logger="coreset_meg.datasets.images"):
        X, _, _ = load_image_folder(folder)
    assert X.shape == (4, 8, 8, 3)
    assert "zz-colour.png" in caplog.text and "1 of 4" in caplog.text


def test_image_size_is_bounded(tmp_path, capsys):
    from coreset_meg.datasets import load_image_folder

    folder = _png_folder(tmp_path / "d", _digits_u8(2))
    with pytest.raises(DataError, match=r"image_size 30000 is larger than 4096"):
        load_image_folder(folder, image_size=30000)
    code, _, err = run(["fit", str(folder), "--image-size", "30000", *FAST], capsys)
    assert code != 0 and "--image-size" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    from coreset_meg.anomaly.cli import MAX_IMAGE_SIDE
    from coreset_meg.datasets.images import MAX_IMAGE_SIDE as LOADER_MAX

    assert MAX_IMAGE_SIDE == LOADER_MAX


def test_integer_column_names_are_checked():
    from coreset_meg.anomaly import MEGDetector

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(30, 3)))  # columns 0, 1, 2
    det = MEGDetector(**TINY).fit(frame)
    det.score_samples(frame)
    det.score_samples(frame.to_numpy())  # unnamed: by position
    with pytest.raises(ValueError, match=r"column 0 is '2', expected '0'"):
        det.score_samples(frame[[2, 1, 0]])


# ----------------------------------------------------------------------------------------------
# Scaling


def test_tiny_spreads_are_scaled_and_constants_checked(tmp_path):
    from coreset_meg.anomaly import MEGDetector, load_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    X[:, 1] = rng.uniform(-1, 1, size=200) * 1e-9  # spans about 2e-9: not constant
    X[:, 2] = 3.0  # constant
    det = MEGDetector(n_iter=40, width=16, random_state=0).fit(X)
    assert det.scale_[1] < 1e-8
    probe = np.array([[0.0, 1e-5, 3.0], [0.0, 0.0, 3.5], [0.0, 0.0, 3.0]])
    assert det.predict(probe).tolist() == [-1, -1, 1]
    scores = det.score_samples(probe)
    assert scores[1] <= det.offset_ - 1.0
    np.testing.assert_array_equal(det.constant_, [False, False, True])
    det.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_array_equal(again.score_samples(probe), scores)

    # The exported file applies the same rule (its own check scores samples off the constant).
    import torch

    from coreset_meg.anomaly.export import export_model

    path = export_model(det, tmp_path / "m.pt")
    module = torch.jit.load(str(path))
    with torch.no_grad():
        exported = module(torch.from_numpy(probe.astype(np.float32))).numpy()
    np.testing.assert_allclose(exported, scores, atol=1e-5)


def test_image_file_names_like_formulas_are_quoted_in_the_scores(tmp_path, capsys):
    folder = _png_folder(tmp_path / "d", _digits_u8(6))
    (folder / "000.png").rename(folder / "=1+1.png")
    (folder / "001.png").rename(folder / "-2.png")
    model = tmp_path / "m"
    code, _, err = run(["fit", str(folder), "--out", str(model), *FAST], capsys)
    assert code == 0, err
    scores = tmp_path / "s.csv"
    code, _, err = run(["score", str(model), str(folder), "--out", str(scores)], capsys)
    assert code == 0, err
    paths = pd.read_csv(scores)["path"].tolist()
    assert {"'-2.png", "'=1+1.png", "002.png"} <= set(paths)


def test_image_range_unit_is_refused_for_an_image_folder(tmp_path, capsys):
    folder = _png_folder(tmp_path / "d", _digits_u8(2))
    code, _, err = run(["fit", str(folder), "--image-range", "unit", *FAST], capsys)
    assert code == 1 and "--image-range unit applies to float image arrays" in err


def test_float_npy_images_in_0_1_from_the_command_line(tmp_path, capsys):
    np.save(tmp_path / "unit.npy", _digits_u8()[:, None].astype(np.float32) / 255)
    model = tmp_path / "m"
    code, _, err = run(["fit", str(tmp_path / "unit.npy"), "--out", str(model), *FAST], capsys)
    assert code == 1 and "image_range='unit'" in err
    code, _, err = run(
        ["fit", str(tmp_path / "unit.npy"), "--out", str(model), "--image-range", "unit", *FAST],
        capsys,
    )
    assert code == 0, err
    scores = tmp_path / "s.csv"
    code, _, err = run(
        ["score", str(model), str(tmp_path / "unit.npy"), "--out", str(scores), "--quiet"], capsys
    )
    assert code == 0, err
