"""Mirror-mean and joined features: what they compute, their names, their torch modules, and a
detector that uses them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coreset_meg.features.pretrained as pretrained
from coreset_meg.features import JoinedFeatures, MirrorMean, PixelEmbedder, make_embedder
from coreset_meg.features.pretrained import FeatureEmbedder


def _tiny(seed: int, width: int = 4) -> FeatureEmbedder:
    torch.manual_seed(seed)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, width, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )  # fmt: skip
    return FeatureEmbedder(network, name=f"tiny{seed}", weights_sha256="none", image_size=12,
                           mean=127.0, std=60.0, backend="torch")  # fmt: skip


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(6, 3, 10, 10)).astype(np.float32)


def test_mirror_mean_is_the_mean_of_an_image_and_its_mirror(images):
    inner = _tiny(0)
    got = MirrorMean(inner)(images)
    want = (_unit(inner(images)) + _unit(inner(images[..., ::-1].copy()))) / 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # a mirror image has the same features; an image symmetric left-right, its own
    np.testing.assert_allclose(MirrorMean(inner)(images[..., ::-1].copy()), got, atol=1e-6)
    symmetric = (images + images[..., ::-1]) / 2
    np.testing.assert_allclose(
        MirrorMean(inner)(symmetric), _unit(inner(symmetric)), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(got, _unit(inner(images)), atol=1e-3)  # the mirror does change them


def test_joined_features_put_unit_length_parts_side_by_side(images):
    a, b = _tiny(0, 4), _tiny(1, 6)
    got = JoinedFeatures([a, b])(images)
    assert got.shape == (6, 10)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(got[:, :4] * np.sqrt(2), _unit(a(images)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[:, 4:] * np.sqrt(2), _unit(b(images)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        JoinedFeatures([a])


def test_names_build_them_and_their_identities_differ():
    mirror = make_embedder("mirror:pixels")
    joined = make_embedder("pixels + mirror:pixels")
    assert isinstance(mirror, MirrorMean) and isinstance(mirror.inner, PixelEmbedder)
    assert isinstance(joined, JoinedFeatures) and len(joined.members) == 2
    identities = {PixelEmbedder().identity, mirror.identity, joined.identity}
    assert len(identities) == 3  # a cache never mixes them up
    size = make_embedder("mirror:efficientnet-lite0@64")
    assert size.inner.image_size == 64


@pytest.mark.parametrize(
    "name", ["mirror:torchscript:/x.pt", "pixels+torchscript:/x.pt@32", "pixels+", "mirror:"]
)
def test_combined_names_refuse_torchscript_and_empty_parts(name):
    with pytest.raises(ValueError, match="built-in networks"):
        make_embedder(name)


def test_modules_compute_what_the_embedders_do(images):
    for embedder in (MirrorMean(_tiny(0)), JoinedFeatures([_tiny(0), MirrorMean(_tiny(1))])):
        with torch.no_grad():
            got = embedder.module()(torch.from_numpy(images)).numpy()
        np.testing.assert_allclose(got, embedder(images), rtol=1e-4, atol=1e-5)


def test_a_detector_on_joined_mirror_features_saves_loads_and_exports(tmp_path, monkeypatch):
    from coreset_meg.anomaly import MEGDetector, load_model, save_model
    from coreset_meg.anomaly.export import export_model

    tiny = {"tiny0": _tiny(0), "tiny1": _tiny(1, 6)}
    real = pretrained.make_embedder

    def named(name, device="cpu", **options):  # the tiny networks under built-in names
        return tiny[name] if name in tiny else real(name, device=device, **options)

    monkeypatch.setattr(pretrained, "make_embedder", named)
    monkeypatch.setattr(pretrained, "EMBEDDER_NAMES", {**pretrained.EMBEDDER_NAMES, **tiny})
    X = np.random.default_rng(1).integers(0, 256, size=(40, 3, 10, 10), dtype=np.uint8)
    det = MEGDetector(view="features", features="mirror:tiny0+tiny1", random_state=0).fit(X)
    assert isinstance(det.embedder_, JoinedFeatures) and det.network_shape_ == (10,)
    scores = det.score_samples(X)
    save_model(det, tmp_path / "m")
    np.testing.assert_allclose(load_model(tmp_path / "m").score_samples(X), scores, rtol=1e-6)
    path = export_model(det, tmp_path / "m.pt")
    as_float = torch.from_numpy(X.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
    with torch.no_grad():
        exported = torch.jit.load(str(path))(as_float).numpy()
    np.testing.assert_allclose(exported, scores, rtol=1e-4, atol=1e-4)


def test_auto_features_are_the_accurate_ones_for_colour_and_lite0_for_grey(tmp_path):
    import json

    from coreset_meg.anomaly import MEGDetector, load_model, save_model
    from coreset_meg.anomaly.preprocessing import COLOUR_FEATURES, GREY_FEATURES

    rng = np.random.default_rng(2)
    colour = rng.integers(0, 256, size=(12, 3, 8, 8), dtype=np.uint8)
    det = MEGDetector(random_state=0).fit(colour)
    assert det.features == "auto" and det.features_ == COLOUR_FEATURES
    assert isinstance(det.embedder_, JoinedFeatures)
    assert isinstance(det.embedder_.members[0], MirrorMean)
    assert det.network_shape_ == (1280 + 1280,)
    grey = MEGDetector(random_state=0).fit(colour[:, 0])
    assert grey.features_ == GREY_FEATURES and grey.view_ == "both"

    save_model(det, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "model.json").read_text())
    assert config["features"] == COLOUR_FEATURES
    np.testing.assert_allclose(
        load_model(tmp_path / "m").score_samples(colour), det.score_samples(colour), rtol=1e-6
    )
    # a file from before "auto" holds its extractor in its settings only
    del config["features"]
    config["settings"]["inputs"]["features"] = GREY_FEATURES
    (tmp_path / "m" / "model.json").write_text(json.dumps(config))
    assert load_model(tmp_path / "m").features_ == GREY_FEATURES
