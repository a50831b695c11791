"""Tests of the core-set package: greedy k-center, projection, embeddings (cache) and sampler."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import coreset_meg.coreset.sampler as sampler_module
from coreset_meg.coreset import (
    CoresetSampler,
    GaussianProjection,
    covering_radius,
    greedy_k_center,
    greedy_k_center_many,
    make_sampler,
    pairwise_k_center_reference,
)
from coreset_meg.coreset.kcenter import _greedy_torch
from coreset_meg.features import (
    PixelEmbedder,
    TorchScriptEmbedder,
    compute_embeddings,
    embedding_cache_path,
)

INCEPTION = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "models"
    / "fid-inception-2015-12-05.torchscript.pt"
)


def _gaussian(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _grid_mixture(per_mode: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """25 Gaussians on a 5 x 5 grid with spacing 2 and std 0.05; returns (points, centres)."""
    axis = np.arange(-4.0, 5.0, 2.0)
    centres = np.array(list(itertools.product(axis, axis)))  # (25, 2)
    rng = np.random.default_rng(seed)
    points = np.repeat(centres, per_mode, axis=0) + 0.05 * rng.standard_normal(
        (len(centres) * per_mode, 2)
    )
    return points.astype(np.float32), centres


# --------------------------------------------------------------------------------------------
# greedy k-center
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 3])
def test_covering_radius_within_twice_optimum(seed, k):
    X = _gaussian(10, 2, seed)
    optimum = min(covering_radius(X, list(c)) for c in itertools.combinations(range(10), k))
    chosen = greedy_k_center(X, k, random_state=seed)
    assert covering_radius(X, chosen) <= 2.0 * optimum + 1e-9


def test_greedy_adds_farthest_point():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [0.0, 5.0], [4.0, 4.0]])
    assert greedy_k_center(X, 3, first=0).tolist() == [0, 4, 2]
    assert covering_radius(np.array([[0.0], [1.0], [3.0]]), [0, 2]) == pytest.approx(1.0)


def test_output_types_and_full_permutation():
    X = _gaussian(50, 4, 0)
    idx = greedy_k_center(X, 50, random_state=0)
    assert idx.dtype == np.int64
    assert sorted(idx.tolist()) == list(range(50))
    assert covering_radius(X, idx) == 0.0
    idx_t = greedy_k_center(torch.from_numpy(X), 7, random_state=0)
    assert isinstance(idx_t, torch.Tensor) and idx_t.dtype == torch.long
    assert idx_t.device == torch.device("cpu")


@pytest.mark.parametrize("impl", ["numpy", "torch-device-path", "reference"])
def test_distinct_with_duplicate_rows(impl):
    base = _gaussian(3, 4, 1)
    X = np.repeat(base, 4, axis=0)  # rows 0-3, 4-7, 8-11 identical
    if impl == "numpy":
        run = lambda k: greedy_k_center(X, k, first=5).tolist()  # noqa: E731
    elif impl == "torch-device-path":
        run = lambda k: _greedy_torch(torch.from_numpy(X), k, 5).tolist()  # noqa: E731
    else:
        run = lambda k: pairwise_k_center_reference(X, k, first=5).tolist()  # noqa: E731
    six = run(6)
    assert len(set(six)) == 6
    assert sorted(i // 4 for i in six[:3]) == [0, 1, 2]  # one per distinct row first
    unchosen = [i for i in range(12) if i not in six[:3]]
    assert six[3:] == unchosen[:3]  # then the first unchosen indices
    assert sorted(run(12)) == list(range(12))


def test_all_identical_rows():
    X = np.ones((5, 3))
    assert greedy_k_center(X, 5, first=2).tolist() == [2, 0, 1, 3, 4]


def test_seed_determinism():
    X = _gaussian(200, 8, 0)
    a = greedy_k_center(X, 20, random_state=3)
    assert np.array_equal(a, greedy_k_center(X, 20, random_state=3))
    assert np.array_equal(a, greedy_k_center(X, 20, random_state=np.random.default_rng(3)))
    others = [greedy_k_center(X, 20, random_state=s) for s in range(4, 9)]
    assert any(not np.array_equal(a, o) for o in others)


@pytest.mark.parametrize("seed", range(3))
def test_torch_numpy_and_reference_agree(seed):
    X = _gaussian(300, 16, seed)
    first = seed * 7
    expected = greedy_k_center(X, 60, first=first)
    assert np.array_equal(greedy_k_center(torch.from_numpy(X), 60, first=first).numpy(), expected)
    assert np.array_equal(
        greedy_k_center(torch.from_numpy(X).double(), 60, first=first).numpy(), expected
    )
    # The path used for CUDA tensors, run here on the CPU.
    assert np.array_equal(_greedy_torch(torch.from_numpy(X), 60, first).numpy(), expected)
    assert np.array_equal(pairwise_k_center_reference(X, 60, first=first), expected)
    # A random start from the same seed gives the same choice in all three.
    assert np.array_equal(
        pairwise_k_center_reference(X, 60, random_state=seed),
        greedy_k_center(X, 60, random_state=seed),
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    X = _gaussian(500, 16, 0)
    idx = greedy_k_center(torch.from_numpy(X).cuda(), 50, first=0)
    assert idx.device.type == "cuda"
    assert np.array_equal(idx.cpu().numpy(), greedy_k_center(X, 50, first=0))


@pytest.mark.parametrize("k", [0, 11, -1, 2.5, True, "3"])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k must be an integer"):
        greedy_k_center(_gaussian(10, 2, 0), k)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input(bad):
    X = _gaussian(10, 2, 0).astype(np.float64)
    X[3, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        greedy_k_center(X, 3)
    with pytest.raises(ValueError, match="NaN or infinite"):
        greedy_k_center(torch.from_numpy(X), 3)


def test_bad_shapes_and_first():
    with pytest.raises(ValueError, match="2-D"):
        greedy_k_center(np.zeros(5), 2)
    with pytest.raises(ValueError, match="at least one sample"):
        greedy_k_center(np.zeros((0, 3)), 1)
    with pytest.raises(ValueError, match="first"):
        greedy_k_center(_gaussian(10, 2, 0), 2, first=10)
    with pytest.raises(TypeError, match="random_state"):
        greedy_k_center(_gaussian(10, 2, 0), 2, random_state="seed")
    with pytest.raises(ValueError, match="indices"):
        covering_radius(_gaussian(10, 2, 0), [10])


# --------------------------------------------------------------------------------------------
# projection
# --------------------------------------------------------------------------------------------


def test_gaussian_projection():
    X = _gaussian(500, 256, 0)
    proj = GaussianProjection(32, random_state=0).fit(X)
    Y = proj.transform(X)
    assert Y.shape == (500, 32) and Y.dtype == np.float32
    assert np.array_equal(Y, GaussianProjection(32, random_state=0).fit_transform(X))
    assert not np.allclose(Y, GaussianProjection(32, random_state=1).fit_transform(X))
    Yt = proj.transform(torch.from_numpy(X))
    assert isinstance(Yt, torch.Tensor)
    np.testing.assert_allclose(Yt.numpy(), Y, rtol=1e-4, atol=1e-4)
    # Johnson-Lindenstrauss scaling: squared distances preserved on average.
    ratio = ((Y[1:] - Y[:-1]) ** 2).sum(1) / ((X[1:] - X[:-1]) ** 2).sum(1)
    assert ratio.mean() == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="features"):
        proj.transform(X[:, :10])


def test_gaussian_projection_passthrough_and_errors():
    X = _gaussian(20, 8, 0)
    proj = GaussianProjection(32).fit(X)
    assert proj.passthrough_ and proj.n_components_ == 8
    Y = proj.transform(X)
    assert np.array_equal(Y, X) and Y is not X
    with pytest.raises(ValueError, match="not fitted"):
        GaussianProjection().transform(X)
    with pytest.raises(ValueError, match="n_components"):
        GaussianProjection(0).fit(X)


# --------------------------------------------------------------------------------------------
# sampler
# --------------------------------------------------------------------------------------------


@pytest.fixture
def selection_spy(monkeypatch):
    """Record every (X, returned indices) pair the sampler's k-center selection sees."""
    calls = []
    real = sampler_module.greedy_k_center_many

    def spy(X, k, **kwargs):
        idx = real(X, k, **kwargs)
        calls.extend(zip(X, idx))  # one (candidates, chosen) pair per set
        return idx

    monkeypatch.setattr(sampler_module, "greedy_k_center_many", spy)
    return calls


def test_sampler_batches_come_from_candidates(selection_spy):
    emb = _gaussian(1000, 32, 0)  # distinct rows, so rows identify indices
    sampler = CoresetSampler(emb, batch_size=16, latent_dim=8, random_state=0, lookahead=1)
    idx = sampler.sample_data_indices()
    assert idx.shape == (16,) and idx.dtype == np.int64
    assert len(set(idx.tolist())) == 16 and idx.min() >= 0 and idx.max() < 1000
    ((candidates, chosen),) = selection_spy
    assert candidates.shape == (8 * 16, 32)
    assert len(np.unique(candidates, axis=0)) == 8 * 16  # drawn without replacement
    np.testing.assert_array_equal(emb[idx], candidates[chosen])

    z = sampler.sample_prior()
    assert z.shape == (16, 8) and z.dtype == torch.float32 and z.device.type == "cpu"
    latent_candidates, latent_chosen = selection_spy[1]
    assert latent_candidates.shape == (4 * 16, 8)
    assert torch.equal(z, torch.from_numpy(latent_candidates[latent_chosen]))
    assert sampler.n_selections == 2 and sampler.selection_seconds > 0


@pytest.mark.parametrize("prior", ["normal", "uniform"])
def test_sampler_lookahead_gives_the_same_batches(prior):
    emb = _gaussian(700, 16, 1)
    kwargs = dict(batch_size=20, latent_dim=6, prior=prior, random_state=3)
    one = CoresetSampler(emb, **kwargs, lookahead=1)
    many = CoresetSampler(emb, **kwargs, lookahead=7)
    for step in range(20):  # interleaved as in training; 20 is not a multiple of 7
        np.testing.assert_array_equal(one.sample_data_indices(), many.sample_data_indices())
        assert torch.equal(one.sample_prior(), many.sample_prior()), step
    assert one.n_selections == 40 and many.n_selections == 2 * 21  # three fills of 7 each
    with pytest.raises(ValueError, match="lookahead"):
        CoresetSampler(emb, **kwargs, lookahead=0)


def test_sampler_default_lookahead_is_sized_by_the_problem_and_changes_nothing():
    emb = _gaussian(700, 16, 1)
    kwargs = dict(batch_size=20, latent_dim=6, random_state=4)
    one, auto = CoresetSampler(emb, **kwargs, lookahead=1), CoresetSampler(emb, **kwargs)
    auto.sample_data_indices()  # 160 candidates in 16-d: small, so the most sets at once (64)
    assert auto.n_selections == 64
    assert auto._sets_at_once(4096, 64) == 1 and auto._sets_at_once(512, 32) == 15
    auto = CoresetSampler(emb, **kwargs)
    for step in range(70):  # crosses a refill of the 64 stacked sets
        np.testing.assert_array_equal(one.sample_data_indices(), auto.sample_data_indices())
        assert torch.equal(one.sample_prior(), auto.sample_prior()), step


def test_greedy_k_center_many_matches_single_calls():
    rng = np.random.default_rng(0)
    for trial in range(30):
        S, n, d = int(rng.integers(1, 6)), int(rng.integers(2, 200)), int(rng.integers(1, 40))
        k = int(rng.integers(1, n + 1))
        X = rng.standard_normal((S, n, d)).astype(np.float32)
        if trial % 3 == 0:
            X[:, n // 2 :] = X[:, : n - n // 2]  # duplicate rows: exact-zero distances
        firsts = rng.integers(n, size=S)
        many = greedy_k_center_many(X, k, first=firsts)
        single = [greedy_k_center(X[s], k, first=int(firsts[s])) for s in range(S)]
        np.testing.assert_array_equal(many, np.stack(single))
    seeded = greedy_k_center_many(X, 3, random_state=5)
    draws = np.random.default_rng(5)
    expected = [greedy_k_center(X[s], 3, random_state=draws) for s in range(len(X))]
    np.testing.assert_array_equal(seeded, np.stack(expected))
    with pytest.raises(ValueError, match="3-D"):
        greedy_k_center_many(X[0], 2)
    with pytest.raises(ValueError, match="one index per set"):
        greedy_k_center_many(X, 2, first=[0] * (len(X) + 1))
    with pytest.raises(ValueError, match="NaN"):
        greedy_k_center_many(np.full((2, 3, 2), np.nan), 2)


def test_sampler_factor_one_is_plain_random(selection_spy):
    sampler = CoresetSampler(
        _gaussian(100, 4, 0),
        batch_size=10,
        latent_dim=3,
        data_factor=1,
        prior_factor=1,
        random_state=5,
    )
    expected = np.random.default_rng(5)
    for _ in range(3):
        assert np.array_equal(
            sampler.sample_data_indices(), expected.choice(100, 10, replace=False)
        )
        assert sampler.sample_prior().shape == (10, 3)
    assert selection_spy == [] and sampler.n_selections == 0 and sampler.selection_seconds == 0.0


def test_sampler_without_embeddings_and_small_data(selection_spy):
    sampler = CoresetSampler(None, batch_size=8, latent_dim=2, n_samples=50, random_state=0)
    idx = sampler.sample_data_indices()
    assert idx.shape == (8,) and len(set(idx.tolist())) == 8
    assert selection_spy == []
    # Fewer samples than factor * batch: all of them are candidates.
    small = CoresetSampler(_gaussian(20, 3, 0), batch_size=8, latent_dim=2, random_state=0)
    assert len(set(small.sample_data_indices().tolist())) == 8
    assert selection_spy[0][0].shape == (20, 3)


def test_sampler_uniform_prior_and_reproducibility():
    kwargs = dict(batch_size=32, latent_dim=5, prior="uniform", random_state=11)
    a = CoresetSampler(_gaussian(500, 4, 0), **kwargs)
    b = CoresetSampler(_gaussian(500, 4, 0), **kwargs)
    za, zb = a.sample_prior(), b.sample_prior()
    assert torch.equal(za, zb)
    assert za.min() >= -1.0 and za.max() <= 1.0
    assert np.array_equal(a.sample_data_indices(), b.sample_data_indices())
    c = CoresetSampler(_gaussian(500, 4, 0), **{**kwargs, "random_state": 12})
    assert not torch.equal(za, c.sample_prior())


def test_sampler_validation():
    emb = _gaussian(10, 2, 0)
    with pytest.raises(ValueError, match="batch_size"):
        CoresetSampler(emb, batch_size=11, latent_dim=2)
    with pytest.raises(ValueError, match="prior"):
        CoresetSampler(emb, batch_size=2, latent_dim=2, prior="laplace")
    with pytest.raises(ValueError, match="n_samples"):
        CoresetSampler(None, batch_size=2, latent_dim=2)
    with pytest.raises(ValueError, match="data_factor"):
        CoresetSampler(emb, batch_size=2, latent_dim=2, data_factor=0)


def test_coreset_batches_cover_more_modes():
    points, centres = _grid_mixture(per_mode=100, seed=0)
    coreset = CoresetSampler(points, batch_size=16, latent_dim=2, random_state=0)
    plain = CoresetSampler(points, batch_size=16, latent_dim=2, data_factor=1, random_state=0)

    def modes(idx):
        nearest = ((points[idx, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        return len(set(nearest.tolist()))

    core_modes = np.mean([modes(coreset.sample_data_indices()) for _ in range(20)])
    plain_modes = np.mean([modes(plain.sample_data_indices()) for _ in range(20)])
    assert core_modes > plain_modes + 2.0, (core_modes, plain_modes)


# --------------------------------------------------------------------------------------------
# embeddings and their cache
# --------------------------------------------------------------------------------------------


class CountingEmbedder:
    """Pixels times ``scale``; counts the samples it embeds."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale
        self.seen = 0

    @property
    def identity(self) -> str:
        return f"counting:scale={self.scale}"

    def __call__(self, batch):
        self.seen += len(batch)
        return np.asarray(batch, dtype=np.float32).reshape(len(batch), -1) * self.scale


def test_compute_embeddings_batches():
    X = np.random.default_rng(0).uniform(-1, 1, (10, 1, 3, 3))
    emb = compute_embeddings(X, PixelEmbedder(), batch_size=3, verbose=False)
    assert emb.shape == (10, 9) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, X.reshape(10, 9).astype(np.float32))


def test_embedding_cache(tmp_path):
    X = np.random.default_rng(0).uniform(-1, 1, (12, 1, 4, 4)).astype(np.float32)
    embedder = CountingEmbedder()
    first = compute_embeddings(X, embedder, batch_size=5, cache_dir=tmp_path, verbose=False)
    assert embedder.seen == 12
    path = embedding_cache_path(X, embedder, tmp_path)
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]

    # Second call reads the cache: the embedder is not called again.
    again = compute_embeddings(X, embedder, cache_dir=tmp_path, verbose=False)
    assert embedder.seen == 12 and np.array_equal(again, first)

    # Changed data, dtype or embedder settings miss the cache.
    X2 = X.copy()
    X2[3, 0, 1, 1] += 0.5
    compute_embeddings(X2, embedder, cache_dir=tmp_path, verbose=False)
    assert embedder.seen == 24
    compute_embeddings(X.astype(np.float64), embedder, cache_dir=tmp_path, verbose=False)
    assert embedder.seen == 36
    other = CountingEmbedder(scale=2.0)
    doubled = compute_embeddings(X, other, cache_dir=tmp_path, verbose=False)
    assert other.seen == 12 and np.allclose(doubled, 2 * first)

    # A corrupt cache file is recomputed (and replaced by a good one).
    path.write_bytes(b"not an npy file")
    fresh = CountingEmbedder()
    assert np.array_equal(compute_embeddings(X, fresh, cache_dir=tmp_path, verbose=False), first)
    assert fresh.seen == 12
    compute_embeddings(X, fresh, cache_dir=tmp_path, verbose=False)
    assert fresh.seen == 12
    # A truncated one too.
    path.write_bytes(path.read_bytes()[:100])
    compute_embeddings(X, fresh, cache_dir=tmp_path, verbose=False)
    assert fresh.seen == 24
    assert not list(tmp_path.glob("*.tmp"))


class _TinyExtractor(torch.nn.Module):
    """Channel means plus the input's side length: (N, 4)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = torch.full((x.shape[0], 1), float(x.shape[-1]))
        return torch.cat([x.mean(dim=(2, 3)), side], dim=1)


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is flagged deprecated
        torch.jit.script(_TinyExtractor()).save(str(path))
    return path


def test_torchscript_embedder(tiny_model):
    import hashlib

    embedder = TorchScriptEmbedder(tiny_model, image_size=16)
    assert hashlib.sha256(tiny_model.read_bytes()).hexdigest() in embedder.identity
    assert "image_size=16" in embedder.identity
    assert TorchScriptEmbedder(tiny_model, image_size=8).identity != embedder.identity

    grey = np.stack([np.full((1, 5, 5), -1.0), np.full((1, 5, 5), 1.0)]).astype(np.float32)
    out = embedder(grey)
    assert out.shape == (2, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [-1.0, -1.0, -1.0, 16.0])  # 0 -> 0 / 128 - 1
    np.testing.assert_allclose(out[1], [255 / 128 - 1] * 3 + [16.0], rtol=1e-6)

    rgb = np.zeros((3, 3, 16, 16), dtype=np.float32)
    rgb[:, 1] = 1.0
    out = compute_embeddings(rgb, embedder, batch_size=2, verbose=False)
    np.testing.assert_allclose(out[:, :3], [[127.5 / 128 - 1, 255 / 128 - 1, 127.5 / 128 - 1]] * 3)


def test_torchscript_embedder_bad_files(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="not found"):
        TorchScriptEmbedder(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(tiny_model.read_bytes()[:200])
    with pytest.raises(ValueError, match="could not load") as info:
        TorchScriptEmbedder(corrupt)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="C in"):
        TorchScriptEmbedder(tiny_model)(np.zeros((2, 2, 8, 8), dtype=np.float32))


@pytest.mark.slow
@pytest.mark.skipif(not INCEPTION.is_file(), reason="FID Inception model file not present")
def test_real_inception_two_images():
    embedder = TorchScriptEmbedder(INCEPTION)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 1, 28, 28)).astype(np.float32)
    out = embedder(images)
    assert out.shape == (2, 2048) and np.isfinite(out).all() and (out >= 0).all()
    assert not np.allclose(out[0], out[1])


# --------------------------------------------------------------------------------------------
# make_sampler
# --------------------------------------------------------------------------------------------


def test_make_sampler_pixels_with_cache(tmp_path):
    X = np.random.default_rng(0).uniform(-1, 1, (300, 1, 8, 8)).astype(np.float32)
    sampler = make_sampler(
        X, batch_size=16, latent_dim=4, projection_dim=8, cache_dir=tmp_path, random_state=0
    )
    assert sampler.data_embeddings.shape == (300, 8)
    assert len(list(tmp_path.glob("embeddings-*.npy"))) == 1
    again = make_sampler(
        X, batch_size=16, latent_dim=4, projection_dim=8, cache_dir=tmp_path, random_state=0
    )
    assert np.array_equal(sampler.sample_data_indices(), again.sample_data_indices())
    assert torch.equal(sampler.sample_prior(), again.sample_prior())


def test_make_sampler_factor_one_skips_embedding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("embedding must be skipped when data_factor == 1")

    monkeypatch.setattr(sampler_module, "compute_embeddings", fail)
    X = np.zeros((40, 1, 4, 4), dtype=np.float32)
    sampler = make_sampler(X, batch_size=8, latent_dim=4, data_factor=1, random_state=0)
    assert sampler.data_embeddings is None and sampler.sample_data_indices().shape == (8,)


def test_make_sampler_torchscript(tiny_model):
    X = np.random.default_rng(0).uniform(-1, 1, (50, 3, 8, 8)).astype(np.float32)
    sampler = make_sampler(X, batch_size=4, latent_dim=2, embedding=tiny_model, random_state=0)
    assert sampler.data_embeddings.shape == (50, 4)  # 4 features <= 32: pass-through
    assert sampler.sample_data_indices().shape == (4,)
