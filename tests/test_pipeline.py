"""MEGDetector is a pipeline of parts: input -> view (features) -> scaling -> energy.

Built by hand from :mod:`coreset_meg.anomaly.preprocessing` and :mod:`coreset_meg.anomaly.energy`,
on small real data (a table, MNIST digits with the default both view, CIFAR-10 images with the
default features view), the parts score exactly as the detector does.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_breast_cancer
from sklearn.pipeline import Pipeline

from coreset_meg.anomaly import MEGDetector
from coreset_meg.anomaly.energy import MEGEnergy
from coreset_meg.anomaly.preprocessing import (
    FeatureTransformer,
    InputTransformer,
    Scaler,
    resolve_settings,
)
from coreset_meg.datasets import read_idx
from coreset_meg.gan import MEGConfig

FEATURES = "efficientnet-lite0@32"  # small images: fast on a CPU


def by_hand(X_train, X_test, features=FEATURES):
    """Scores and threshold of the parts fitted by hand at the detector's defaults, with the
    resolved settings and the trainer's config they used."""
    inputs = InputTransformer().fit(X_train)
    resolved = resolve_settings(inputs.input_shape_)  # the "auto" settings
    preprocess = Pipeline(
        [
            ("inputs", inputs),
            ("view", FeatureTransformer(view=resolved.view, features=features)),
            ("scaling", Scaler(scaling=resolved.scaling, n_pixels=inputs.n_features_in_)),
        ]
    )
    X = preprocess.fit_transform(X_train)
    config = MEGConfig.from_params(gaussian_weight=resolved.gaussian_weight)
    energy = MEGEnergy(config=config, views=resolved.views, random_state=0, device="cpu").fit(X)
    return energy.score_samples(preprocess.transform(X_test)), energy.offset_, resolved, config


def check_same(X_train, X_test, view):
    det = MEGDetector(features=FEATURES, random_state=0, device="cpu").fit(X_train)
    scores, offset, resolved, config = by_hand(X_train, X_test)
    assert resolved.view == det.view_ == view
    assert config.to_dict() == det._config().to_dict()
    np.testing.assert_allclose(scores, det.score_samples(X_test), rtol=1e-6, atol=1e-7)
    assert offset == pytest.approx(det.offset_, rel=1e-6)
    assert np.std(scores) > 0


def test_a_table_scores_as_the_detector():
    X, y = load_breast_cancer(return_X_y=True)
    check_same(X[y == 1][:120], np.concatenate([X[y == 1][120:150], X[y == 0][:30]]), "pixels")


def test_grey_images_with_the_both_view_score_as_the_detector(mnist_dir):
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:90]  # uint8 (n, 28, 28)
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")[:90]
    train, test = images[labels == 0], images[:40]
    check_same(train, test, "both")


def test_colour_images_with_the_features_view_score_as_the_detector(cifar_jpeg_dir):
    def load(cls, n):
        files = sorted((cifar_jpeg_dir / "test" / cls).iterdir())[:n]
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])

    train = load("airplane", 30)  # (n, 32, 32, 3) uint8, channels last
    test = np.concatenate([load("airplane", 40)[30:], load("frog", 10)])
    check_same(train, test, "features")


def test_scoring_changes_no_state(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    det = MEGDetector(features=FEATURES, cache_dir=str(tmp_path), random_state=0, device="cpu")
    det.fit(images)
    parts = (det, det.input_transformer_, det.feature_transformer_, det.scaler_)
    before = [dict(vars(part)) for part in parts]
    det.score_samples(images[::-1])
    after = [dict(vars(part)) for part in parts]
    assert [b.keys() for b in before] == [a.keys() for a in after]
    for b, a in zip(before, after):
        assert all(a[k] is v for k, v in b.items())  # the same objects, nothing replaced
    assert det.embedder_ is not None  # set up in fit
