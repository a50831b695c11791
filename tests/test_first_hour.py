"""What a new user meets in the first hour: default fits, threshold metrics, galleries of
mistakes, inputs that are understood, and the quickstart documents (issue 29)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from coreset_meg.anomaly.cli import main


def _images(folder, n, low, rng, size=8):
    folder.mkdir(parents=True)
    for i in range(n):
        pixels = rng.integers(low, low + 100, size=(size, size), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def anomalib(tmp_path_factory):
    """anomalib's layout: root/train/good, root/test/{good,crack,hole}; cracks are bright and
    easy, holes half-way and partly missed."""
    root = tmp_path_factory.mktemp("anomalib")
    rng = np.random.default_rng(0)
    _images(root / "train" / "good", 24, 0, rng)
    _images(root / "test" / "good", 6, 0, rng)
    _images(root / "test" / "crack", 4, 150, rng)
    _images(root / "test" / "hole", 4, 40, rng)
    return root


@pytest.fixture(scope="module")
def image_model(anomalib, tmp_path_factory):
    """A model fitted with the defaults (no training) on root/train/good."""
    out = tmp_path_factory.mktemp("image-model") / "model"
    assert main(["fit", str(anomalib / "train" / "good"), "--out", str(out), "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Vectors with named columns: 200 normal training rows, 60 test rows (20 anomalies) with a
    label column, and a model fitted with the defaults."""
    root = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(1)
    columns = [f"f{j}" for j in range(5)]
    pd.DataFrame(rng.normal(size=(200, 5)), columns=columns).to_csv(root / "train.csv", index=False)
    X = np.vstack([rng.normal(size=(40, 5)), rng.normal(3, 1, size=(20, 5))])
    test = pd.DataFrame(X, columns=columns)
    test["label"] = [0] * 40 + [1] * 20
    test.to_csv(root / "test.csv", index=False)
    assert main(["fit", str(root / "train.csv"), "--out", str(root / "model"), "-q"]) == 0
    return root


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_default_fit_saves_a_model_that_scores(table, tmp_path, capsys):
    """The default fit trains nothing (no generator): it still saves, and its training report
    says there is nothing to show rather than failing."""
    report = tmp_path / "training"
    code, _, err = run(
        ["fit", str(table / "train.csv"), "--out", str(tmp_path / "m"), "--report", str(report)],
        capsys,
    )
    assert code == 0, err
    page = (report / "index.html").read_text()
    assert "nothing to show" in page and "training.png" not in page
    code, out, err = run(["score", str(tmp_path / "m"), str(table / "train.csv"), "--json",
                          "--out", str(tmp_path / "s.csv")], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["n"] == 200


def test_threshold_metrics_by_hand():
    """Precision, recall, F1 and the false-positive rate at a threshold, and the F1-maximising
    threshold, on scores whose answer is known."""
    from coreset_meg.anomaly import best_f1_threshold, class_rates, threshold_metrics

    y, score = [0, 0, 0, 1, 1], [0.1, 0.2, 0.7, 0.6, 0.9]
    m = threshold_metrics(y, score, 0.5, higher="anomalous")
    assert (m["precision"], m["recall"], m["false_positive_rate"]) == (2 / 3, 1.0, 1 / 3)
    assert m["f1"] == pytest.approx(0.8) and m["false_positives"] == 1
    normal = threshold_metrics(y, [-s for s in score], -0.5, higher="normal")
    assert normal == m  # offset_ on score_samples flags the same samples
    best, b = best_f1_threshold(y, score, higher="anomalous")
    assert 0.2 <= best < 0.6 and b["f1"] == pytest.approx(0.8)
    best, b = best_f1_threshold([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], higher="anomalous")
    assert (np.asarray([0.1, 0.6, 0.4, 0.9]) > best).tolist() == [False, True, True, True]
    rows = class_rates(["ok", "a", "a", "b", "b"], [True, True, True, False, True], "ok")
    assert [(r["class"], r["rate"]) for r in rows] == [("ok", 1.0), ("b", 0.5), ("a", 1.0)]


def test_score_reports_what_was_missed_and_at_what_cost(anomalib, image_model, tmp_path, capsys):
    """The anomalib root is scored on its test folder with good as the normal class; the output
    gives the metrics at the threshold, the best-F1 threshold and the share flagged per class;
    a threshold between the holes' scores misses some holes, which the class table and the
    missed-anomalies gallery show."""
    base = ["score", str(image_model), str(anomalib), "--out", str(tmp_path / "s.csv")]
    code, out, err = run([*base, "--json", "-q"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == 14 and result["threshold_from"].startswith("set at fit")
    assert set(result["at_threshold"]) >= {"precision", "recall", "f1", "false_positive_rate"}
    assert result["best_f1"]["f1"] == 1.0  # bright and half-bright against dark
    classes = {r["class"]: r for r in result["classes"]}
    assert classes["good"]["normal"] and classes["crack"]["rate"] == 1.0
    frame = pd.read_csv(tmp_path / "s.csv")
    assert list(frame.columns) == ["path", "anomaly_score", "is_anomaly"]
    holes = np.sort(frame.anomaly_score[frame.path.str.startswith("hole")].to_numpy())
    middle = float(holes[1:3].mean())  # two holes below it, two above

    report = tmp_path / "report"
    code, out, err = run([*base, "--threshold", str(middle), "--report", str(report)], capsys)
    assert code == 0, err
    assert "hole   " in out and "0.500 (recall)" in out and "2 anomalies missed" in out
    assert "given with --threshold" in out
    page = (report / "index.html").read_text()
    for name in ("false_positives.png", "missed_anomalies.png", "top_anomalies.png"):
        assert (report / name).is_file() and f'src="{name}"' in page
    assert "2 of them not flagged (missed)" in page and "recall at the threshold" in page
    assert "0.500 (recall)" in page  # the per-class table

    code, out, err = run([*base, "--contamination", "0.5", "--json", "-q"], capsys)
    assert code == 0, err
    assert json.loads(out)["threshold_from"] == "for --contamination 0.5"
    code, _, err = run([*base, "--contamination", "0.1", "--threshold", "1"], capsys)
    assert code == 1 and "not both" in err


def test_set_threshold_moves_the_threshold_without_refitting(table):
    from coreset_meg.anomaly import MEGDetector, load_model

    detector = load_model(table / "model")
    X = pd.read_csv(table / "test.csv").drop(columns="label")
    scores = -detector.score_samples(X)
    detector.set_threshold(float(np.median(scores)))
    assert (detector.predict(X) == -1).sum() == (scores > np.median(scores)).sum()
    detector.set_threshold(contamination=0.2)
    assert detector.get_params()["contamination"] == 0.2
    assert detector.labels_.mean() == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="contamination"):
        detector.set_threshold(contamination=0.9)
    with pytest.raises(ValueError, match="not both"):
        detector.set_threshold(1.0, contamination=0.1)
    refit = MEGDetector(contamination=0.2).fit(pd.read_csv(table / "train.csv"))
    assert refit.offset_ == pytest.approx(detector.offset_)


def test_score_out_dash_json_is_one_json_object(table, capsys):
    code, out, err = run(
        ["score", str(table / "model"), str(table / "test.csv"), "--label-column", "label"]
        + ["--out", "-", "--json", "-q"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert len(result["scores"]) == 60 and set(result["scores"][0]) == {
        "index", "anomaly_score", "is_anomaly"
    }  # fmt: skip
    assert "at_threshold" in result and "classes" not in result


def test_a_heavy_tail_does_not_squash_the_histogram(tmp_path):
    from coreset_meg.anomaly.report import _histogram

    score = np.append(np.random.default_rng(0).normal(size=300), 358.0)
    fig, beyond = _histogram(score, 2.0, None)
    low, high = fig.axes[0].get_xlim()
    assert high < 10 and "358" in beyond  # the bulk is readable; the far score is named
    fig, beyond = _histogram(score[:-1], 2.0, None)
    assert beyond == ""


def test_score_resizes_images_to_the_trained_size(image_model, tmp_path, capsys, caplog):
    folder = tmp_path / "mixed"
    _images(folder, 2, 0, np.random.default_rng(2), size=8)
    Image.fromarray(np.zeros((16, 12), np.uint8), mode="L").save(folder / "big.png")
    code, out, err = run(["score", str(image_model), str(folder), "--json",
                          "--out", str(tmp_path / "s.csv")], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["resized"] == 1 and "resized 1 of 3 images" in caplog.text


def _benchmark_plots(folder):
    """pr_curves.png and auprc_bars.png of a made-up heldout run: 10 classes, 4 detectors and
    a published reference."""
    from coreset_meg.anomaly.benchmarks.protocols import plot_bars, plot_curves

    rng = np.random.default_rng(0)
    methods = ["MEG (core-set)", "MEG (random)", "isolation forest", "deep SVDD"]
    y = np.r_[np.zeros(80, int), np.ones(20, int)]
    curves = {c: {"y_test": y, "scores": {m: y + rng.normal(size=100) for m in methods}}
              for c in range(10)}  # fmt: skip
    plot_curves(curves, folder / "pr_curves.png", "pr", str, "held-out digit: PR curves")
    rows = [{"method": m, "cls": c, "seed": s, "auprc": rng.uniform(0.3, 0.9)}
            for m in methods for c in range(10) for s in range(2)]  # fmt: skip
    published = {"MEG (paper)": {c: 0.5 for c in range(10)}}
    plot_bars(pd.DataFrame(rows), "auprc", folder / "auprc_bars.png", str, published,
              "held-out digit: AUPRC")  # fmt: skip
    return folder / "pr_curves.png", folder / "auprc_bars.png"


def test_benchmark_legends_sit_below_the_plots(tmp_path, monkeypatch):
    """The legend goes under the axes, across the width: it covers no title and no curve."""
    from matplotlib.figure import Figure

    figures = []
    monkeypatch.setattr(
        "coreset_meg.anomaly.benchmarks.protocols.save_figure",
        lambda fig, path: (figures.append(fig), fig.savefig(path)),
    )
    for path in _benchmark_plots(tmp_path):
        assert path.is_file()
    for fig in figures:
        assert isinstance(fig, Figure)
        renderer = fig._get_renderer()  # the canvas it was saved with
        fig.draw(renderer)
        legend = fig.legends[0].get_window_extent(renderer)
        lowest = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes if ax.get_visible())
        assert legend.y1 <= lowest + 1  # below every visible axes, titles included
        assert legend.height < 0.2 * fig.bbox.height  # a few rows across, not a column


def test_fit_understands_class_folders(anomalib, tmp_path, capsys, caplog):
    """An anomalib root trains on train/good; a folder of class sub-folders trains on
    --normal-class, or on all of them with a warning that names them."""
    # One MEG iteration, so that the core-set sampler (built only when batches are drawn) logs
    # what it sees.
    argv = ["fit", str(anomalib), "--out", str(tmp_path / "a"), "--json", "--n-iter", "1"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert json.loads(out)["n_train"] == 24 and "training on" in caplog.text
    test = str(anomalib / "test")
    code, out, err = run(["fit", test, "--out", str(tmp_path / "b"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["n_train"] == 14
    assert (
        "3 class sub-folders (crack, good, hole)" in caplog.text and "--normal-class" in caplog.text
    )
    # Log lines that say what happened: classes by name, no "embedding" of raw values.
    assert "read 14 images in 3 classes (crack, good, hole)" in caplog.text
    assert "read 24 images from" in caplog.text and "1 classes" not in caplog.text
    # The sampler's line, grey images: both views, the 64 pixels and 1,280 features side by side
    assert "their 1344 values" in caplog.text and "pixels-v1" not in caplog.text
    code, out, err = run(["fit", test, "--normal-class", "good", "--out", str(tmp_path / "c"),
                          "--json", "-q"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["n_train"] == 6
    code, _, err = run(["fit", test, "--normal-class", "ok", "--out", str(tmp_path / "d")], capsys)
    assert code == 1 and "sub-folders: crack, good, hole" in err


def test_a_label_column_left_in_the_csv_is_named(table, tmp_path, capsys):
    code, _, err = run(["score", str(table / "model"), str(table / "test.csv"),
                        "--out", str(tmp_path / "s.csv")], capsys)  # fmt: skip
    assert code == 1 and "not seen in fit: 'label'" in err and "--label-column" in err


def test_fit_help_groups_its_options_and_shows_examples(capsys):
    code, out, _ = run(["fit", "--help"], capsys)
    assert code == 0
    sections = ["Data options:", "Model options:", "Training options:", "Output options:",
                "Advanced options:", "Examples:"]  # fmt: skip
    where = [out.index(s) for s in sections]
    assert where == sorted(where)

    def section(option):
        return max((s for s in sections if out.index(s) < out.index(option)), key=out.index)

    assert section("--normal-class") == "Data options:"
    assert section("--width") == "Model options:"
    assert section("--n-iter") == "Training options:"
    assert section("--report") == "Output options:"
    assert section("--prune-rounds") == "Advanced options:"
    assert "anomaly fit mvtec/bottle" in out


def test_torchscript_export_prints_no_deprecation_warnings(table, tmp_path):
    import warnings

    from coreset_meg.anomaly import export_model, load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_model(load_model(table / "model"), tmp_path / "m.pt", "torchscript")
    assert not [w for w in caught if "deprecated" in str(w.message)], caught
