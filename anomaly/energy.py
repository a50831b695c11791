"""The detector proper: the MEG energy on the networks' input, trained, standardised and
thresholded (the last part of :class:`~coreset_meg.anomaly.MEGDetector`'s pipeline,
:mod:`coreset_meg.anomaly.preprocessing` has the others).

:class:`MEGEnergy` takes what :class:`~coreset_meg.anomaly.preprocessing.Scaler` gives and the
trainer's resolved config; the detector fits one and keeps its fitted state as its own.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from coreset_meg.common import distributed, first_line
from coreset_meg.gan import MEGConfig, MEGTrainer, networks_from_config, resolve_device
from coreset_meg.gan.tickets import WeightMasks, find_ticket
from coreset_meg.gan.trainer import data_fingerprint, seed_from, views_calibration_rows

from .scoring import score_columns, score_kinds

__all__ = ["FITTED", "MEGEnergy", "build_energy_networks", "offset_from", "snapshot_scores"]

# Training samples scored to standardise the snapshots and set offset_.
_MAX_CALIBRATION = 10_000
# Scoring batch: score_samples' chunks hold whole batches of it, so chunking changes no score.
SCORE_BATCH = 512
# A robust "auto" threshold: this many scaled median absolute deviations below the median.
_AUTO_MADS = 3.0
#: The fitted attributes of :class:`MEGEnergy`, which the detector keeps as its own.
FITTED = (
    "device_", "network_shape_", "views_", "prior_shape_", "energy_nets_", "energy_net_",
    "energy_mean_", "energy_std_", "generator_", "history_", "n_iter_", "torch_threads_",
    "train_seconds_", "ticket_rounds_", "selection_seconds_", "train_scores_", "offset_",
)  # fmt: skip


class MEGEnergy(OutlierMixin, BaseEstimator):
    """The MEG energy, trained on the networks' input (scaled vectors or images).

    ``score_samples`` is minus the snapshots' mean standardised energy (**higher for normal**
    samples); ``offset_`` is set from the training scores by ``contamination``.

    Parameters
    ----------
    config : coreset_meg.gan.MEGConfig
        The trainer's config with every setting resolved (the detector's ``_config()``).
    views : int, default=None
        The both view's pixel columns (a :class:`~coreset_meg.gan.networks.ViewsEnergy`).
    score_type, contamination, random_state, device, cache_dir, checkpoint_path,
    checkpoint_every, verbose
        As :class:`~coreset_meg.anomaly.MEGDetector`'s.
    prior : coreset_meg.coreset.Prior, default=None
        The generator's inputs (None: latents; Spider GAN's friendly set, or a cascade).
    """

    def __init__(
        self, *, config=None, views=None, score_type="energy", contamination="auto",
        random_state=None, device="auto", prior=None, cache_dir=None, checkpoint_path=None,
        checkpoint_every=0, verbose=False,
    ):  # fmt: skip
        self.config = config
        self.views = views
        self.score_type = score_type
        self.contamination = contamination
        self.random_state = random_state
        self.device = device
        self.prior = prior
        self.cache_dir = cache_dir
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.verbose = verbose

    def fit(self, X: np.ndarray, y=None):
        """Train on the networks' input ``X`` (float32, assumed normal); returns ``self``."""
        config = MEGConfig() if self.config is None else self.config
        self.device_ = resolve_device(self.device)
        self.network_shape_ = tuple(X.shape[1:])
        self.views_ = self.views
        self.prior_shape_ = None if self.prior is None else tuple(self.prior.shape)
        rng = check_random_state(self.random_state)
        trainer = self._trainer(config, rng, X)
        self.ticket_rounds_ = self._find_ticket(trainer, X)  # lottery ticket: masks on trainer
        trainer.fit(X)
        build_energy_networks(self, config, len(trainer.snapshots))
        for net, state in zip(self.energy_nets_, trainer.snapshots, strict=True):
            net.load_state_dict(state)
            if self.views_ is not None and config.schedule.n_iter:  # read trained energies
                net.calibrate(views_calibration_rows(torch.from_numpy(X), trainer.seed))
        if config.schedule.n_iter:
            self.generator_.load_state_dict(trainer.sampling_generator.state_dict())
        else:  # nothing was trained: there is no generator to keep or to save
            self.generator_ = None
        # Standardisation and threshold from the training scores (a seeded subsample of
        # _MAX_CALIBRATION samples on large data sets, to keep scoring time in check).
        if len(X) > _MAX_CALIBRATION:  # under torchrun: rank 0's choice (random_state=None)
            rows = distributed.broadcast_array(np.sort(rng.choice(len(X), _MAX_CALIBRATION, False)))
            X = X[rows]
        per_net = snapshot_scores(self, X)  # (n, n_snapshots, n_scores)
        self.energy_mean_ = per_net.mean(axis=0)
        self.energy_std_ = np.maximum(per_net.std(axis=0), 1e-12)
        self.history_ = trainer.history
        self.n_iter_ = config.schedule.n_iter
        self.torch_threads_ = torch.get_num_threads()
        self.train_seconds_ = trainer.seconds + sum(r["seconds"] for r in self.ticket_rounds_)
        if self.ticket_rounds_:
            self.ticket_rounds_.append(dict(self.ticket_rounds_.pop(), seconds=trainer.seconds))
        self.selection_seconds_ = trainer.selection_seconds
        self.train_scores_ = self.combine(per_net)
        self.offset_ = offset_from(self.train_scores_, contamination=self.contamination)
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Minus the mean standardised energy of the networks' input: higher = more normal."""
        check_is_fitted(self)
        return self.combine(snapshot_scores(self, X))

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """+1 for inliers, -1 for outliers."""
        decision = self.decision_function(X)
        return np.where(np.isfinite(decision) & (decision >= 0), 1, -1)

    def combine(self, per_net: np.ndarray) -> np.ndarray:
        """``score_samples`` from per-snapshot anomaly scores: minus their standardised mean."""
        return -((per_net - self.energy_mean_) / self.energy_std_).mean(axis=(1, 2))

    def _find_ticket(self, trainer: MEGTrainer, X: np.ndarray) -> list[dict]:
        """With ``prune_rounds``: find a lottery ticket
        (:func:`coreset_meg.gan.tickets.find_ticket`) and attach its masks to ``trainer``; the
        rounds' records (the last one is the final training's, its seconds set after it)."""
        tickets = trainer.config.tickets
        if not tickets.prune_rounds:
            return []
        if self.checkpoint_path is not None:
            raise ValueError(
                "prune_rounds cannot be combined with checkpoint_path: the pruning rounds and "
                "their masks are not checkpointed"
            )
        rounds = []

        def record(round_: int, done: MEGTrainer, masks: WeightMasks) -> None:
            rounds.append(_ticket_record(round_, masks, done.seconds))

        masks = find_ticket(trainer, X, on_round=record)
        return [*rounds, _ticket_record(tickets.prune_rounds, masks, 0.0)]

    def _trainer(self, config: MEGConfig, rng, X: np.ndarray) -> MEGTrainer:
        """A new trainer, or the one in ``checkpoint_path`` when it exists and matches.

        A checkpoint is resumed only with the settings, seed and data (its fingerprint) it was
        written with. One that does not match is an error while its run is unfinished; the
        checkpoint of a finished fit (another fold of a cross-validation, say) is replaced.
        """
        kwargs = dict(
            prior=self.prior,
            verbose=self.verbose,
            cache_dir=self.cache_dir,
            checkpoint_path=self.checkpoint_path,
            checkpoint_every=self.checkpoint_every,
            views=self.views_,
        )
        seed = seed_from(rng)  # drawn either way, so the rest of fit is the same
        path = self.checkpoint_path
        fingerprint = data_fingerprint(X) if path is not None else None

        def fresh() -> MEGTrainer:
            trainer = MEGTrainer(config, self.network_shape_, device=self.device_,
                                 random_state=seed, **kwargs)  # fmt: skip
            trainer.data_fingerprint = fingerprint
            return trainer

        if path is None or not Path(path).exists():
            return fresh()
        try:
            trainer = MEGTrainer.from_checkpoint(path, device=self.device_, **kwargs)
        except Exception as err:  # torch raises many kinds on a damaged file
            raise ValueError(f"cannot resume from {path}: {first_line(err)}") from None
        same = (
            trainer.config.to_dict() == config.to_dict()
            and trainer.input_shape == tuple(self.network_shape_)
            and trainer.seed == seed
        )
        same_data = trainer.data_fingerprint in (None, fingerprint)  # None: an older file
        if same and same_data:
            return trainer
        if trainer.step >= trainer.config.schedule.n_iter:  # a finished fit's: not resumed
            logging.getLogger(__name__).info(
                "replacing the checkpoint %s of a finished fit on other settings or data", path
            )
            return fresh()
        if same:
            raise ValueError(
                f"cannot resume from {path}: it was written for other training data (same "
                "shape, other values); resume with the data it started on, or remove it"
            )
        raise ValueError(
            f"cannot resume from {path}: it was written with other settings, seed or data "
            "shape (remove it to start afresh)"
        )


def build_energy_networks(owner, config: MEGConfig, n_energy: int) -> None:
    """Fresh networks of ``owner``'s fitted shapes (``network_shape_``, ``views_``,
    ``prior_shape_``, on ``device_``) as its ``energy_nets_``, ``energy_net_`` and
    ``generator_``; their weights are loaded afterwards. The global random state is left alone."""
    with torch.random.fork_rng(devices=[]):
        energy, generator, _ = networks_from_config(
            config,
            owner.network_shape_,
            views=getattr(owner, "views_", None),
            prior_shape=getattr(owner, "prior_shape_", None),
        )
    owner.energy_nets_ = [copy.deepcopy(energy).to(owner.device_).eval() for _ in range(n_energy)]
    owner.energy_net_ = owner.energy_nets_[-1]
    owner.generator_ = generator.to(owner.device_).eval()


def snapshot_scores(owner, X: np.ndarray) -> np.ndarray:
    """Anomaly scores of the networks' input under each of ``owner``'s snapshots
    (``energy_nets_``) and single score kinds (``score_type``), shape (n, n_snapshots,
    n_scores). Under torchrun each rank scores a share of the rows, in the batches one process
    would use, and every rank gets all of them."""
    kinds = score_kinds(owner.score_type)

    def scores(rows: np.ndarray) -> np.ndarray:
        columns = [
            score_columns(net, rows, kinds, batch_size=SCORE_BATCH, device=owner.device_)
            for net in owner.energy_nets_
        ]
        return np.stack(columns, axis=1)  # (n, n_snapshots, n_scores)

    return distributed.map_rows(scores, X, block=SCORE_BATCH)


def offset_from(train_scores: np.ndarray, *, contamination) -> float:
    """``offset_`` from training ``score_samples``: the ``contamination`` percentile, or for
    ``'auto'`` 3 scaled MADs below their median."""
    if contamination == "auto":
        median = np.median(train_scores)
        mad = 1.4826 * np.median(np.abs(train_scores - median))
        return float(median - _AUTO_MADS * mad)
    return float(np.percentile(train_scores, 100.0 * contamination))


def _ticket_record(round_: int, masks: WeightMasks, seconds: float) -> dict:
    return {
        "round": round_,
        "generator_sparsity": masks.sparsity("generator"),
        "energy_sparsity": masks.sparsity("energy_net"),
        "seconds": float(seconds),
    }
