"""The core-set energy: a mixture on training samples times a shrunk-covariance Gaussian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils import check_random_state

from coreset_meg.anomaly import MEGDetector, auroc, load_model, save_model
from coreset_meg.gan import MEGConfig, MEGTrainer
from coreset_meg.gan.networks import CoresetEnergy, ViewsEnergy, build_networks
from coreset_meg.gan.trainer import coreset_energy_parts, place_views, seed_from

FAST = dict(n_iter=5, n_energy_steps=1, batch_size=16, latent_dim=2, width=8)
#: FAST as detector parameters: the trainer's settings in its training config.
DET = dict(n_iter=5, training=MEGConfig.from_params(**{**FAST, "n_iter": None}))


def _subspace_toy(seed: int = 0):
    """Normal data on a 2-d plane of a 64-d space; outliers a short step off the plane, inside
    the data's bounding box, and far points in random directions."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(64, 2)))[0].T  # (2, 64), orthonormal rows
    X = rng.uniform(-1, 1, size=(600, 2)) @ basis
    normal = rng.uniform(-1, 1, size=(100, 2)) @ basis
    off = rng.normal(size=(100, 64))
    off -= off @ basis.T @ basis  # orthogonal to the plane
    off /= np.linalg.norm(off, axis=1, keepdims=True)
    outliers = rng.uniform(-1, 1, size=(100, 2)) @ basis + 0.15 * off
    far = rng.normal(size=(40, 64)) * np.repeat([10.0, 1000.0], 20)[:, None]
    return X, normal, outliers, far


def test_energy_is_the_soft_minimum_squared_distance_plus_the_gaussian_term():
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    net = CoresetEnergy(2)
    net.set_centres(centres, temperature=1e-3)
    x = torch.tensor([[1.0, 0.0], [4.0, 2.0], [-3.0, 0.0]])
    np.testing.assert_allclose(net(x).detach().numpy(), [1.0, 4.0, 9.0], atol=1e-2)
    precision = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    net.set_centres(centres, 1e-3, mean=torch.zeros(2), precision=precision, gaussian_weight=3.0)
    gauss = 3.0 * (2.0 * x[:, 0] ** 2 + 0.5 * x[:, 1] ** 2)
    np.testing.assert_allclose(
        net(x).detach().numpy(), (torch.tensor([1.0, 4.0, 9.0]) + gauss).numpy(), atol=1e-2
    )


def test_loading_a_state_takes_its_number_of_centres():
    net = CoresetEnergy(3)
    net.set_centres(torch.randn(7, 3), 0.5, torch.zeros(3), torch.eye(3, dtype=torch.float64), 1.0)
    fresh, _, _ = build_networks((3,), latent_dim=2, kind="coreset", width=8)
    fresh.load_state_dict(net.state_dict())
    x = torch.randn(5, 3)
    torch.testing.assert_close(fresh(x), net(x))


def test_parts_use_every_sample_by_default_and_k_center_when_capped():
    X = torch.randn(50, 4)
    parts = coreset_energy_parts(X, MEGConfig.from_params(gaussian_weight=1.0), seed=0)
    assert torch.equal(parts["centres"], X)
    assert parts["temperature"] > 0 and parts["gaussian_weight"] > 0
    capped = coreset_energy_parts(X, MEGConfig.from_params(max_centres=10), seed=0)
    assert capped["centres"].shape == (10, 4)
    for weight in (0.0, None):  # None: the detector's "auto", unresolved
        alone = coreset_energy_parts(X, MEGConfig.from_params(gaussian_weight=weight), seed=0)
        assert "precision" not in alone


def test_subspace_outliers_and_far_points_score_as_anomalies():
    """The issue's toy: outliers off the data's plane but inside its bounding box. Far points
    (norms 10 to 1000 times the data's) must never look normal: the energy rises away from the
    data in every direction, which an MLP energy does not guarantee (on 1,280-d image features
    it ranked anomalies backwards)."""
    X, normal, outliers, far = _subspace_toy()
    det = MEGDetector(**DET, random_state=0).fit(X)
    y = np.r_[np.zeros(len(normal)), np.ones(len(outliers))]
    assert auroc(y, det.score_samples(np.vstack([normal, outliers])), higher="normal") > 0.99
    assert det.score_samples(far).max() < det.score_samples(X).min()
    assert (det.predict(far) == -1).all()


def test_meg_trains_the_weights_and_temperature_only():
    X = np.random.default_rng(0).normal(size=(80, 3)).astype(np.float32)
    trainer = MEGTrainer(MEGConfig.from_params(**FAST, learning_rate=1e-2), (3,), random_state=0)
    trainer.fit(X)
    net = trainer.energy_net
    torch.testing.assert_close(net.centres, torch.from_numpy(X))  # all samples, unchanged
    assert net.log_weight.detach().abs().max() > 0  # learned
    assert len(trainer.snapshots) == 1


def test_both_view_puts_pixels_and_unit_features_side_by_side_at_one_scale(tmp_path):
    """view='both': the flattened pixels, then the unit-length features, each part divided by
    the square root of its median nearest-neighbour squared distance; the energy reads the two
    parts apart and together (a ViewsEnergy split after the pixels); uint8 scores as float
    images, and the same after save and load."""
    from coreset_meg.gan.trainer import nearest_neighbour_sq_distance

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(40, 1, 6, 6), dtype=np.uint8)
    scaled = images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    det = MEGDetector(**DET, view="both", features="efficientnet-lite0@32", random_state=0)
    det.fit(images)
    features = det._embed(scaled)
    assert det.view_ == "both" and det.network_shape_ == (36 + 1280,) and not det.unit_norm_
    pixels = scaled.reshape(40, -1)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    for part, scale in ((pixels, det.scale_[:36]), (unit, det.scale_[36:])):
        want = np.sqrt(nearest_neighbour_sq_distance(torch.from_numpy(part)))
        np.testing.assert_allclose(scale, want, rtol=1e-5)
    assert abs(det.scale_[0] - det.scale_[-1]) > 0.1  # two different scales
    np.testing.assert_array_equal(det.shift_, 0)
    both = np.concatenate([pixels / det.scale_[0], unit / det.scale_[-1]], axis=1)
    np.testing.assert_allclose(det._validate(images, reset=False), both, rtol=1e-4, atol=1e-5)
    assert isinstance(det.energy_net_, ViewsEnergy) and det.energy_net_.split == 36
    assert det.views_ == 36
    np.testing.assert_allclose(
        det.score_samples(images), det.score_samples(scaled), rtol=1e-5, atol=1e-5
    )
    save_model(det, tmp_path / "m")
    np.testing.assert_allclose(
        load_model(tmp_path / "m").score_samples(images), det.score_samples(images), rtol=1e-5
    )
    with pytest.raises(ValueError, match="view='both' needs images"):
        MEGDetector(**DET, view="both").fit(rng.normal(size=(20, 4)))


def test_features_view_scores_like_the_features_given_directly(tmp_path):
    """Images through the default view (features scaled to unit length) score as their features
    given as vectors with l2 scaling; uint8 images as the same images in [-1, 1]; and a saved
    model scores the same."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 3, 32, 32), dtype=np.uint8)  # colour: features
    scaled = images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    det = MEGDetector(**DET, features="efficientnet-lite0@32", random_state=0).fit(images)
    assert det.view_ == "features" and det.network_shape_ == (1280,) and det.unit_norm_
    assert det.energy_net_.precision_factor.shape[1] == 1280  # the Gaussian term is on
    features = det._embed(scaled)
    vectors = MEGDetector(**DET, scaling="l2", gaussian_weight=0.3, random_state=0)
    vectors.fit(features)
    np.testing.assert_allclose(
        det.score_samples(images), vectors.score_samples(features), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        det.score_samples(images), det.score_samples(scaled), rtol=1e-4, atol=1e-4
    )
    save_model(det, tmp_path / "m")
    np.testing.assert_allclose(
        load_model(tmp_path / "m").score_samples(images), det.score_samples(images), rtol=1e-5
    )
    # Grey images: pixels and features side by side for the core-set energy (chosen on both
    # MNIST validation protocols); the networks with weights keep the pixels.
    grey = MEGDetector(**DET, features="efficientnet-lite0@32", random_state=0)
    assert grey.fit(images[:, :1]).view_ == "both"
    assert grey.network_shape_ == (32 * 32 + 1280,)
    mlp = MEGDetector(**DET, network="mlp", random_state=0).fit(images[:, :1])
    assert mlp.view_ == "pixels" and mlp.network_shape_ == (1, 32, 32)
    with pytest.raises(ValueError, match="view='features' needs images"):
        MEGDetector(**DET, view="features").fit(rng.normal(size=(20, 4)))


def test_default_fit_trains_nothing_and_scores_as_the_placed_energy(tmp_path):
    """The default (n_iter=None) resolves to 0 for the core-set energy: no MEG training, no
    generator kept, and the scores are exactly those of the energy as its centres are placed
    (what a trainer with zero steps holds)."""
    X = np.random.default_rng(0).normal(size=(120, 5)).astype(np.float32)
    det = MEGDetector(random_state=0).fit(X)
    assert det.n_iter_ == 0 and det.history_ == [] and det.generator_ is None
    Xs = det._validate(X, reset=False)  # the detector's own scaling
    config = det._config()
    energy = CoresetEnergy(Xs.shape[1])
    seed = seed_from(check_random_state(0))  # the trainer's seed, as fit draws it
    energy.set_centres(**coreset_energy_parts(torch.from_numpy(Xs), config, seed))
    with torch.no_grad():
        expected = energy(torch.from_numpy(Xs)).numpy()
        got = det.energy_net_(torch.from_numpy(Xs)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # Saved without a generator; the loaded model scores the same.
    save_model(det, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.generator_ is None and loaded.n_iter_ == 0
    np.testing.assert_allclose(loaded.score_samples(X), det.score_samples(X), rtol=1e-6)


def test_meg_training_barely_moves_the_core_set_energy():
    """Why the default trains nothing: 30 MEG iterations leave the ranking of the untrained
    energy in place (rank correlation above 0.999; measured about 0.9999)."""
    X, normal, outliers, _ = _subspace_toy()
    test = np.vstack([normal, outliers])
    untrained = MEGDetector(random_state=0).fit(X).score_samples(test)
    trained = MEGDetector(**{**DET, "n_iter": 30}, random_state=0).fit(X)
    assert trained.n_iter_ == 30 and trained.generator_ is not None
    ranks = [np.argsort(np.argsort(s)) for s in (untrained, trained.score_samples(test))]
    assert np.corrcoef(*ranks)[0, 1] > 0.999


def test_a_trainer_with_nothing_to_train_draws_no_batches():
    """n_iter=0: the centres are placed and kept as the one snapshot; no core-set sampler is
    built (its projection of every sample would be work for nothing)."""
    X = np.random.default_rng(0).normal(size=(80, 3)).astype(np.float32)
    trainer = MEGTrainer(MEGConfig.from_params(**{**FAST, "n_iter": 0}), (3,), random_state=0)
    trainer.fit(X)
    assert trainer.sampler is None and trainer.step == 0 and len(trainer.snapshots) == 1
    torch.testing.assert_close(trainer.snapshots[0]["centres"], torch.from_numpy(X))


@pytest.mark.parametrize("network", ["mlp", "auto"])
def test_zero_iterations_need_the_core_set_energy(network):
    with pytest.raises(ValueError, match="n_iter=0 trains nothing"):
        MEGDetector(network=network, n_iter=0).fit(np.zeros((10, 2)))
    assert MEGConfig.from_params(network=network).schedule.n_iter == 100


def _two_view_data(rng, n):
    """Rows ``[u | v]``: ``u`` 40 noisy dimensions, ``v`` 2 tight ones, both centred."""
    return np.concatenate([rng.normal(size=(n, 40)), 0.2 * rng.normal(size=(n, 2))], 1)


def test_views_energy_flags_an_anomaly_that_only_one_view_shows():
    """Anomalies off in the small view only (drowned in the joint distance by the other view's
    noise) and anomalies off in the large view only: the joint mixture alone misses the first
    kind; ViewsEnergy ranks both kinds above the normal samples."""
    rng = np.random.default_rng(0)
    train = _two_view_data(rng, 400).astype(np.float32)
    normal = _two_view_data(rng, 200)
    small = _two_view_data(rng, 100)
    small[:, 40:] += 1.5  # 7.5 spreads off in v, normal in u
    large = _two_view_data(rng, 100)
    large[:, :40] *= 1.6  # off in u, normal in v
    X = torch.from_numpy(np.concatenate([normal, small, large]).astype(np.float32))
    config = MEGConfig.from_params(gaussian_weight=0.0)
    joint = CoresetEnergy(42)
    joint.set_centres(**coreset_energy_parts(torch.from_numpy(train), config, 0))
    views = ViewsEnergy(42, split=40).eval()  # scoring: the tail read-out
    place_views(views, torch.from_numpy(train), config, 0)
    y = np.r_[np.zeros(200), np.ones(200)]
    with torch.no_grad():
        e_joint, e_views = joint(X).numpy(), views(X).numpy()
    for kind in (slice(200, 300), slice(300, 400)):
        rows = np.r_[0:200, np.arange(400)[kind]]
        assert auroc(y[rows], e_views[rows], higher="anomalous") > 0.97
    small_rows = np.r_[0:200, 200:300]
    assert auroc(y[small_rows], e_joint[small_rows], higher="anomalous") < 0.9


def test_views_energy_is_calibrated_on_training_samples_left_out():
    """Each view's tail score of the calibration samples themselves is about -log of a uniform
    share (mean near 1), not near 0 as it would be if each sample counted itself; the score
    rises monotonically and without ties past the largest training energy."""
    rng = np.random.default_rng(1)
    train = torch.from_numpy(_two_view_data(rng, 300).astype(np.float32))
    net = ViewsEnergy(42, split=40).eval()
    place_views(net, train, MEGConfig.from_params(gaussian_weight=0.3), 0)
    assert net.calibration.shape == (3, 300)
    with torch.no_grad():
        tail = net.tail_scores(net.view_energies(train))
        assert 0.7 < float(tail.mean()) < 1.3
        far = train[:1] * torch.linspace(2, 6, 5)[:, None]  # one sample, ever farther out
        scores = net(far).numpy()
        assert np.all(np.diff(scores) > 0)
        # training mode: the three energies' sum (what MEG can train), not the read-out
        torch.testing.assert_close(net.train()(far), net.view_energies(far).sum(0))
    with pytest.raises(ValueError, match="split"):
        ViewsEnergy(42, split=42)
