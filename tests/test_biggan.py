"""BigGAN's techniques as options: truncation, orthogonal regularisation, spectral norm, G's
average. Tiny CPU configurations; each option off must leave training exactly as it was."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from coreset_meg.anomaly import MEGDetector
from coreset_meg.anomaly.benchmarks.mixture import TECHNIQUE_SETTINGS, run_mixture
from coreset_meg.coreset import LatentPrior, TruncatedPrior, make_prior, truncate
from coreset_meg.gan import MEGConfig, MEGTrainer, build_networks
from coreset_meg.gan.losses import orthogonal_penalty
from coreset_meg.gan.networks import orthogonal_weights, spectral_normalise
from coreset_meg.gan.trainer import _lerp_average


def tiny(**kw) -> MEGConfig:
    base = dict(
        n_iter=3,
        n_energy_steps=2,
        batch_size=8,
        latent_dim=3,
        width=8,
        network="mlp",
        log_every=1,
        n_snapshots=2,
    )
    return MEGConfig.from_params(**{**base, **kw})


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)


def _state(trainer: MEGTrainer) -> list[torch.Tensor]:
    nets = (trainer.energy_net, trainer.generator, trainer.stats_net)
    return [v.clone() for net in nets for v in net.state_dict().values()]


# ----------------------------------------------------------------------------- truncation
@pytest.mark.parametrize("kind", ["normal", "uniform"])
@pytest.mark.parametrize("threshold", [0.1, 0.5, 2.0])
def test_truncated_latents_stay_inside_and_are_seeded(kind, threshold):
    prior = LatentPrior(4, kind, truncation=threshold)
    z = prior.draw(500, torch.Generator().manual_seed(0))
    assert z.shape == (500, 4) and z.dtype == torch.float32
    assert float(z.abs().max()) <= threshold
    again = prior.draw(500, torch.Generator().manual_seed(0))
    other = prior.draw(500, torch.Generator().manual_seed(1))
    assert torch.equal(z, again) and not torch.equal(z, other)


def test_truncate_redraws_only_entries_outside():
    prior = LatentPrior(3)
    z = prior.draw(200, torch.Generator().manual_seed(0))
    cut = truncate(z, 0.7, prior.draw, torch.Generator().manual_seed(1))
    inside = z.abs() <= 0.7
    assert torch.equal(cut[inside], z[inside])  # kept as they were
    assert float(cut.abs().max()) <= 0.7 and float(z.abs().max()) > 0.7  # z is not modified
    # Truncated draws follow the prior restricted to the threshold: spread of a truncated normal.
    many = LatentPrior(1, truncation=1.0).draw(20_000, torch.Generator().manual_seed(2))
    assert float(many.std()) == pytest.approx(0.538, abs=0.02)


def test_truncation_off_and_wrapped():
    gen = torch.Generator().manual_seed(0)
    plain = LatentPrior(3).draw(10, gen)
    for off in (None, 0, 0.0):
        assert torch.equal(LatentPrior(3, truncation=off).draw(10, gen.manual_seed(0)), plain)
    wrapped = make_prior(LatentPrior(3), 3, truncation=0.5)
    assert isinstance(wrapped, TruncatedPrior) and wrapped.shape == (3,)
    assert float(wrapped.draw(100, gen).abs().max()) <= 0.5
    for bad in (-1.0, "0.5", True):
        with pytest.raises(ValueError, match="truncation"):
            LatentPrior(3, truncation=bad)


def test_trainer_truncates_negatives_and_samples(X):
    trainer = MEGTrainer(tiny(truncation=0.5), (2,), device="cpu", random_state=0).fit(X)
    z = torch.randn(100, 3, generator=torch.Generator().manual_seed(0)) * 3
    assert float(trainer.truncate(z).abs().max()) <= 0.5
    assert trainer.sample(20, seed=1).shape == (20, 2)
    assert torch.equal(trainer.sample(20, seed=1), trainer.sample(20, seed=1))
    assert not torch.equal(trainer.sample(20, seed=1), trainer.sample(20, seed=1, truncation=0))
    off = MEGTrainer(tiny(), (2,), device="cpu", random_state=0).fit(X)
    assert not all(torch.equal(a, b) for a, b in zip(_state(trainer), _state(off), strict=True))


# --------------------------------------------------------------- orthogonal regularisation
def test_orthogonal_penalty_zero_for_orthogonal_positive_otherwise():
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)))
    assert float(orthogonal_penalty([q])) == pytest.approx(0.0, abs=1e-10)
    assert float(orthogonal_penalty([3.0 * q[:4]])) == pytest.approx(
        0.0, abs=1e-8
    )  # row norms free
    w = q.clone()
    w[1] += 0.5 * w[0]
    assert float(orthogonal_penalty([w])) > 0.1
    # By hand: rows (1, 1) and (1, 0) have inner product 1, counted twice.
    assert float(orthogonal_penalty([torch.tensor([[1.0, 1.0], [1.0, 0.0]])])) == 2.0
    assert float(orthogonal_penalty([])) == 0.0


def test_orthogonal_penalty_gradient_reaches_weights():
    net = nn.Sequential(
        nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Conv1d(1, 3, 2), nn.ConvTranspose2d(2, 3, 3)
    )
    net.append(nn.Embedding(7, 4))
    weights = orthogonal_weights(net)
    shapes = [tuple(w.shape) for w in weights]
    assert shapes == [(5, 4), (3, 2), (3, 18)]  # (out, -1); no norm layer, bias or embedding
    orthogonal_penalty(weights).backward()
    for layer in (net[0], net[2], net[3]):
        assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0
        assert layer.bias.grad is None
    assert net[1].weight.grad is None and net[4].weight.grad is None


def test_orthogonal_reg_is_a_loss_term_of_both_phases(X):
    trainer = MEGTrainer(tiny(orthogonal_reg=1e-2), (2,), device="cpu", random_state=0)
    assert sorted(t.phase for t in trainer.loss_terms) == ["energy", "generator"]
    trainer.fit(X)
    off = MEGTrainer(tiny(), (2,), device="cpu", random_state=0).fit(X)
    assert trainer.history[-1]["loss_energy"] != off.history[-1]["loss_energy"]


# ---------------------------------------------------------------------- spectral norm
def test_spectral_norm_keeps_largest_singular_value_near_one():
    torch.manual_seed(0)
    layer = nn.Linear(16, 12)
    with torch.no_grad():
        layer.weight.mul_(10.0)
    spectral_normalise(layer)
    x = torch.randn(4, 16)
    for _ in range(20):  # one power iteration per forward pass in training mode
        layer(x)
    sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
    assert float(sigma) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(
    ("which", "energy", "generator"),
    [
        ("none", False, False),
        ("energy", True, False),
        ("generator", False, True),
        ("both", True, True),
    ],
)
def test_build_networks_spectral_norm_option(which, energy, generator):
    def normalised(net):
        return any(nn.utils.parametrize.is_parametrized(m) for m in net.modules())

    e, g, t = build_networks((2,), 3, kind="mlp", width=8, spectral_norm=which)
    assert (normalised(e), normalised(g), normalised(t)) == (energy, generator, False)
    e, g, _ = build_networks((1, 8, 8), 3, kind="conv", width=4, spectral_norm=which)
    assert (normalised(e), normalised(g)) == (energy, generator)
    with pytest.raises(ValueError, match="spectral_norm"):
        build_networks((2,), 3, spectral_norm="yes")


# ----------------------------------------------------------------------- G's average
def test_generator_average_moves_behind_the_generator(X):
    trainer = MEGTrainer(tiny(generator_ema=0.9), (2,), device="cpu", random_state=0)
    start = [p.clone() for p in trainer.generator_avg.parameters()]
    trainer.fit(X)
    live, avg = trainer.generator.state_dict(), trainer.generator_avg.state_dict()
    assert any(not torch.equal(live[k], avg[k]) for k in live if k.endswith("weight"))
    assert any(not torch.equal(a, b) for a, b in zip(start, trainer.generator_avg.parameters()))
    assert trainer.sampling_generator is trainer.generator_avg
    assert all(not p.requires_grad for p in trainer.generator_avg.parameters())
    for k in live:  # buffers (batch-norm statistics) are copied
        if "running" in k:
            assert torch.equal(live[k], avg[k])
    off = MEGTrainer(tiny(), (2,), device="cpu", random_state=0)
    assert off.generator_avg is None and off.sampling_generator is off.generator


def test_average_with_decay_zero_is_the_live_net():
    live, avg = nn.Linear(3, 2), nn.Linear(3, 2)
    _lerp_average(avg, live, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(avg.parameters(), live.parameters()))


# ----------------------------------------------------------------- defaults, persistence
def test_all_options_off_train_as_the_defaults(X):
    default = MEGTrainer(tiny(), (2,), device="cpu", random_state=0).fit(X)
    off = tiny(spectral_norm="none", orthogonal_reg=0.0, generator_ema=0.0, truncation=0.0)
    explicit = MEGTrainer(off, (2,), device="cpu", random_state=0).fit(X)
    assert default.history == [
        {**r, "seconds": d["seconds"], "selection_seconds": d["selection_seconds"]}
        for r, d in zip(explicit.history, default.history, strict=True)
    ]
    assert all(torch.equal(a, b) for a, b in zip(_state(default), _state(explicit), strict=True))
    assert torch.equal(default.sample(10, seed=3), explicit.sample(10, seed=3))


def test_resumed_run_with_options_ends_as_an_uninterrupted_one(X, tmp_path):
    options = dict(truncation=0.8, generator_ema=0.5, spectral_norm="both", orthogonal_reg=1e-3)
    whole = MEGTrainer(tiny(n_iter=4, **options), (2,), device="cpu", random_state=0).fit(X)
    path = tmp_path / "ckpt.pt"
    MEGTrainer(
        tiny(n_iter=2, **options), (2,), device="cpu", random_state=0, checkpoint_path=path
    ).fit(X)
    resumed = MEGTrainer.from_checkpoint(path, device="cpu")
    resumed.config.schedule.n_iter = 4
    resumed.fit(X)
    assert all(torch.equal(a, b) for a, b in zip(_state(whole), _state(resumed), strict=True))
    for a, b in zip(whole.generator_avg.parameters(), resumed.generator_avg.parameters()):
        assert torch.equal(a, b)


def test_detector_with_the_options_fits_saves_and_loads(X, tmp_path):
    det = MEGDetector(
        network="auto",
        n_iter=3,
        n_energy_steps=2,
        batch_size=16,
        width=8,
        latent_dim=3,
        spectral_norm="both",
        orthogonal_reg=1e-4,
        generator_ema=0.9,
        truncation=1.5,
        random_state=0,
    ).fit(X)
    det.save(tmp_path / "model")
    loaded = MEGDetector.load(tmp_path / "model")
    assert loaded.get_params()["spectral_norm"] == "both"
    np.testing.assert_array_equal(det.score_samples(X), loaded.score_samples(X))
    z = torch.zeros(2, 3)
    assert torch.equal(det.generator_(z), loaded.generator_(z))
    with pytest.raises(ValueError, match="spectral_norm"):
        MEGDetector(spectral_norm="sometimes").fit(X)


# ---------------------------------------------------------------------------- benchmark
def test_mixture_runs_a_technique_and_a_truncation_sweep(tmp_path):
    name = TECHNIQUE_SETTINGS[0].name
    text = run_mixture([3], settings=[name], truncations=[0.5], seeds=[0], quick=True,
                       config={"n_iter": 2}, out_dir=tmp_path, device="cpu")  # fmt: skip
    assert name in text and "n_iter=2" in text
    assert "- none: the one target compares core-set 64 with random 64" in text  # no random 64
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results["steps"]) == [2]
    sweep = pd.read_csv(tmp_path / "truncation.csv")
    assert list(results["setting"]) == [name] and list(sweep["truncation"]) == [0.5]
    assert sweep["high_quality_fraction"].between(0, 1).all()
    for file in ("truncation.md", "truncation.png", "samples.png"):
        assert (tmp_path / file).is_file()
    with pytest.raises(ValueError, match="settings"):
        run_mixture([3], settings=["core-set 64 + magic"], quick=True, out_dir=tmp_path)
    with pytest.raises(TypeError, match="unknown MEG setting"):
        run_mixture([3], settings=[name], config={"n_iters": 2}, quick=True, out_dir=tmp_path)
