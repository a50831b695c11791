"""PyOD's conventions (decision_scores_, threshold_, labels_, predict_proba, the adapter) and the
metrics' explicit score direction."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.special import erf
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from coreset_meg.anomaly import (
    MEGDetector,
    PyODAdapter,
    auprc_trapezoid,
    auroc,
    average_precision,
    evaluate,
    load_model,
    save_model,
)
from coreset_meg.anomaly._pyod import outlier_probability

TINY = dict(n_iter=3, n_energy_steps=1, batch_size=8, latent_dim=2, width=8, view="pixels")
# 51 training samples and contamination 0.1: the 10th percentile falls exactly on the 6th
# lowest training score (index 50 * 0.1 = 5), so one training sample ties with the threshold.
N_TRAIN, CONTAMINATION = 51, 0.1


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N_TRAIN, 2))
    outliers = rng.normal(size=(10, 2)) + 20.0
    return X, outliers


@pytest.fixture(scope="module")
def detector(data):
    X, _ = data
    return MEGDetector(**TINY, contamination=CONTAMINATION, random_state=0).fit(X)


# ----------------------------------------------------------------------------- metrics
METRICS = [auroc, average_precision, auprc_trapezoid]


@pytest.mark.parametrize("metric", METRICS)
def test_perfect_detector_scores_one_with_the_right_direction(metric, detector, data):
    X, outliers = data
    y = np.r_[np.zeros(len(X)), np.ones(len(outliers))]
    normality = detector.score_samples(np.vstack([X, outliers]))
    assert auroc(y, normality, higher="normal") == 1.0  # a perfect detector on this data
    assert metric(y, normality, higher="normal") == pytest.approx(1.0)
    assert metric(y, -normality, higher="anomalous") == metric(y, normality, higher="normal")


@pytest.mark.parametrize("metric", [*METRICS, evaluate])
def test_metrics_refuse_a_missing_or_unknown_direction(metric):
    y, score = [0, 0, 1], [0.1, 0.2, 0.9]
    with pytest.raises(TypeError, match="higher"):
        metric(y, score)
    for bad in ("anomaly", "high", True, None):
        with pytest.raises(ValueError, match="higher must be 'anomalous'.*or 'normal'"):
            metric(y, score, higher=bad)


def test_both_directions_agree_and_a_flip_is_visible():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=200)
    score = rng.normal(size=200) + y  # anomaly scores, informative but not perfect
    anomalous = evaluate(y, score, higher="anomalous")
    assert evaluate(y, -score, higher="normal") == anomalous
    assert 0.5 < anomalous["auroc"] < 1.0
    flipped = evaluate(y, score, higher="normal")["auroc"]
    assert flipped == pytest.approx(1.0 - anomalous["auroc"])


# ------------------------------------------------------------------- PyOD attributes
def test_training_scores_threshold_and_labels_follow_pyod(detector, data):
    X, _ = data
    det = detector
    assert det.decision_scores_.shape == (N_TRAIN,)
    assert det.decision_scores_.dtype == np.float64
    # The training scores the offset was computed from, as PyOD's anomaly scores.
    np.testing.assert_array_equal(det.decision_scores_, -det.score_samples(X))
    assert det.threshold_ == -det.offset_
    assert det.threshold_ == pytest.approx(np.percentile(det.decision_scores_, 90.0))
    assert det.labels_.shape == (N_TRAIN,)
    assert set(np.unique(det.labels_).tolist()) == {0, 1}
    assert det.labels_.sum() == 5  # samples strictly above the 90th percentile of 51
    # predict (+1 / -1) and labels_ (0 / 1) agree on the training data ...
    np.testing.assert_array_equal(det.labels_, (det.predict(X) == -1).astype(int))
    # ... and labels_ is 1 exactly where the training score is above the threshold.
    np.testing.assert_array_equal(det.labels_ == 1, det.decision_scores_ > det.threshold_)


def test_a_training_score_equal_to_the_threshold_is_an_inlier(detector, data):
    X, _ = data
    det = detector
    tied = np.flatnonzero(det.decision_scores_ == det.threshold_)
    assert len(tied) == 1  # the percentile falls on a sample (see N_TRAIN)
    assert det.labels_[tied[0]] == 0
    assert det.decision_function(X[tied])[0] == 0.0
    assert det.predict(X[tied])[0] == 1
    assert det.as_pyod().predict(X[tied])[0] == 0


def test_auto_contamination_labels_agree_with_predict(data):
    X, outliers = data
    det = MEGDetector(**TINY, random_state=1).fit(np.vstack([X, outliers[:2]]))
    Xtrain = np.vstack([X, outliers[:2]])
    np.testing.assert_array_equal(det.labels_, (det.predict(Xtrain) == -1).astype(int))
    np.testing.assert_array_equal(det.labels_ == 1, det.decision_scores_ > det.threshold_)
    assert det.labels_[-2:].tolist() == [1, 1]


@pytest.mark.parametrize("method", ["linear", "unify"])
def test_predict_proba_follows_pyod_definitions(detector, data, method):
    X, outliers = data
    det = detector
    Xall = np.vstack([X, outliers])
    proba = det.predict_proba(Xall, method=method)
    assert proba.shape == (len(Xall), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()
    train, score = det.decision_scores_, -det.score_samples(Xall)
    if method == "linear":
        expected = (score - train.min()) / (train.max() - train.min())
    else:
        expected = erf((score - train.mean()) / (train.std() * np.sqrt(2)))
    np.testing.assert_allclose(proba[:, 1], np.clip(expected, 0, 1))
    assert (proba[len(X) :, 1] == 1.0).all()  # far outliers
    # Higher anomaly score, higher P(anomalous).
    order = np.argsort(score)
    assert (np.diff(proba[order, 1]) >= 0).all()


def test_predict_proba_linear_spans_the_training_range_and_checks_method(detector, data):
    X, _ = data
    p = detector.predict_proba(X)[:, 1]  # method="linear" by default
    assert p.min() == 0.0 and p.max() == 1.0
    with pytest.raises(ValueError, match="method must be one of"):
        detector.predict_proba(X, method="sigmoid")


def test_outlier_probability_edge_cases():
    # A constant training score (zero range and spread) and scores that are not numbers.
    proba = outlier_probability(np.zeros(5), np.array([-1.0, 0.0, 2.0, np.nan]), "linear")
    np.testing.assert_array_equal(proba[:, 1], [0.0, 0.0, 1.0, 1.0])
    proba = outlier_probability(np.zeros(5), np.array([-1.0, 0.0, 2.0, np.nan]), "unify")
    np.testing.assert_array_equal(proba[:, 1], [0.0, 0.0, 1.0, 1.0])


def test_unfitted_detector_has_no_pyod_attributes():
    det = MEGDetector(**TINY)
    for name in ("decision_scores_", "threshold_", "labels_"):
        assert not hasattr(det, name)
    with pytest.raises(NotFittedError):
        det.predict_proba([[0.0, 0.0]])


# ------------------------------------------------------------------------- adapter
def test_adapter_fits_a_clone_and_speaks_pyod(data):
    X, outliers = data
    inner = MEGDetector(**TINY, contamination=CONTAMINATION, random_state=0)
    clf = PyODAdapter(inner).fit(X)
    assert not hasattr(inner, "offset_")  # the parameter is left unfitted
    reference = clone(inner).fit(X)
    Xall = np.vstack([X, outliers])
    np.testing.assert_array_equal(clf.decision_function(Xall), -reference.score_samples(Xall))
    np.testing.assert_array_equal(clf.decision_scores_, reference.decision_scores_)
    assert clf.threshold_ == reference.threshold_
    np.testing.assert_array_equal(clf.labels_, reference.labels_)
    np.testing.assert_array_equal(clf.predict(X), clf.labels_)
    pred = clf.predict(Xall)
    assert pred.dtype.kind == "i" and pred[len(X) :].tolist() == [1] * len(outliers)
    np.testing.assert_array_equal(pred, clf.decision_function(Xall) > clf.threshold_)
    np.testing.assert_array_equal(
        clf.predict_proba(Xall, method="unify"), reference.predict_proba(Xall, method="unify")
    )
    assert clf.n_features_in_ == 2


def test_adapter_clone_params_and_pickle(data):
    X, _ = data
    clf = PyODAdapter(MEGDetector(**TINY, random_state=0))
    assert clf.get_params()["detector__n_iter"] == 3
    copy = clone(clf)
    assert copy.detector is not clf.detector
    assert copy.detector.get_params() == clf.detector.get_params()
    assert clone(PyODAdapter()).detector is None
    with pytest.raises(NotFittedError):
        clf.decision_function(X)
    assert not hasattr(clf, "decision_scores_")
    clf.fit(X)
    assert not hasattr(clone(clf), "detector_")
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.decision_function(X), clf.decision_function(X))
    np.testing.assert_array_equal(again.labels_, clf.labels_)


def test_as_pyod_wraps_the_fitted_detector_without_training(detector, data):
    X, _ = data
    clf = detector.as_pyod()
    assert clf.detector_ is detector
    np.testing.assert_array_equal(clf.labels_, detector.labels_)
    np.testing.assert_array_equal(clf.predict(X), detector.labels_)
    with pytest.raises(NotFittedError):
        MEGDetector(**TINY).as_pyod()


# ---------------------------------------------------------------------- persistence
def test_pyod_attributes_survive_save_and_load(tmp_path, detector, data):
    X, outliers = data
    Xall = np.vstack([X, outliers])
    save_model(detector, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    np.testing.assert_array_equal(loaded.decision_scores_, detector.decision_scores_)
    assert loaded.threshold_ == detector.threshold_
    np.testing.assert_array_equal(loaded.labels_, detector.labels_)
    np.testing.assert_array_equal(loaded.labels_, (loaded.predict(X) == -1).astype(int))
    for method in ("linear", "unify"):
        np.testing.assert_array_equal(
            loaded.predict_proba(Xall, method=method), detector.predict_proba(Xall, method=method)
        )
    np.testing.assert_array_equal(loaded.as_pyod().predict(Xall), detector.as_pyod().predict(Xall))


def test_a_model_without_training_scores_says_so(detector, data):
    X, _ = data
    state, weights = detector.fitted_state()
    del weights["training"]  # as in files saved before the training scores were kept
    old = MEGDetector.from_fitted_state(state, weights)
    assert old.threshold_ == detector.threshold_
    np.testing.assert_array_equal(old.predict(X), detector.predict(X))
    with pytest.raises(AttributeError, match="saved without the training scores"):
        old.labels_  # noqa: B018
    with pytest.raises(AttributeError, match="saved without the training scores"):
        old.predict_proba(X)
