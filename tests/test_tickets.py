"""Lottery tickets, DiffAugment and AdvAug (coreset_meg.gan.tickets): masks, rewinding,
augmentation, steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coreset_meg.anomaly import MEGDetector
from coreset_meg.gan import MEGConfig, MEGTrainer
from coreset_meg.gan.tickets import (
    AdvAug,
    DiffAugment,
    WeightMasks,
    feature_module,
    find_ticket,
    magnitude_prune,
    prunable_weights,
    signed_gradient_step,
)

SHAPE = (1, 8, 8)


def _images(n: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.tanh(rng.normal(size=(n, *SHAPE))).astype(np.float32)


def _config(**kw) -> MEGConfig:
    base = dict(
        n_iter=3, n_energy_steps=2, batch_size=8, latent_dim=4, width=8, network="conv",
        data_factor=1, prior_factor=1, log_every=1,
    )  # fmt: skip
    return MEGConfig.from_params(**{**base, **kw})


def _zeros_where_pruned(net, masks) -> bool:
    weights = prunable_weights(net)
    return all(bool((weights[k][~m.to(weights[k].device)] == 0).all()) for k, m in masks.items())


# ------------------------------------------------------------------------------ pruning
def test_pruning_removes_the_rate_of_the_remaining_weights_by_global_magnitude():
    g = torch.Generator().manual_seed(0)
    weights = {"a": torch.randn(10, 30, generator=g), "b": 3 * torch.randn(50, generator=g)}
    masks, kept = None, 350
    for _ in range(4):
        masks = magnitude_prune(weights, masks, 0.2)
        kept -= round(0.2 * kept)
        assert sum(int(m.sum()) for m in masks.values()) == kept
    # the survivors are the largest weights over both tensors together
    values = torch.cat([w.abs().flatten() for w in weights.values()])
    alive = torch.cat([m.flatten() for m in masks.values()])
    assert float(values[alive].min()) >= float(values[~alive].max())
    assert int(masks["b"].sum()) / 50 > int(masks["a"].sum()) / 300  # global, not per layer


def test_masks_keep_their_sparsity_through_training():
    X = _images()
    first = MEGTrainer(_config(n_iter=2), SHAPE, device="cpu", random_state=0).fit(X)
    masks = WeightMasks().pruned(first, 0.5, nets=("generator", "energy_net"))
    trainer = MEGTrainer(_config(), SHAPE, device="cpu", random_state=0)
    masks.attach(trainer)
    trainer.fit(X)
    assert masks.sparsity("generator") == pytest.approx(0.5, abs=0.01)
    for name in ("generator", "energy_net"):
        assert _zeros_where_pruned(getattr(trainer, name), masks.masks[name])
    assert _zeros_where_pruned(trainer.energy_avg, masks.masks["energy_net"])
    # and the kept weights did train
    init = MEGTrainer(_config(), SHAPE, device="cpu", random_state=0)
    after, before = prunable_weights(trainer.generator), prunable_weights(init.generator)
    assert any(not torch.equal(after[k], before[k] * masks.masks["generator"][k]) for k in after)


def test_rewinding_restores_the_initial_values_and_resets_e():
    X = _images()
    trainer = MEGTrainer(_config(prune_rounds=2), SHAPE, device="cpu", random_state=3)
    init = MEGTrainer(_config(), SHAPE, device="cpu", random_state=3)
    masks = find_ticket(trainer, X)
    assert masks.sparsity("generator") == pytest.approx(1 - 0.8**2, abs=0.01)
    got, want = prunable_weights(trainer.generator), prunable_weights(init.generator)
    for key, mask in masks.masks["generator"].items():
        assert torch.equal(got[key], want[key] * mask)  # survivors at their initial values
    for p, q in zip(trainer.energy_net.parameters(), init.energy_net.parameters(), strict=True):
        assert torch.equal(p, q)  # E reset, not pruned
    assert trainer.step == 0 and masks in trainer.callbacks


def test_prune_energy_needs_an_energy_with_weights():
    trainer = MEGTrainer(
        _config(network="coreset", prune_rounds=1, prune_energy=True), SHAPE, device="cpu"
    )
    with pytest.raises(ValueError, match="mlp or conv"):
        find_ticket(trainer, _images())


# ---------------------------------------------------------------------------- DiffAugment
def test_diffaugment_is_differentiable_in_its_input():
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, requires_grad=True) * 2 - 1
    for policy in ("color", "translation", "cutout", "color,translation,cutout"):
        # a fresh, identically seeded augmentation per call: the same draw every evaluation
        assert torch.autograd.gradcheck(lambda t, p=policy: DiffAugment(p, 5)(t), (x,))
    y = DiffAugment("color,translation,cutout", 0)(x)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_diffaugment_is_the_identity_when_off_and_seeded():
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    assert DiffAugment("none")(x) is x and DiffAugment("")(x) is x
    assert MEGTrainer(_config(), SHAPE, device="cpu").augment is None
    a, b = DiffAugment(random_state=1), DiffAugment(random_state=1)
    first = a(x)
    assert torch.equal(first, b(x))  # same seed, same draws
    assert not torch.equal(first, a(x))  # a fresh draw per batch
    assert not torch.equal(first, DiffAugment(random_state=2)(x))
    rows = DiffAugment(random_state=1, shape=(3, 8, 8))(x.flatten(1))  # rows as images
    assert torch.equal(rows, first.flatten(1))
    trainer = MEGTrainer(_config(diffaugment="translation"), SHAPE, device="cpu")
    assert isinstance(trainer.augment, DiffAugment) and trainer.augment.policy == ("translation",)


def test_diffaugment_setting_is_checked():
    with pytest.raises(ValueError, match="diffaugment"):
        MEGConfig.from_params(diffaugment="color,blur")
    with pytest.raises(ValueError, match="needs images"):
        MEGTrainer(_config(network="mlp", diffaugment="color"), (5,), device="cpu")


# --------------------------------------------------------------------------------- AdvAug
def test_signed_gradient_step_has_the_requested_max_norm():
    grad = torch.randn(6, 5)
    delta = signed_gradient_step(grad, 0.01)
    assert float(delta.abs().max()) == pytest.approx(0.01)
    assert torch.allclose(delta.abs(), torch.full_like(delta, 0.01))


@pytest.mark.parametrize("network", ["conv", "mlp"])
def test_advaug_perturbs_features_by_the_step_and_averages_the_losses(network):
    torch.manual_seed(0)
    trainer = MEGTrainer(_config(network=network), SHAPE, device="cpu", random_state=0)
    x_real, x_fake = torch.from_numpy(_images(8)), torch.from_numpy(_images(8, seed=1))
    e_real, e_fake = trainer.energy_net(x_real), trainer.energy_net(x_fake)
    clean = e_real.mean() - e_fake.mean()
    term = AdvAug(0.01, "energy")
    extra = term(trainer, x_real=x_real, x_fake=x_fake, e_real=e_real, e_fake=e_fake)
    delta = term.last_delta
    assert float(delta.abs().max()) == pytest.approx(0.01)
    assert tuple(delta.shape[1:]) != () and delta.shape[0] == 16  # real and negatives
    # the loss the trainer minimises is the mean of the clean and perturbed losses
    handle = feature_module(trainer.energy_net).register_forward_hook(lambda m, i, o: o + delta)
    try:
        e = trainer.energy_net(torch.cat([x_real, x_fake]))
    finally:
        handle.remove()
    perturbed = e[:8].mean() - e[8:].mean()
    clean, extra, perturbed = clean.detach(), extra.detach(), perturbed.detach()
    assert float(clean + extra) == pytest.approx(float(0.5 * (clean + perturbed)), abs=1e-6)
    assert float(perturbed) > float(clean)  # the step raises the player's loss
    gen = AdvAug(0.02, "generator")
    gen(trainer, z=torch.randn(8, 4), x_gen=None, e_gen=None)
    assert float(gen.last_delta.abs().max()) == pytest.approx(0.02)


def test_advaug_trains_and_skips_the_coreset_energy():
    X = _images()
    trainer = MEGTrainer(_config(advaug=0.01), SHAPE, device="cpu", random_state=0).fit(X)
    assert [t.phase for t in trainer.loss_terms] == ["energy", "generator"]
    coreset = MEGTrainer(_config(network="coreset", advaug=0.01), SHAPE, device="cpu").fit(X)
    energy_term, generator_term = coreset.loss_terms
    assert energy_term.last_delta is None and generator_term.last_delta is not None


# ------------------------------------------------------------------- options off, detector
def test_options_off_leave_the_trainer_as_it_was():
    config = MEGConfig()
    assert (config.tickets.prune_rounds, config.tickets.diffaugment, config.tickets.advaug) == (
        0,
        "none",
        0.0,
    )
    X = _images()
    a = MEGTrainer(_config(), SHAPE, device="cpu", random_state=0).fit(X)
    assert a.loss_terms == [] and a.augment is None
    det = MEGDetector(network="conv", view="pixels", n_iter=2, width=8, random_state=0).fit(X)
    assert det.ticket_rounds_ == []


def test_detector_with_every_option_saves_loads_and_scores_the_same(tmp_path):
    X = _images(64)
    det = MEGDetector(
        network="conv", view="pixels", n_iter=3, width=8, latent_dim=4, batch_size=8,
        prune_rounds=2, prune_energy=True, diffaugment="color,translation,cutout", advaug=0.01,
        random_state=0,
    ).fit(X)  # fmt: skip
    assert [r["round"] for r in det.ticket_rounds_] == [0, 1, 2]
    assert det.ticket_rounds_[-1]["generator_sparsity"] == pytest.approx(0.36, abs=0.01)
    weights = prunable_weights(det.energy_net_)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert zeros / sum(w.numel() for w in weights.values()) == pytest.approx(0.36, abs=0.01)
    det.save(tmp_path / "model")
    loaded = MEGDetector.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))
    assert loaded.ticket_rounds_ == det.ticket_rounds_ and loaded.diffaugment == det.diffaugment
    with pytest.raises(ValueError, match="checkpoint_path"):
        MEGDetector(prune_rounds=1, checkpoint_path=str(tmp_path / "ck.pt"), n_iter=1).fit(X)


def test_a_resumed_run_with_augmentation_ends_as_an_uninterrupted_one(tmp_path):
    X, options = _images(), dict(diffaugment="color,translation,cutout", advaug=0.01)
    whole = MEGTrainer(_config(n_iter=4, **options), SHAPE, device="cpu", random_state=0).fit(X)
    path = tmp_path / "ckpt.pt"
    MEGTrainer(
        _config(n_iter=2, **options), SHAPE, device="cpu", random_state=0, checkpoint_path=path
    ).fit(X)
    resumed = MEGTrainer.from_checkpoint(path, device="cpu")
    resumed.config.schedule.n_iter = 4
    resumed.fit(X)
    for a, b in zip(whole.energy_net.parameters(), resumed.energy_net.parameters(), strict=True):
        assert torch.equal(a, b)  # the augmentations' random streams continued from the checkpoint
    for a, b in zip(whole.generator.parameters(), resumed.generator.parameters(), strict=True):
        assert torch.equal(a, b)
