"""MEGDetector: scikit-learn contract, behaviour on toy data, persistence."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from coreset_meg.anomaly import (
    MEGDetector,
    ModelFileError,
    auroc,
    load_model,
    persistence,
    save_model,
)
from coreset_meg.anomaly.scoring import energy_scores
from coreset_meg.datasets import grid_mixture, load_benchmark

TINY = dict(n_iter=3, n_energy_steps=1, batch_size=8, latent_dim=2, width=8, view="pixels")


# Float32 network outputs can differ in the last bit between batch sizes (the BLAS kernel
# depends on the batch); the averaged standardised score then moves by about 1e-6, above this
# check's absolute tolerance of 1e-7. test_scores_do_not_depend_on_batch_or_order checks the
# same property at rtol 1e-5.
EXPECTED_FAILED_CHECKS = {
    "check_methods_subset_invariance": "float32 rounding differs between batch sizes (~1e-6)"
}


@parametrize_with_checks(
    [MEGDetector(**TINY, random_state=0)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def mixture_detector():
    mixture = grid_mixture(side=3, spacing=2.0, std=0.05)
    X, _ = mixture.sample(1500, random_state=0)
    det = MEGDetector(n_iter=400, width=64, latent_dim=8, random_state=0).fit(X)
    return det, mixture, X


def test_points_far_from_every_mode_score_as_more_anomalous(mixture_detector):
    det, mixture, _ = mixture_detector
    at_modes = mixture.centers
    far = np.array([[6.0, 6.0], [-6.0, 5.0], [0.0, -7.0], [7.0, 0.0]], dtype=np.float32)
    s_modes, s_far = det.score_samples(at_modes), det.score_samples(far)
    assert s_far.max() < s_modes.min()
    assert (det.predict(far) == -1).all()


def test_scores_vary_and_weights_move(mixture_detector):
    det, _, X = mixture_detector
    scores = det.score_samples(X[:200])
    assert np.std(scores) > 1e-3
    fresh = MEGDetector(**TINY, random_state=0)
    fresh.fit(X[:50])
    untrained = clone(fresh)
    untrained.set_params(n_iter=1, learning_rate=1e-12).fit(X[:50])
    assert any(
        not torch.equal(p, q)
        for p, q in zip(fresh.energy_net_.parameters(), untrained.energy_net_.parameters())
    )


def test_digits_heldout_auroc_well_above_chance():
    # 150 iterations sat on a cliff edge (AUROC 0.48-0.80 over seeds 0-5); after 300 it was
    # 0.92-0.99 over the same seeds, so 0.85 leaves a margin across seeds and versions.
    split = load_benchmark("digits", "heldout", 0, random_state=0)
    det = MEGDetector(n_iter=300, random_state=0).fit(split.X_train)
    score = auroc(split.y_test, det.score_samples(split.X_test), higher="normal")
    assert score > 0.85


def test_predict_matches_decision_function_and_contamination(mixture_detector):
    det, _, X = mixture_detector
    det2 = clone(det).set_params(contamination=0.1, n_iter=5)
    det2.fit(X)
    pred = det2.predict(X)
    assert abs((pred == -1).mean() - 0.1) < 0.01
    np.testing.assert_array_equal(pred == -1, det2.decision_function(X) < 0)


def test_scores_do_not_depend_on_batch_or_order(mixture_detector):
    det, _, X = mixture_detector
    full = det.score_samples(X[:300])
    order = np.random.default_rng(0).permutation(300)
    np.testing.assert_allclose(det.score_samples(X[:300][order]), full[order], rtol=1e-5)
    pieces = np.concatenate([det.score_samples(X[i : min(i + 7, 300)]) for i in range(0, 300, 7)])
    np.testing.assert_allclose(pieces, full, rtol=1e-5, atol=1e-6)


def test_clone_pickle_and_pipeline(mixture_detector):
    det, _, X = mixture_detector
    params = clone(det).get_params()
    assert params == det.get_params()
    assert not hasattr(clone(det), "offset_")
    restored = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(restored.score_samples(X[:50]), det.score_samples(X[:50]))
    pipe = make_pipeline(MinMaxScaler(), MEGDetector(**TINY, random_state=0)).fit(X)
    assert set(np.unique(pipe.predict(X))) <= {-1, 1}


def test_fit_twice_with_same_seed_is_identical():
    X = np.random.default_rng(0).normal(size=(60, 3))
    a = MEGDetector(**TINY, random_state=5).fit(X).score_samples(X)
    b = MEGDetector(**TINY, random_state=5).fit(X).score_samples(X)
    np.testing.assert_array_equal(a, b)


def test_gradnorm_score_and_image_input():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(30, 1, 28, 28)).astype(np.float32)
    det = MEGDetector(**TINY, score_type="gradnorm", random_state=0).fit(images)
    assert det.input_shape_ == (1, 28, 28)
    flat = det.score_samples(images.reshape(30, -1))
    np.testing.assert_allclose(flat, det.score_samples(images), rtol=1e-6)
    per_net = np.stack(
        [energy_scores(net, images, score="gradnorm") for net in det.energy_nets_], axis=1
    )
    assert (per_net >= 0).all()  # squared norms
    assert det.energy_mean_.shape == (len(det.energy_nets_), 1)
    expected = -((per_net - det.energy_mean_[:, 0]) / det.energy_std_[:, 0]).mean(axis=1)
    np.testing.assert_allclose(flat, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="1024 features.*expecting 784"):
        det.score_samples(rng.normal(size=(3, 1, 32, 32)))


def test_energy_plus_gradnorm_is_the_mean_of_both_scores(tmp_path):
    # The score type does not change training, so three fits with one seed share their
    # networks, and the sum score is the average of the two standardised single scores.
    images = np.random.default_rng(1).uniform(-1, 1, size=(40, 1, 8, 8)).astype(np.float32)
    fitted = {
        kind: MEGDetector(**TINY, score_type=kind, random_state=3).fit(images)
        for kind in ("energy", "gradnorm", "energy+gradnorm")
    }
    both = fitted["energy+gradnorm"]
    assert both.energy_mean_.shape == (len(both.energy_nets_), 2)
    single = (fitted["energy"].score_samples(images) + fitted["gradnorm"].score_samples(images)) / 2
    np.testing.assert_allclose(both.score_samples(images), single, rtol=1e-5, atol=1e-6)
    both.save(tmp_path / "model")
    loaded = MEGDetector.load(tmp_path / "model")
    np.testing.assert_allclose(loaded.score_samples(images), both.score_samples(images), rtol=1e-6)


def test_wrong_feature_count_and_nan_are_rejected():
    X = np.random.default_rng(0).normal(size=(40, 3))
    det = MEGDetector(**TINY, random_state=0).fit(X)
    with pytest.raises(ValueError, match="features"):
        det.score_samples(X[:, :2])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MEGDetector(**TINY).fit(bad)


# ---------------------------------------------------------------------------- persistence
def test_save_load_round_trip_gives_identical_scores(tmp_path, mixture_detector):
    det, _, X = mixture_detector
    save_model(det, tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    np.testing.assert_array_equal(loaded.score_samples(X[:100]), det.score_samples(X[:100]))
    np.testing.assert_array_equal(loaded.predict(X[:100]), det.predict(X[:100]))
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["offset"] == det.offset_
    assert "torch" in meta["versions"]
    assert meta["training"]["torch_threads"] == torch.get_num_threads() == loaded.torch_threads_
    lines = (tmp_path / "model" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [r["step"] for r in det.history_]
    assert loaded.get_params() == det.get_params()


def test_crash_mid_save_leaves_old_model_intact(tmp_path, mixture_detector, monkeypatch):
    det, _, X = mixture_detector
    path = tmp_path / "model"
    save_model(det, path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    other = clone(det).set_params(n_iter=2).fit(X[:100])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(persistence, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model(other, path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary leftovers


def test_corrupt_or_foreign_model_files_give_clear_errors(tmp_path, mixture_detector):
    det, _, _ = mixture_detector
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="model.json is missing"):
        load_model(tmp_path / "empty")
    save_model(det, tmp_path / "m")
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(tmp_path / "m")
    save_model(det, tmp_path / "f")
    (tmp_path / "f" / "model.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelFileError, match="not a coreset-meg-model"):
        load_model(tmp_path / "f")
    (tmp_path / "f" / "model.json").write_text("{truncated")
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(tmp_path / "f")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(offset=float("nan")), "offset"),
        (lambda c: c.update(format_version=-1), "format_version"),
        (lambda c: c.update(format_version="2"), "format_version"),
        (lambda c: c["preprocessing"].update(scale=[0.0, 1.0]), "scale"),
        (lambda c: c["preprocessing"].update(scale=[1.0]), "scale"),
        (lambda c: c.update(energy_std=[[0.0]] * len(c["energy_std"])), "energy_std"),
        (lambda c: c["settings"]["networks"].update(width=0), "width"),
    ],
)
def test_tampered_model_files_are_refused(tmp_path, mixture_detector, edit, message):
    det, _, _ = mixture_detector
    save_model(det, tmp_path / "m")
    path = tmp_path / "m" / "model.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=message):
        load_model(tmp_path / "m")


def test_non_finite_scores_are_never_inliers(mixture_detector):
    det, _, X = mixture_detector
    tiny = clone(det).set_params(n_iter=2).fit(X[:100] * 1e-3)  # scale_ about 1e-3
    with pytest.raises(ValueError, match="overflow"):
        tiny.score_samples(np.full((1, 2), 1e37))
    broken = clone(det).set_params(n_iter=2).fit(X[:100])
    broken.offset_ = float("nan")
    assert (broken.predict(X[:5]) == -1).all()
    with pytest.raises(ValueError, match="unknown device"):
        MEGDetector(n_iter=1, device="tpu").fit(X[:10])


def test_uint8_images_score_as_the_same_images_in_the_documented_range():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(80, 1, 8, 8), dtype=np.uint8)
    scaled = raw.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    det = MEGDetector(**TINY, random_state=0).fit(raw)
    np.testing.assert_allclose(det.score_samples(raw), det.score_samples(scaled), rtol=0, atol=0)
    other = MEGDetector(**TINY, random_state=0).fit(scaled)
    np.testing.assert_array_equal(other.score_samples(scaled), det.score_samples(scaled))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        det.score_samples(raw.astype(np.float32))  # 0..255 as floats: not the documented range


def test_feature_names_are_kept_and_checked(tmp_path):
    import pandas as pd

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 3)), columns=["a", "b", "c"])
    det = MEGDetector(**TINY, random_state=0).fit(X)
    with pytest.raises(ValueError, match="column 0 is 'b', expected 'a'"):
        det.score_samples(X[["b", "a", "c"]])
    with pytest.raises(ValueError, match="column 2 is 'd'"):
        det.score_samples(X.rename(columns={"c": "d"}))
    np.testing.assert_array_equal(det.score_samples(X.to_numpy()), det.score_samples(X))
    save_model(det, tmp_path / "m")
    assert list(load_model(tmp_path / "m").feature_names_in_) == ["a", "b", "c"]
