"""Issue 31: stratified core-set batches. The plain k-center picks over-represent the outskirts
of each draw (the uniform latent box's faces, the data modes' tails); a stratified batch (one
random candidate of each k-center cell, weighted by the cell's size) estimates the prior and the
data without that bias. The trainer uses its weights in every loss, in both steps; generated
samples are drawn from the prior itself, which the weighted batches estimate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coreset_meg.gan.trainer as trainer_module
from coreset_meg.anomaly.benchmarks.mixture import COVERAGE_SETTINGS, run_mixture
from coreset_meg.coreset import CoresetSampler, LatentPrior
from coreset_meg.gan import MEGConfig, MEGTrainer
from coreset_meg.gan.losses import (
    energy_loss,
    generator_loss,
    jsd_mutual_information,
    weighted_mean,
)

PRIOR_NEAR_FACE = 1 - 0.9**2  # share of uniform [-1, 1]^2 draws with max |z_i| > 0.9
PRIOR_SECOND_MOMENT = 1 / 3  # E z_i^2 of uniform [-1, 1]


def _latents(stratified: bool, n_batches: int = 60, seed: int = 0):
    """The benchmark's latent selection (2-d uniform prior, 256 candidates -> 64)."""
    s = CoresetSampler(
        None, batch_size=64, latent_dim=2, prior_factor=4, data_factor=1, prior="uniform",
        n_samples=100, random_state=seed, stratified=stratified,
    )  # fmt: skip
    batches = [s.sample_prior_batch() for _ in range(n_batches)]
    z = torch.cat([b[0] for b in batches]).numpy().astype(np.float64)
    w = None if batches[0][1] is None else torch.cat([b[1] for b in batches]).numpy()
    return z, (np.ones(len(z)) if w is None else w.astype(np.float64))


def _near_face(z, w):
    return float(w @ (np.abs(z).max(1) > 0.9) / w.sum())


def _second_moment(z, w):
    return float(w @ (z**2).mean(1) / w.sum())


def test_kcenter_latents_crowd_the_box_faces_and_stratified_weights_undo_it():
    z, w = _latents(stratified=False)
    assert w.min() == 1  # plain picks: no weights
    assert _near_face(z, w) > PRIOR_NEAR_FACE + 0.06  # about 0.29 against 0.19
    assert _second_moment(z, w) > PRIOR_SECOND_MOMENT + 0.02  # about 0.36 against 0.33
    zs, ws = _latents(stratified=True)
    assert abs(_near_face(zs, ws) - PRIOR_NEAR_FACE) < 0.02
    assert abs(_second_moment(zs, ws) - PRIOR_SECOND_MOMENT) < 0.01
    assert zs.min() >= -1 and zs.max() <= 1


def test_stratified_data_batches_estimate_the_data():
    """Standard normal embeddings: k-center picks the tails; weighted stratified picks have the
    data's second moment."""
    emb = np.random.default_rng(0).standard_normal((5000, 2)).astype(np.float32)
    moments = {}
    for stratified in (False, True):
        s = CoresetSampler(
            emb, batch_size=32, latent_dim=2, data_factor=8, random_state=1, stratified=stratified
        )
        idx, w = zip(*(s.sample_data_batch() for _ in range(80)), strict=True)
        idx = np.concatenate(idx)
        w = np.ones(len(idx)) if w[0] is None else np.concatenate(w).astype(np.float64)
        moments[stratified] = float(w @ (emb[idx].astype(np.float64) ** 2).sum(1) / w.sum())
    assert moments[False] > 2.5  # the tails: about twice the data's 2
    assert abs(moments[True] - 2.0) < 0.2


def test_stratified_batches_are_one_member_of_each_cell_with_size_weights():
    emb = np.random.default_rng(3).standard_normal((400, 3)).astype(np.float32)
    s = CoresetSampler(emb, batch_size=10, latent_dim=4, data_factor=4, prior_factor=3,
                       random_state=0, stratified=True, lookahead=1)  # fmt: skip
    plain = CoresetSampler(emb, batch_size=10, latent_dim=4, data_factor=4, prior_factor=3,
                           random_state=0, lookahead=1)  # fmt: skip
    for _ in range(5):
        idx, w = s.sample_data_batch()
        z, wz = s.sample_prior_batch()
        assert len(set(idx.tolist())) == 10 and w.dtype == np.float32
        assert w.sum() == pytest.approx(10) and (w >= 10 / 40 - 1e-6).all()  # >= 1 member
        assert wz.sum().item() == pytest.approx(10) and tuple(z.shape) == (10, 4)
    # the same candidates and picks as plain batches: each kept point is in its pick's cell
    s2 = CoresetSampler(emb, batch_size=10, latent_dim=4, data_factor=4, random_state=5,
                        stratified=True, lookahead=1)  # fmt: skip
    rng = np.random.default_rng(5)
    cand = rng.choice(400, 40, replace=False)
    first = int(rng.integers(40))
    from coreset_meg.coreset import greedy_k_center

    picks = cand[greedy_k_center(emb[cand], 10, first=first)]
    idx, w = s2.sample_data_batch()
    d2 = ((emb[cand][:, None] - emb[picks][None]) ** 2).sum(-1)
    cells = d2.argmin(1)
    for j, i in enumerate(idx):
        assert cells[list(cand).index(i)] == j  # member of cell j
        assert w[j] == pytest.approx((cells == j).sum() * 10 / 40)
    # off, the sampler gives no weights and is unchanged
    assert plain.sample_data_batch()[1] is None and plain.sample_prior_batch()[1] is None


def test_stratified_sampler_state_round_trip():
    emb = np.random.default_rng(0).standard_normal((300, 2)).astype(np.float32)
    kw = dict(batch_size=8, latent_dim=2, random_state=0, stratified=True)
    a = CoresetSampler(emb, **kw)
    a.sample_data_batch(), a.sample_prior_batch()
    b = CoresetSampler(emb, **kw)
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        (ia, wa), (ib, wb) = a.sample_data_batch(), b.sample_data_batch()
        assert np.array_equal(ia, ib) and np.array_equal(wa, wb)
        (za, va), (zb, vb) = a.sample_prior_batch(), b.sample_prior_batch()
        assert torch.equal(za, zb) and torch.equal(va, vb)


def test_weighted_losses_reduce_to_the_plain_ones():
    g = torch.Generator().manual_seed(0)
    e_r, e_f, gp, t_j, t_m = (torch.randn(6, generator=g) for _ in range(5))
    ones = torch.ones(6)
    assert torch.equal(energy_loss(e_r, e_f, gp, 0.1), energy_loss(e_r, e_f, gp, 0.1, None, None))
    assert torch.allclose(
        energy_loss(e_r, e_f, gp, 0.1), energy_loss(e_r, e_f, gp, 0.1, ones, ones)
    )
    assert torch.allclose(
        jsd_mutual_information(t_j, t_m), jsd_mutual_information(t_j, t_m, ones, 2 * ones)
    )
    w = torch.tensor([2.0, 0, 0, 0, 0, 0])
    assert weighted_mean(e_r, w) == e_r[0]
    assert generator_loss(e_f, torch.tensor(0.0), weights=w) == e_f[0]


def test_trainer_weights_both_steps_and_samples_from_the_prior(monkeypatch):
    """Training: every energy step (real batch and negatives) and every generator step takes
    the stratified batches' weights. Evaluation: samples come from the prior, not the sampler
    (the weighted batches are an estimate of the prior, so the generator is trained for it)."""
    seen = {"energy": [], "generator": [], "mi": []}
    real_energy, real_gen, real_mi = (
        trainer_module.energy_loss, trainer_module.generator_loss,
        trainer_module.jsd_mutual_information,
    )  # fmt: skip

    def spy_energy(e_real, e_fake, gp, gp_weight, w_real=None, w_fake=None):
        seen["energy"].append((w_real, w_fake))
        return real_energy(e_real, e_fake, gp, gp_weight, w_real, w_fake)

    def spy_gen(e_fake, mi, entropy_weight=1.0, weights=None):
        seen["generator"].append(weights)
        return real_gen(e_fake, mi, entropy_weight, weights)

    def spy_mi(t_joint, t_marginal, w_joint=None, w_marginal=None):
        seen["mi"].append((w_joint, w_marginal))
        return real_mi(t_joint, t_marginal, w_joint, w_marginal)

    monkeypatch.setattr(trainer_module, "energy_loss", spy_energy)
    monkeypatch.setattr(trainer_module, "generator_loss", spy_gen)
    monkeypatch.setattr(trainer_module, "jsd_mutual_information", spy_mi)
    X = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    cfg = MEGConfig.from_params(n_iter=3, n_energy_steps=2, batch_size=8, latent_dim=2, width=8,
                                network="mlp", prior="uniform", stratified=True)  # fmt: skip
    trainer = MEGTrainer(cfg, (2,), device="cpu", random_state=0).fit(X)
    assert len(seen["energy"]) == 6 and len(seen["generator"]) == 3 and len(seen["mi"]) == 3
    for w_real, w_fake in seen["energy"]:
        assert w_real is not None and w_fake is not None
        assert w_real.sum().item() == pytest.approx(8) and w_fake.sum().item() == pytest.approx(8)
    assert all(w is not None for w in seen["generator"])
    assert all(wj is not None and wm is not None for wj, wm in seen["mi"])
    assert trainer.sampler.stratified
    # evaluation: the prior's own draws, whatever the sampler holds
    z = LatentPrior(2, "uniform").draw(50, torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(trainer.sample(50, seed=4), trainer.generator.eval()(z))


def test_stratified_off_trains_as_before():
    X = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    kw = dict(n_iter=2, n_energy_steps=1, batch_size=8, latent_dim=2, width=8, network="mlp")
    a = MEGTrainer(MEGConfig.from_params(**kw), (2,), device="cpu", random_state=0).fit(X)
    b = MEGTrainer(MEGConfig.from_params(**kw, stratified=False), (2,), device="cpu",
                   random_state=0).fit(X)  # fmt: skip
    c = MEGTrainer(MEGConfig.from_params(**kw, stratified=True), (2,), device="cpu",
                   random_state=0).fit(X)  # fmt: skip
    for p, q in zip(a.generator.parameters(), b.generator.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not all(
        torch.equal(p, q) for p, q in zip(a.generator.parameters(), c.generator.parameters(),
                                          strict=True)
    )  # fmt: skip


def test_mixture_runs_the_coverage_settings(tmp_path):
    names = [s.name for s in COVERAGE_SETTINGS]
    run_mixture([3], settings=names, seeds=[0], quick=True, out_dir=tmp_path)
    import pandas as pd

    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results["setting"]) == names
    assert results["prior_factor"].tolist() == [4, 1, 4]


# Item 3 of the issue (enough training): one learning-rate schedule for every batch setting.


def test_learning_rate_decays_linearly_after_its_start():
    cfg = MEGConfig.from_params(
        n_iter=10, network="mlp", width=8, learning_rate=1e-3, lr_decay_start=0.5
    )
    t = MEGTrainer(cfg, (2,), device="cpu", random_state=0)
    lrs = [t.learning_rate(step) for step in range(10)]
    assert lrs[:6] == [1e-3] * 6  # constant for the first half
    np.testing.assert_allclose(lrs[6:], [8e-4, 6e-4, 4e-4, 2e-4])  # then linearly towards 0
    with pytest.raises(ValueError, match="lr_decay_start"):
        MEGConfig.from_params(n_iter=10, network="mlp", lr_decay_start=1.0)


def test_training_sets_the_scheduled_rate_and_none_leaves_it():
    X = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    kw = dict(n_iter=4, n_energy_steps=1, batch_size=8, latent_dim=2, width=8, network="mlp")
    decayed = MEGTrainer(MEGConfig.from_params(**kw, lr_decay_start=0.5), (2,), device="cpu",
                         random_state=0).fit(X)  # fmt: skip
    last = decayed.learning_rate(3)  # the rate of the last iteration
    assert last == pytest.approx(2e-4 / 2)
    for opt in (decayed.opt_e, decayed.opt_g):
        assert [g["lr"] for g in opt.param_groups] == [last] * len(opt.param_groups)
    plain = MEGTrainer(MEGConfig.from_params(**kw), (2,), device="cpu", random_state=0).fit(X)
    assert all(g["lr"] == 2e-4 for g in plain.opt_g.param_groups)
