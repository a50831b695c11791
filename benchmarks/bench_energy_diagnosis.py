"""Why does the energy rank held-out digits near chance? Probes of a fitted MNIST detector.

On a held-out-digit validation split (seed 10, not reported by the benchmarks), prints the AUPRC /
AUROC of the detector, of 1-NN pixel distance, of a mixture energy on a 25% k-center core-set and
of 1-NN distance in the energy net's representation (input of its last linear layer), then where
training, test, generated and off-data samples sit in energy and in distance to the data::

    python benchmarks/bench_energy_diagnosis.py --digits 3 --data-root DATA
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import NearestNeighbors

from coreset_meg.anomaly import MEGDetector, auprc_trapezoid, auroc
from coreset_meg.anomaly.scoring import score_columns
from coreset_meg.anomaly.settings import preset
from coreset_meg.coreset import greedy_k_center
from coreset_meg.datasets import load_benchmark


def _flat(X: np.ndarray) -> np.ndarray:
    return X.reshape(len(X), -1)


def _representation(net: torch.nn.Module, X: np.ndarray) -> np.ndarray:
    """L2-normalised inputs of the net's last linear layer."""
    out: list[torch.Tensor] = []
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    hook = last.register_forward_hook(lambda m, i, o: out.append(i[0].detach()))
    with torch.no_grad():
        for start in range(0, len(X), 500):
            net(torch.from_numpy(X[start : start + 500]).float())
    hook.remove()
    F = torch.cat(out).numpy()
    return F / (np.linalg.norm(F, axis=1, keepdims=True) + 1e-12)


def _mixture_energy(bank: np.ndarray, X: np.ndarray, rng) -> np.ndarray:
    centres = bank[greedy_k_center(bank, len(bank) // 4, random_state=rng)]
    d2 = NearestNeighbors(n_neighbors=2).fit(centres).kneighbors(bank[:2000])[0] ** 2
    t = 0.1 * float(np.median(np.where(d2[:, 0] > 0, d2[:, 0], d2[:, 1])))
    d2x = ((X**2).sum(1)[:, None] - 2 * X @ centres.T + (centres**2).sum(1)).clip(min=0)
    return -t * torch.logsumexp(torch.from_numpy(-d2x / t), dim=1).numpy()


def diagnose(digit: int, seed: int, data_root) -> None:
    split = load_benchmark("mnist", "heldout", digit, root=data_root, random_state=seed)
    rng = np.random.default_rng(0)
    te = rng.choice(len(split.X_test), 3000, replace=False)
    X, y = split.X_test[te], split.y_test[te]
    bank = split.X_train[rng.choice(len(split.X_train), 10_000, replace=False)]
    det = MEGDetector(**preset("mnist"), random_state=seed).fit(split.X_train)
    nn_pixels = NearestNeighbors(n_neighbors=1).fit(_flat(bank))
    d = nn_pixels.kneighbors(_flat(X))[0][:, 0]
    net = det.energy_nets_[-1]
    rep = _representation(net, bank)
    scores = {
        f"MEG ({det.score_type})": -det.score_samples(X),
        "1-NN pixel distance (10k)": d,
        "core-set mixture energy (25% of 10k)": _mixture_energy(_flat(bank), _flat(X), rng),
        "1-NN in E's representation (10k)": NearestNeighbors(n_neighbors=1)
        .fit(rep)
        .kneighbors(_representation(net, X))[0][:, 0],
    }
    print(
        f"\n## Held-out digit {digit}, seed {seed}\n\n| score | AUPRC | AUROC |\n|:---|---:|---:|"
    )
    for name, s in scores.items():
        auprc, roc = auprc_trapezoid(y, s, higher="anomalous"), auroc(y, s, higher="anomalous")
        print(f"| {name} | {auprc:.3f} | {roc:.3f} |")
    with torch.no_grad():
        z = torch.randn(1000, det.latent_dim, generator=torch.Generator().manual_seed(seed))
        generated = det.generator_(z).numpy()
    probes = {
        "training": bank[:1000],
        "test normal": X[y == 0],
        "test anomaly": X[y == 1],
        "generated": generated,
        "uniform noise": rng.uniform(-1, 1, size=(300, *X.shape[1:])).astype(np.float32),
        "training + noise (sd 0.3)": np.clip(
            bank[:300] + rng.normal(0, 0.3, bank[:300].shape), -1, 1
        ),
    }
    base = score_columns(net, bank[:2000], ("energy",))[:, 0]
    print(
        "\n| samples | median energy (sd from training) | median 1-NN distance |\n|:---|---:|---:|"
    )
    for name, P in probes.items():
        e = (score_columns(net, P.astype(np.float32), ("energy",))[:, 0] - base.mean()) / base.std()
        print(
            f"| {name} | {np.median(e):.2f} | {np.median(nn_pixels.kneighbors(_flat(P))[0]):.2f} |"
        )
    e_anomaly = score_columns(net, X[y == 1], ("energy",))[:, 0]
    rho = pd.Series(e_anomaly).corr(pd.Series(d[y == 1]), method="spearman")
    print(f"\nSpearman(energy, 1-NN distance) among the anomalies: {rho:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digits", default="3", help="comma-separated held-out digits")
    parser.add_argument("--seed", type=int, default=10, help="split and training seed")
    parser.add_argument("--data-root", default=None, help="folder holding mnist/")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for digit in (int(d) for d in args.digits.split(",")):
        diagnose(digit, args.seed, args.data_root)
