"""Spider GAN: the SID's defining properties, the friendly-input generator, the friendly sampler."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from coreset_meg.anomaly import MEGDetector
from coreset_meg.anomaly.cli import main
from coreset_meg.anomaly.friendly import (
    _fit_images,
    friendly_images,
    generator_prior,
    parse_friendly,
)
from coreset_meg.coreset import CoresetSampler, LatentPrior
from coreset_meg.coreset.friendly import FriendlyPrior, GeneratorPrior
from coreset_meg.coreset.sid import (
    polyharmonic_kernel,
    rank_by_sid,
    sid_potential,
    signed_inception_distance,
)
from coreset_meg.datasets import DataError
from coreset_meg.gan import MEGConfig, MEGTrainer
from coreset_meg.gan.networks import build_networks
from coreset_meg.gan.spider import (
    ImageEncoder,
    SpiderGenerator,
    SpiderStatistics,
    VectorEncoder,
    input_encoder,
    with_input_stage,
)

SID_FAST = dict(n_points=64, radii=(0.5, 2.0, 8.0))


@pytest.fixture
def clouds():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(150, 6)) * [1.0, 2.0, 0.5, 1.0, 1.0, 3.0]
    source = rng.normal(1.0, 1.5, size=(120, 6))
    return source, target


# ------------------------------------------------------------------------------- SID
@pytest.mark.parametrize("order", [-1.0, 0.0, 1.0, 3.0])
def test_kernel_increases_with_distance(order):
    rho = np.array([0.1, 0.5, 1.0, 2.0, 10.0])
    assert np.all(np.diff(polyharmonic_kernel(rho, order)) > 0)


@pytest.mark.parametrize("order", [-1.0, 0.0, 1.0])
def test_sid_of_a_set_against_itself_is_zero(clouds, order):
    _, target = clouds
    assert signed_inception_distance(target, target, order=order, **SID_FAST) == 0.0
    # also when the set is subsampled: both copies are subsampled alike
    assert signed_inception_distance(target, target, max_samples=50, **SID_FAST) == 0.0


def test_potential_flips_sign_when_the_sets_swap(clouds):
    source, target = clouds
    points = np.random.default_rng(1).normal(size=(40, 6))
    np.testing.assert_allclose(
        sid_potential(points, source, target), -sid_potential(points, target, source)
    )


def test_sid_is_unchanged_by_a_common_shift(clouds):
    source, target = clouds
    shift = np.arange(6.0) * 3
    assert signed_inception_distance(source + shift, target + shift, **SID_FAST) == pytest.approx(
        signed_inception_distance(source, target, **SID_FAST), rel=1e-8
    )


@pytest.mark.parametrize("order", [-1.0, 1.0, 2.0])
def test_sid_scales_as_the_kernel_order(clouds, order):
    source, target = clouds
    base = signed_inception_distance(source, target, order=order, **SID_FAST)
    scaled = signed_inception_distance(3 * source, 3 * target, order=order, **SID_FAST)
    assert scaled == pytest.approx(3**order * base, rel=1e-8)


def test_log_kernel_sid_is_scale_free(clouds):
    source, target = clouds
    base = signed_inception_distance(source, target, order=0, **SID_FAST)
    assert signed_inception_distance(5 * source, 5 * target, order=0, **SID_FAST) == pytest.approx(
        base, rel=1e-8
    )


def test_sid_depends_on_the_sets_not_their_order_or_repeats(clouds):
    source, target = clouds
    base = signed_inception_distance(source, target, **SID_FAST)
    perm = np.random.default_rng(2).permutation(len(source))
    assert signed_inception_distance(source[perm], target, **SID_FAST) == pytest.approx(base)
    twice = np.concatenate([source, source])
    assert signed_inception_distance(twice, target, **SID_FAST) == pytest.approx(base)


def test_sid_grows_as_the_source_moves_away(clouds):
    _, target = clouds
    sids = [signed_inception_distance(target + d, target, **SID_FAST) for d in (0.5, 1, 2, 4)]
    assert sids[0] > 0 and np.all(np.diff(sids) > 0)


def test_sid_is_signed(clouds):
    _, target = clouds
    centre = np.repeat(target.mean(0, keepdims=True), 20, axis=0)  # all mass at the centre
    assert signed_inception_distance(centre, target, **SID_FAST) < 0


def test_sid_is_seeded_and_checks_its_input(clouds):
    source, target = clouds
    a = signed_inception_distance(source, target, random_state=3, return_curve=True)
    b = signed_inception_distance(source, target, random_state=3, return_curve=True)
    assert a[0] == b[0] and a[1].shape == (7,) and a[0] == pytest.approx(a[1].mean())
    with pytest.raises(ValueError, match="dimensions"):
        signed_inception_distance(source[:, :3], target)
    with pytest.raises(ValueError, match="NaN"):
        signed_inception_distance(np.full((3, 6), np.nan), target)


def test_rank_by_sid_puts_the_nearest_set_first(clouds):
    _, target = clouds
    candidates = {"far": target + 5, "itself": target.copy(), "near": target + 1}
    ranking = rank_by_sid(target, candidates, **SID_FAST)
    assert [name for name, _ in ranking] == ["itself", "near", "far"]
    assert ranking[0][1] == 0.0


# ------------------------------------------------------------------ friendly sampler
def test_friendly_prior_is_seeded_and_draws_its_rows():
    rows = np.arange(40.0)[:, None] * [1.0, -1.0]
    prior = FriendlyPrior(rows)
    a = prior.draw(30, torch.Generator().manual_seed(0))
    assert torch.equal(a, prior.draw(30, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, prior.draw(30, torch.Generator().manual_seed(1)))
    assert a.dtype == torch.float32 and tuple(a.shape) == (30, 2)
    assert torch.equal(a[:, 1], -a[:, 0]) and bool((a[:, 0] == a[:, 0].round()).all())


def test_friendly_prior_covers_its_set():
    prior = FriendlyPrior(np.arange(50.0)[:, None])
    drawn = prior.draw(50 * 20, torch.Generator().manual_seed(0))[:, 0]
    counts = np.bincount(drawn.long().numpy(), minlength=50)
    assert (counts > 0).all() and len(counts) == 50
    assert counts.max() < 3 * counts.mean()  # uniform picks


def test_friendly_prior_refuses_bad_sets():
    with pytest.raises(ValueError, match="shape"):
        FriendlyPrior(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        FriendlyPrior(np.full((3, 2), np.inf))


def test_coreset_selection_works_on_friendly_images():
    images = np.random.default_rng(0).uniform(-1, 1, size=(60, 1, 8, 8)).astype(np.float32)
    prior = FriendlyPrior(images)
    kwargs = dict(batch_size=8, latent_dim=4, prior=prior, n_samples=60, random_state=5)
    batch = CoresetSampler(None, **kwargs).sample_prior()
    assert tuple(batch.shape) == (8, 1, 8, 8)
    assert torch.equal(batch, CoresetSampler(None, **kwargs).sample_prior())
    flat = torch.from_numpy(images).flatten(1)
    assert all(bool((flat == b.flatten()).all(1).any()) for b in batch)  # rows of the set
    assert len({tuple(b.flatten().tolist()) for b in batch}) == 8  # k-center: no repeats


def test_cascade_prior_feeds_a_frozen_generator():
    gen = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh())
    prior = GeneratorPrior(gen, LatentPrior(3))
    x = prior.draw(6, torch.Generator().manual_seed(0))
    assert prior.shape == (5,) and tuple(x.shape) == (6, 5) and not x.requires_grad
    assert not any(p.requires_grad for p in gen.parameters())


# --------------------------------------------------------- friendly-input generator
@pytest.mark.parametrize(
    ("shape", "kind"),
    [
        ((1, 8, 8), ImageEncoder),
        ((3, 16, 16), ImageEncoder),
        ((1, 7, 7), VectorEncoder),
        ((12,), VectorEncoder),
    ],
)
def test_input_encoder_shapes(shape, kind):
    enc = input_encoder(shape, 5, width=8)
    assert isinstance(enc, kind)
    assert tuple(enc(torch.randn(4, *shape)).shape) == (4, 5)


def test_spider_networks_shapes_and_gradient_flow():
    torch.manual_seed(0)
    _, gen, stats = build_networks((10,), 4, kind="mlp", width=16)
    gen, stats = with_input_stage(gen, stats, (1, 8, 8), 4, width=8)
    assert isinstance(gen, SpiderGenerator) and isinstance(stats, SpiderStatistics)
    s = torch.randn(6, 1, 8, 8)
    x = gen(s)
    t = stats(x, s)
    assert tuple(x.shape) == (6, 10) and tuple(t.shape) == (6,)
    (x.square().mean() + t.mean()).backward()
    for net in (gen.encoder, gen.generator, stats.encoder, stats.statistics):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def _config(**kw):
    base = dict(
        n_iter=2, n_energy_steps=1, batch_size=8, latent_dim=4, width=8, network="mlp", log_every=1
    )
    return MEGConfig.from_params(**{**base, **kw})


def test_trainer_feeds_friendly_images_to_the_generator():
    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    images = np.random.default_rng(1).uniform(-1, 1, size=(30, 1, 8, 8)).astype(np.float32)
    config = _config(prior="friendly", friendly="toy")
    trainer = MEGTrainer(config, (3,), random_state=0, prior=FriendlyPrior(images))
    assert isinstance(trainer.generator, SpiderGenerator)
    assert isinstance(trainer.stats_net, SpiderStatistics)
    before = [p.detach().clone() for p in trainer.generator.encoder.parameters()]
    trainer.fit(X)
    assert tuple(trainer.sampler.sample_prior().shape) == (8, 1, 8, 8)
    moved = [
        not torch.equal(a, p)
        for a, p in zip(before, trainer.generator.encoder.parameters(), strict=True)
    ]
    assert any(moved)  # the generator step trained the input stage
    # the default (latent) prior builds the usual networks
    assert not isinstance(MEGTrainer(_config(), (3,), random_state=0).generator, SpiderGenerator)


# ------------------------------------------------------------------ detector and CLI
def test_parse_friendly(tmp_path):
    assert parse_friendly("mnist:3,5").classes == (3, 5)
    assert parse_friendly("CIFAR-10:cat").classes == (3,)
    assert parse_friendly("digits").classes is None
    assert parse_friendly(str(tmp_path)).kind == "folder"
    assert parse_friendly("model:somewhere").kind == "model"
    with pytest.raises(DataError, match="unknown friendly set"):
        parse_friendly("imagenet")
    with pytest.raises(DataError, match="unknown class"):
        parse_friendly("mnist:12")


def _digits(cls):
    from coreset_meg.datasets import load_digits_data

    X, y = load_digits_data()
    return X[y == cls][:60]


FAST = dict(n_iter=2, n_energy_steps=1, batch_size=16, width=8, data_factor=1, prior_factor=2)


def test_detector_with_a_friendly_set_saves_and_loads(tmp_path):
    X = _digits(1)
    det = MEGDetector(prior="friendly", friendly="digits:7", random_state=0, **FAST).fit(X)
    assert det.prior_shape_ == (1, 8, 8) and isinstance(det.generator_, SpiderGenerator)
    det.save(tmp_path / "m")
    again = MEGDetector.load(tmp_path / "m")
    np.testing.assert_allclose(again.score_samples(X), det.score_samples(X))
    s = torch.zeros(2, 1, 8, 8)
    assert torch.equal(again.generator_(s), det.generator_(s))


def test_detector_refuses_a_friendly_set_without_the_friendly_prior():
    with pytest.raises(ValueError, match="prior='friendly'"):
        MEGDetector(friendly="digits:7", random_state=0, **FAST).fit(_digits(1))
    with pytest.raises(ValueError, match="needs a friendly set"):
        MEGDetector(prior="friendly", random_state=0, **FAST).fit(_digits(1))


def _image_folder(path, seed: int):
    """Six random 12 x 12 colour PNG files in ``path/friends``."""
    folder = path / "friends"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_friendly_image_folder_feeds_a_pixel_detector(tmp_path):
    folder = _image_folder(tmp_path, 0)
    X = _digits(1).reshape(-1, 1, 8, 8)
    det = MEGDetector(view="pixels", prior="friendly", friendly=str(folder), random_state=0, **FAST)
    det.fit(X)
    assert det.prior_shape_ == (1, 8, 8)  # resized to the training images, made grey


def test_friendly_images_feed_a_both_view_detector_as_its_training_images(tmp_path):
    """view='both': the friendly images go through the same pixels-and-features input (and
    its scaling) as the training images."""
    folder = _image_folder(tmp_path, 1)
    X = _digits(1).reshape(-1, 1, 8, 8)
    det = MEGDetector(view="both", features="pixels", prior="friendly", friendly=str(folder),
                      random_state=0, **FAST)  # fmt: skip
    det.fit(X)
    assert det.network_shape_ == (128,) and det.prior_shape_ == (128,)
    images = _fit_images(friendly_images(str(folder)), (1, 8, 8))
    np.testing.assert_allclose(
        generator_prior(det).samples.numpy(), det._network_input(images), rtol=1e-6
    )


def test_cli_ranks_friendly_sets(tmp_path, capsys):
    args = [
        "friendly",
        "digits:1",
        "-c",
        "digits:7",
        "-c",
        "digits:1",
        "-c",
        "digits",
        "--features",
        "pixels",
        "--cache-dir",
        str(tmp_path),
        "--json",
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    ranking = [r["candidate"] for r in result["ranking"]]
    assert ranking[0] == "digits:1" and result["ranking"][0]["sid"] == 0.0
    assert set(ranking) == {"digits:1", "digits:7", "digits"}


def test_cli_fit_reads_builtin_friendly_sets_from_data_root(
    tmp_path, shared_data, mnist_dir, monkeypatch
):
    monkeypatch.setenv("ANOMALY_DATA_ROOT", str(tmp_path / "empty"))  # nothing there
    args = ["fit", "--prior", "friendly", "--friendly", "mnist:3", "--n-iter", "2", "--quiet",
            "--out", str(tmp_path / "m"), "--json"]  # fmt: skip
    assert main(args) != 0  # MNIST is not in $ANOMALY_DATA_ROOT
    assert main([*args, "--data-root", str(shared_data)]) == 0
    saved = json.loads((tmp_path / "m" / "model.json").read_text())["settings"]["batches"]
    assert saved["prior"] == "friendly" and saved["friendly"] == "mnist:3"
    assert os.environ["ANOMALY_DATA_ROOT"] == str(tmp_path / "empty")  # restored after the command
    from coreset_meg.anomaly.cli import _DATA_ROOT_ENV
    from coreset_meg.datasets._paths import DATA_ROOT_ENV

    assert _DATA_ROOT_ENV == DATA_ROOT_ENV
