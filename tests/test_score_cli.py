"""`anomaly score` on folder layouts, reports, chunked inputs and its progress bar."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from PIL import Image

import coreset_meg.anomaly._meg
import coreset_meg.datasets.tabular
from coreset_meg.anomaly import MEGDetector, load_model
from coreset_meg.anomaly.cli import main
from coreset_meg.anomaly.report import ReportError, score_report, training_report
from coreset_meg.datasets import DataError, TableChunks, load_table

FAST = ["--n-iter", "4", "--n-energy-steps", "1", "--width", "16", "--quiet"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _images(folder, n, low, rng):
    folder.mkdir(parents=True)
    for i in range(n):
        pixels = rng.integers(low, low + 100, size=(8, 8), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    """anomalib's layout (root/train/good, root/test/good, root/test/crack) and a model fitted on
    root/train/good; the cracks are bright, the good images dark."""
    root = tmp_path_factory.mktemp("mvtec")
    rng = np.random.default_rng(0)
    _images(root / "train" / "good", 24, 0, rng)
    _images(root / "test" / "good", 6, 0, rng)
    _images(root / "test" / "crack", 4, 150, rng)
    assert main(["fit", str(root / "train" / "good"), "--out", str(root / "model"), *FAST]) == 0
    return root


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    """A model fitted on 20-feature vectors, and 1,300 test rows as CSV (with a label column)
    and as .npy."""
    root = tmp_path_factory.mktemp("vectors")
    rng = np.random.default_rng(1)
    columns = [f"f{j}" for j in range(20)]
    pd.DataFrame(rng.normal(size=(200, 20)), columns=columns).to_csv(
        root / "train.csv", index=False
    )
    assert main(["fit", str(root / "train.csv"), "--out", str(root / "model"), *FAST]) == 0
    X = np.vstack([rng.normal(size=(1200, 20)), rng.normal(6, 1, size=(100, 20))])
    test = pd.DataFrame(X, columns=columns)
    test["label"] = [0] * 1200 + [1] * 100
    test.to_csv(root / "test.csv", index=False)
    np.save(root / "test.npy", X)
    return root


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_folder_layout_labels_from_sub_folders(mvtec, tmp_path, capsys):
    scores = tmp_path / "scores.csv"
    code, out, err = run(
        ["score", str(mvtec / "model"), str(mvtec / "test"), "--normal-class", "good"]
        + ["--out", str(scores), "--json", "-q"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == 10 and result["auroc"] == 1.0  # bright cracks against dark images
    frame = pd.read_csv(scores)
    assert list(frame.columns) == ["path", "anomaly_score", "is_anomaly"]
    assert frame.path.tolist() == [f"crack/{i}.png" for i in range(4)] + [
        f"good/{i}.png" for i in range(6)
    ]
    assert (frame.anomaly_score[:4].min() > frame.anomaly_score[4:].max()).item()


def test_folder_label_errors_are_one_line(mvtec, tmp_path, capsys):
    model, test = str(mvtec / "model"), str(mvtec / "test")
    out = ["--out", str(tmp_path / "s.csv")]
    cases = [
        (["--normal-class", "ok"], "sub-folders: crack, good"),
        (["--label-column", "label"], "--label-column applies to CSV"),
        (["--labels", str(tmp_path / "y.npy")], "--labels applies to CSV"),
    ]
    for options, message in cases:
        code, _, err = run(["score", model, test, *options, *out], capsys)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s.csv").exists()
    table = tmp_path / "x.csv"
    table.write_text("a\n1\n")
    code, _, err = run(["score", model, str(table), "--normal-class", "good", *out], capsys)
    assert code == 1 and "image folders" in err


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE and imread(path).ndim == 3


def test_score_report_files_and_page(mvtec, tmp_path, capsys):
    report = tmp_path / "report"
    code, out, err = run(
        ["score", str(mvtec / "model"), str(mvtec / "test"), "--normal-class", "good"]
        + ["--out", str(tmp_path / "s.csv"), "--report", str(report), "--json", "-q"],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["report"] == str(report / "index.html")
    figures = ["scores.png", "roc.png", "pr.png", "top_anomalies.png"]
    page = (report / "index.html").read_text()
    for name in figures:
        assert _is_png(report / name) and f'src="{name}"' in page
    assert "crack/0.png" in page  # the table of the most anomalous samples
    # A folder with a file no report wrote is refused before scoring; nothing is deleted.
    (report / "notes.txt").write_text("mine")
    code, _, err = run(
        ["score", str(mvtec / "model"), str(mvtec / "test"), "--report", str(report)], capsys
    )
    assert code == 1 and "notes.txt" in err and (report / "notes.txt").read_text() == "mine"


def test_report_folder_is_replaced_not_mixed(tmp_path):
    rng = np.random.default_rng(0)
    score = rng.normal(size=50)
    page = score_report(tmp_path / "r", score, 1.0, y=(score > 1).astype(int))
    assert {p.name for p in page.parent.iterdir()} == {
        "index.html", "pr.png", "report.json", "roc.png", "scores.png"
    }  # fmt: skip
    score_report(tmp_path / "r", score, 1.0)  # no labels: the curves of the first go
    assert {p.name for p in page.parent.iterdir()} == {"index.html", "report.json", "scores.png"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.csv").write_text("x")
    with pytest.raises(ReportError, match="not a report folder"):
        score_report(tmp_path / "other", score, 1.0)


def test_training_report_plots_the_history(mvtec, tmp_path):
    history = load_model(mvtec / "model").history_
    page = training_report(tmp_path / "t", history)
    assert _is_png(tmp_path / "t" / "training.png")
    assert 'src="training.png"' in page.read_text()
    with pytest.raises(ValueError, match="history"):
        training_report(tmp_path / "u", [{"loss_energy": 1.0}])  # no step
    page = training_report(tmp_path / "v", [])  # nothing trained: a page that says so
    assert "nothing to show" in page.read_text()


@pytest.mark.parametrize("name", ["test.csv", "test.npy"])
def test_chunked_scores_equal_in_memory_scores(vectors, name, tmp_path, capsys, monkeypatch):
    detector = load_model(vectors / "model")
    column = "label" if name.endswith(".csv") else None
    X, _ = load_table(vectors / name, label_column=column)
    expected = detector._raw_scores(detector._validate(X, reset=False))  # one piece
    monkeypatch.setattr(coreset_meg.datasets.tabular, "CHUNK_ROWS", 512)  # 1,300 rows: 3 pieces
    label = [] if column is None else ["--label-column", column]
    out = tmp_path / "s.csv"
    code, stdout, err = run(
        ["score", str(vectors / "model"), str(vectors / name), "--out", str(out), "--json", "-q"]
        + label,
        capsys,
    )
    assert code == 0, err
    frame = pd.read_csv(out)
    assert frame["index"].tolist() == list(range(1300))
    np.testing.assert_array_equal(-frame.anomaly_score.to_numpy(), expected)
    if label:
        assert json.loads(stdout)["auroc"] > 0.9


def test_score_samples_reads_a_memory_map_in_pieces(vectors, tmp_path, monkeypatch):
    detector = load_model(vectors / "model")
    X, _ = load_table(vectors / "test.npy")
    expected = detector.score_samples(X)
    np.save(tmp_path / "x.npy", X)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    monkeypatch.setattr(coreset_meg.anomaly._meg, "_CHUNK_BYTES", 512 * 20 * 4)  # 512 rows a piece
    sizes = []
    validate = MEGDetector._validate

    def recording(self, X, *, reset):
        sizes.append(len(X))
        return validate(self, X, reset=reset)

    monkeypatch.setattr(MEGDetector, "_validate", recording)
    np.testing.assert_array_equal(detector.score_samples(mapped), expected)
    assert sizes == [512, 512, 276]


def test_table_chunks_match_load_table_and_name_the_line(tmp_path):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(70, 3)), columns=["a", "b", "c"])
    frame["y"] = rng.integers(0, 2, size=70)
    frame.to_csv(tmp_path / "t.csv", index=False)
    np.save(tmp_path / "t.npy", frame.to_numpy())
    np.savez(tmp_path / "t.npz", X=frame.to_numpy()[:, :3], y=frame.y.to_numpy())
    for name, label in (("t.csv", "y"), ("t.npy", 3), ("t.npz", None)):
        X, y = load_table(tmp_path / name, label_column=label)
        pieces = list(TableChunks(tmp_path / name, label_column=label, chunk_rows=32))
        assert [len(p) for p, _ in pieces] == [32, 32, 6]
        np.testing.assert_array_equal(np.concatenate([p for p, _ in pieces]), X)
        np.testing.assert_array_equal(np.concatenate([q for _, q in pieces]), y)
    lines = (tmp_path / "t.csv").read_text().splitlines()
    lines[60] = "1,2,,0"  # data row 59, in the second piece
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="at line 61, column 'c'"):
        list(TableChunks(tmp_path / "bad.csv", chunk_rows=32))
    (tmp_path / "head.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="no data rows"):
        list(TableChunks(tmp_path / "head.csv"))


def test_progress_bar_only_on_a_terminal_and_not_quiet(vectors, tmp_path, capsys, monkeypatch):
    argv = ["score", str(vectors / "model"), str(vectors / "test.npy")]
    argv += ["--out", str(tmp_path / "s.csv")]
    _, _, err = run(argv, capsys)  # stderr is not a terminal here
    assert "Scoring" not in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _, _, err = run([*argv, "--quiet"], capsys)
    assert "Scoring" not in err
    _, _, err = run(argv, capsys)
    assert "Scoring test.npy" in err
