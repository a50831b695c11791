"""Networks, losses and the MEG trainer on tiny CPU configurations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from coreset_meg import gan
from coreset_meg.gan import (
    MEGConfig,
    MEGTrainer,
    build_networks,
    energy_loss,
    generator_loss,
    image_geometry,
    input_gradient_sq_norm,
    jsd_mutual_information,
)


def tiny_config(**kw) -> MEGConfig:
    """Tiny MLP or conv runs (the trainer's mechanics; the core-set energy has its own tests)."""
    base = dict(
        n_iter=2,
        n_energy_steps=2,
        batch_size=8,
        latent_dim=4,
        width=8,
        log_every=1,
        network="auto",
        n_snapshots=10,
    )
    base.update(kw)
    return MEGConfig.from_params(**base)


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize(
    ("shape", "expected"), [((1, 28, 28), (2, 7)), ((3, 32, 32), (3, 4)), ((1, 8, 8), (1, 4))]
)
def test_image_geometry(shape, expected):
    assert image_geometry(shape) == expected


@pytest.mark.parametrize(
    ("shape", "match"),
    [((1, 27, 27), "not supported"), ((1, 28, 32), "square"), ((2, 28, 28), "1 or 3 channels")],
)
def test_image_geometry_rejects_unsupported_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        image_geometry(shape)


@pytest.mark.parametrize("shape", [(5,), (1, 28, 28), (3, 32, 32)])
def test_networks_map_shapes(shape):
    energy, gen, stats = build_networks(shape, latent_dim=4, width=8)
    z = torch.randn(3, 4)
    x = gen(z)
    assert x.shape == (3, *shape)
    assert energy(x).shape == (3,)
    assert stats(x, z).shape == (3,)


def test_energy_of_a_sample_does_not_depend_on_its_batch():
    energy, _, _ = build_networks((1, 28, 28), latent_dim=4, width=8)
    x = torch.randn(6, 1, 28, 28)
    together = energy(x)
    alone = torch.cat([energy(x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- losses
def test_gradient_norm_is_the_true_per_sample_squared_norm():
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])  # E(x) = sum(w * x) over a (2, 2) "image"
    net = _Linear(w)
    x = torch.randn(5, 1, 2, 2)
    energy, sq = input_gradient_sq_norm(net, x)
    torch.testing.assert_close(energy, (x[:, 0] * w).sum(dim=(1, 2)))
    torch.testing.assert_close(sq, torch.full((5,), float((w**2).sum())))


class _Linear(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x[:, 0] * self.w).sum(dim=(1, 2))


def test_energy_and_generator_losses():
    e_real, e_fake = torch.tensor([1.0, 3.0]), torch.tensor([5.0, 7.0])
    gp = torch.tensor([2.0, 4.0])
    assert float(energy_loss(e_real, e_fake, gp, 0.5)) == pytest.approx(2.0 - 6.0 + 1.5)
    assert float(generator_loss(e_fake, torch.tensor(0.25))) == pytest.approx(6.0 - 0.25)


def test_jsd_mutual_information_bounds():
    zeros = torch.zeros(8)
    assert float(jsd_mutual_information(zeros, zeros)) == pytest.approx(-2 * math.log(2))
    separated = jsd_mutual_information(torch.full((8,), 20.0), torch.full((8,), -20.0))
    assert float(separated) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------ trainer
@pytest.mark.parametrize("shape", [(3,), (1, 28, 28), (3, 32, 32)])
def test_two_step_smoke_for_each_network_kind(shape):
    X = np.random.default_rng(0).uniform(-1, 1, size=(40, *shape)).astype(np.float32)
    trainer = MEGTrainer(tiny_config(), shape, random_state=0)
    before = [p.detach().clone() for p in trainer.energy_net.parameters()]
    trainer.fit(X)
    assert trainer.step == 2
    assert len(trainer.history) == 2
    assert all(math.isfinite(v) for rec in trainer.history for v in rec.values())
    # Every weight matrix moves (an output bias gets no gradient: the loss ignores energy shifts).
    after = list(trainer.energy_net.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(before, after) if a.dim() > 1]
    assert moved and all(moved)


def test_fit_is_reproducible_and_leaves_global_rng_alone():
    X = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = MEGTrainer(tiny_config(n_iter=3), (2,), random_state=7).fit(X)
    assert torch.equal(torch.get_rng_state(), state)
    b = MEGTrainer(tiny_config(n_iter=3), (2,), random_state=7).fit(X)
    c = MEGTrainer(tiny_config(n_iter=3), (2,), random_state=8).fit(X)
    for p, q in zip(a.energy_avg.parameters(), b.energy_avg.parameters()):
        assert torch.equal(p, q)
    assert any(
        not torch.equal(p, q) for p, q in zip(a.energy_avg.parameters(), c.energy_avg.parameters())
    )


def test_checkpoint_resume_continues_from_saved_state(tmp_path):
    X = np.random.default_rng(2).normal(size=(50, 2)).astype(np.float32)
    ckpt = tmp_path / "run" / "ckpt.pt"
    log = tmp_path / "run" / "metrics.jsonl"
    first = MEGTrainer(tiny_config(n_iter=2), (2,), random_state=3, checkpoint_path=ckpt)
    first.fit(X)
    assert ckpt.exists()

    resumed = [MEGTrainer.from_checkpoint(ckpt, log_path=log) for _ in range(2)]
    for p, q in zip(first.energy_net.parameters(), resumed[0].energy_net.parameters()):
        assert torch.equal(p, q)
    assert resumed[0].step == 2
    for r in resumed:
        r.config.schedule.n_iter = 4
        r.fit(X)
    assert resumed[0].step == 4
    assert [rec["step"] for rec in resumed[0].history] == [1, 2, 3, 4]
    for p, q in zip(resumed[0].energy_net.parameters(), resumed[1].energy_net.parameters()):
        assert torch.equal(p, q)
    assert log.read_text().count("\n") == 4  # steps 3 and 4, from each of the two resumes


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_iter"):
        MEGConfig.from_params(n_iter=-1)
    with pytest.raises(ValueError, match="n_iter=0"):  # only the core-set energy trains nothing
        MEGConfig.from_params(n_iter=0, network="mlp")
    with pytest.raises(ValueError, match="network"):
        MEGConfig.from_params(network="transformer")


def test_snapshots_are_taken_over_the_second_half():
    trainer = MEGTrainer(MEGConfig.from_params(n_iter=1000, n_snapshots=4), (2,))
    assert sorted(trainer.snapshot_steps()) == [625, 750, 875, 1000]
    X = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    small = MEGTrainer(tiny_config(n_iter=4, n_snapshots=2), (2,), random_state=0).fit(X)
    assert len(small.snapshots) == 2
    last = small.snapshots[-1]
    for name, value in small.energy_avg.state_dict().items():
        assert torch.equal(last[name], value)


# ------------------------------------------------------------------------------- seams
class _CountSteps:
    def __init__(self):
        self.steps = []

    def on_step_end(self, trainer, result):
        self.steps.append((trainer.step, float(result.loss_energy.detach())))


class _PerturbedData:
    """Negatives made from the real batch: the energy step never calls the generator."""

    def __call__(self, trainer, x_real):
        return x_real + 0.5


class _EnergyAnchor:
    phase = "energy"

    def __init__(self):
        self.calls = 0

    def __call__(self, trainer, *, x_real, x_fake, e_real, e_fake):
        self.calls += 1
        return 0.1 * e_real.pow(2).mean()


def test_seams_are_called_and_default_to_meg():
    X = np.random.default_rng(4).normal(size=(60, 2)).astype(np.float32)
    counter, term, seen = _CountSteps(), _EnergyAnchor(), []

    def augment(x):
        seen.append(tuple(x.shape))
        return x * 0.9

    trainer = MEGTrainer(
        tiny_config(n_iter=3), (2,), random_state=0, negatives=_PerturbedData(),
        loss_terms=[term], augment=augment, callbacks=[counter],
    )  # fmt: skip
    trainer.fit(X)
    assert [s for s, _ in counter.steps] == [1, 2, 3]
    assert term.calls == 3 * 2  # every energy step (2 per iteration)
    # real, negatives and the gradient-penalty input in each energy step, the generated batch once
    assert len(seen) == 3 * (2 * 2 + 1)
    default = MEGTrainer(tiny_config(n_iter=3), (2,), random_state=0).fit(X)
    assert isinstance(default.negatives, gan.GeneratorSamples)
    changed = [not torch.equal(p, q) for p, q in zip(trainer.energy_net.parameters(),
                                                    default.energy_net.parameters())]  # fmt: skip
    assert any(changed)


def test_generator_step_leaves_energy_gradients_empty():
    X = np.random.default_rng(5).normal(size=(40, 2)).astype(np.float32)
    trainer = MEGTrainer(tiny_config(n_iter=1), (2,), random_state=0).fit(X)
    trainer.energy_net.zero_grad(set_to_none=True)
    trainer.generator_step()
    assert all(p.grad is None for p in trainer.energy_net.parameters())
    assert any(p.grad is not None for p in trainer.generator.parameters())


def test_weight_average_copies_buffers():
    trainer = MEGTrainer(tiny_config(), (2,), random_state=0)
    trainer.energy_net.register_buffer("count", torch.tensor([3.0]))
    trainer.energy_avg.register_buffer("count", torch.tensor([0.0]))
    trainer._update_average()
    assert float(trainer.energy_avg.count) == 3.0


def test_custom_prior_feeds_the_generator():
    from coreset_meg.coreset import LatentPrior

    X = np.random.default_rng(6).normal(size=(40, 2)).astype(np.float32)
    trainer = MEGTrainer(tiny_config(n_iter=1), (2,), random_state=0,
                         prior=LatentPrior(4, "uniform")).fit(X)  # fmt: skip
    z = trainer.sampler.sample_prior()
    assert tuple(z.shape) == (8, 4) and float(z.abs().max()) <= 1.0


class _Interrupt:
    def __init__(self, at):
        self.at = at

    def on_step_end(self, trainer, result):
        if trainer.step == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("factors", [(1, 1), (4, 8)])
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, factors):
    X = np.random.default_rng(3).normal(size=(200, 2)).astype(np.float32)
    cfg = dict(n_iter=7, log_every=1, prior_factor=factors[0], data_factor=factors[1])
    whole = MEGTrainer(tiny_config(**cfg), (2,), random_state=5).fit(X)
    ckpt, log = tmp_path / "ckpt.pt", tmp_path / "metrics.jsonl"
    first = MEGTrainer(tiny_config(**cfg), (2,), random_state=5, checkpoint_path=ckpt,
                       checkpoint_every=3, log_path=log, callbacks=[_Interrupt(5)])  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        first.fit(X)  # killed after step 5; the checkpoint holds step 3
    resumed = MEGTrainer.from_checkpoint(ckpt, device="cpu", log_path=log).fit(X)
    nets = ("energy_net", "energy_avg", "generator", "stats_net")
    for name in nets:
        for p, q in zip(getattr(whole, name).state_dict().values(),
                        getattr(resumed, name).state_dict().values()):  # fmt: skip
            assert torch.equal(p, q), name
    for a, b in zip(whole.snapshots, resumed.snapshots, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in r.items() if "seconds" not in k} for r in whole.history]
    assert [{k: v for k, v in r.items() if "seconds" not in k} for r in resumed.history] == strip
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == list(range(1, 8))
