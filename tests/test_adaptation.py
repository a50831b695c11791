"""Adapting a pretrained network's last stage to the normal class (coreset_meg.gan.adaptation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coreset_meg.anomaly import auroc
from coreset_meg.gan.adaptation import FeatureAdapter, adapted_features

FIT = dict(steps=300, learning_rate=1e-3, batch_size=32, pull=0.0)


def _toy(seed: int = 0, d: int = 16):
    """Normal activations spread along two directions; anomalies shifted along a third, which
    a random tail mixes with the normal spread (the frozen features rank them near chance)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]

    def draw(n: int, shift: float) -> np.ndarray:
        a = rng.normal(size=(n, 2)) @ basis[:2] * 3 + shift * basis[2]
        return (a + 0.1 * rng.normal(size=(n, d))).astype(np.float32)

    return draw(400, 0.0), draw(200, 0.0), draw(200, 1.5)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    tail = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    train, normal, anomalies = _toy()
    return tail, train, np.vstack([normal, anomalies]), np.r_[np.zeros(200), np.ones(200)]


def _energies(adapter: FeatureAdapter, tail: nn.Module, X: np.ndarray) -> np.ndarray:
    f = adapted_features(tail, X)
    return ((f - adapter.centre_.numpy()) ** 2).sum(1)


def test_adaptation_separates_what_the_frozen_features_mix(toy):
    tail, train, X, y = toy
    given = {k: v.clone() for k, v in tail.state_dict().items()}
    adapter = FeatureAdapter(tail, negatives="none", **FIT, random_state=0).fit(train)
    for name, value in tail.state_dict().items():  # the tail given is copied, not trained
        torch.testing.assert_close(value, given[name], rtol=0, atol=0)
    before = auroc(y, _energies(adapter, tail, X), higher="anomalous")
    after = auroc(y, _energies(adapter, adapter.tail_, X), higher="anomalous")
    assert before < 0.7 and after > 0.95
    normal = y == 0  # the validation energy of normal samples falls
    assert (
        _energies(adapter, adapter.tail_, X)[normal].mean()
        < 0.5 * _energies(adapter, tail, X)[normal].mean()
    )


def test_without_negatives_the_features_collapse_and_negatives_hold_them(toy):
    """Compactness alone pulls every feature, anomalies too, onto the class's mean; negatives
    (a broad Gaussian, or MEG's generator) keep the space spread."""
    tail, train, X, y = toy
    frozen = FeatureAdapter(tail, negatives="none", steps=0).fit(train)
    anomalies = y == 1
    start = _energies(frozen, tail, X)[anomalies].mean()
    spread = {}
    for negatives in ("none", "gaussian", "generator"):
        adapter = FeatureAdapter(tail, negatives=negatives, **FIT, random_state=0).fit(train)
        spread[negatives] = _energies(adapter, adapter.tail_, X)[anomalies].mean()
    assert spread["none"] < 0.2 * start  # collapsed towards the mean
    assert spread["gaussian"] > start and spread["generator"] > start  # held apart


def test_adapter_is_reproducible_from_its_seed(toy):
    tail, train, X, _ = toy
    a, b = (
        FeatureAdapter(tail, negatives="generator", steps=20, random_state=3).fit(train)
        for _ in range(2)
    )
    np.testing.assert_allclose(a.transform(X), b.transform(X), rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in a.history_] == [20]


def test_unknown_negatives_are_refused():
    with pytest.raises(ValueError, match="negatives must be one of"):
        FeatureAdapter(nn.Linear(2, 2), negatives="uniform")
