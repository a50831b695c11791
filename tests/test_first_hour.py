"""What a new user meets in the first hour: default fits, threshold metrics, galleries of
mistakes, inputs that are understood, and the quickstart documents (issue 29)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anomaly.cli import main


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
    assert code == 0, err and json.loads(out)["n"] == 200
