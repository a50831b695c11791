"""The MEG detector: an energy GAN on core-set batches behind the scikit-learn outlier API."""

from __future__ import annotations

import copy
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from gan import MEGConfig, MEGTrainer, build_networks, resolve_device
from gan.config import TRAINING_GROUPS, setting_fields

from .scoring import SCORE_TYPES, score_columns, score_kinds

__all__ = ["MEGDetector"]

_TRAINING_PARAMS = {f.name for _, f in setting_fields(TRAINING_GROUPS)} - {"bounded_output"}

# Training samples scored to standardise the snapshots and set offset_.
_MAX_CALIBRATION = 10_000
# A robust "auto" threshold: this many scaled median absolute deviations below the median.
_AUTO_MADS = 3.0


class MEGDetector(OutlierMixin, BaseEstimator):
    """Anomaly detector from an energy-based GAN (MEG) trained on core-set batches (Small-GAN).

    An energy network ``E(x)`` learns low energy on the training data, against negative samples
    from a generator that keeps its entropy high; batches of data and latents are chosen by greedy
    k-center from ``data_factor`` / ``prior_factor`` times larger random draws. The score of a
    sample is minus its energy (or minus the squared norm of the energy's input gradient), taken
    from an exponential moving average of the energy network's weights, which is far steadier than
    the last iterate.

    Score convention (as in scikit-learn): ``score_samples`` is **higher for normal** samples;
    ``decision_function = score_samples - offset_`` is negative for outliers; ``predict`` returns
    +1 for inliers and -1 for outliers.

    Parameters
    ----------
    n_iter : int, default=1000
        Generator updates; each follows ``n_energy_steps`` energy updates.
    batch_size : int, default=64
        Size of the core-set batches.
    n_energy_steps : int, default=5
        Energy updates per generator update.
    latent_dim : int, default=32
        Size of the generator's latent input.
    network : {"auto", "mlp", "conv"}, default="auto"
        Convolutional nets for image input (4-D ``X`` or ``image_shape`` given), MLPs otherwise.
    width : int or None, default=None
        MLP hidden units (256) or base conv channels (32).
    image_shape : tuple of int or None, default=None
        ``(C, H, W)``: read each row of a 2-D ``X`` as an image of this shape.
    learning_rate : float, default=2e-4
        Adam step size (betas 0.5, 0.9).
    gp_weight : float, default=1.0
        Weight of the zero-centred gradient penalty on real data.
    prior_factor, data_factor : int, default=4, 8
        Core-set over-sampling factors; 1 and 1 give plain random batches.
    projection_dim : int, default=32
        Random-projection size of the data embeddings used for the selection.
    embedding : str, default="pixels"
        Data embedding for the selection: raw values, or a path to a TorchScript extractor.
    ema_decay : float, default=0.99
        Decay of the moving average of the energy weights used to score (0 = last iterate).
    n_snapshots : int, default=10
        Snapshots of the averaged energy network, taken evenly over the second half of
        training, whose standardised scores are averaged (1 = the final network only).
    score_type : {"energy", "gradnorm", "energy+gradnorm"}, default="energy"
        ``E(x)``, the squared norm of ``grad_x E(x)``, or both: each standardised on the
        training data, then added (on MNIST the two fail on different digits, and their sum is
        better than either; README, "How the defaults were chosen").
    contamination : "auto" or float in (0, 0.5], default="auto"
        Share of training samples to call outliers; "auto" puts the threshold 3 scaled median
        absolute deviations below the median training score.
    scaling : {"auto", "minmax", "standard", "none"}, default="auto"
        Per-feature scaling fitted on the training data: "minmax" maps each feature's training
        range to [-1, 1], "standard" to zero mean and unit variance. "auto" is "minmax" for
        vectors and "none" for images (expected in [-1, 1]).
    device : str, default="auto"
        "auto" (CUDA when available), "cpu", "cuda", ...
    cache_dir : str or None, default=None
        Folder for cached data embeddings.
    random_state : int, RandomState or None, default=None
        Seeds everything in ``fit``; global random states are not touched.
    verbose : bool, default=False
        Progress bar on stderr.

    Attributes
    ----------
    energy_nets_ : list of torch.nn.Module
        Snapshots of the weight-averaged energy network taken evenly over the second half of
        training; the score averages their standardised energies.
    energy_net_ : torch.nn.Module
        The last of ``energy_nets_``.
    energy_mean_, energy_std_ : ndarray of shape (n_snapshots, n_scores)
        Mean and spread of each snapshot's scores on the training data (for standardising);
        ``n_scores`` is 2 for ``score_type="energy+gradnorm"`` and 1 otherwise.
    generator_ : torch.nn.Module
        The generator (draw samples with ``generator_(z)``).
    offset_ : float
        Threshold subtracted from ``score_samples`` in ``decision_function``, from the training
        scores (a seeded subsample of 10,000 when there are more training samples).
    input_shape_ : tuple of int
        Shape of one sample as the networks see it.
    n_features_in_ : int
        Number of columns of ``X`` seen in ``fit``.
    shift_, scale_ : ndarray or None
        Scaling fitted on the training data, ``(X - shift_) / scale_`` (None when not scaling).
    history_ : list of dict
        Training metrics recorded every 50 iterations.
    train_seconds_ : float
        Wall-clock seconds of the training loop.

    References
    ----------
    Kumar, Ozair, Goyal, Courville, Bengio. Maximum Entropy Generators for Energy-Based Models.
    arXiv:1901.08508, 2019.
    Sinha, Zhang, Goodfellow, Odena. Small-GAN: Speeding up GAN Training using Core-Sets.
    ICML 2020, arXiv:1910.13540.

    Examples
    --------
    >>> import numpy as np
    >>> from anomaly import MEGDetector
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> det = MEGDetector(n_iter=100, width=32, random_state=0).fit(X)
    >>> det.predict([[0.0, 0.0], [8.0, 8.0]]).tolist()
    [1, -1]
    """

    _parameter_constraints: dict = {
        "n_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 2, None, closed="left")],
        "n_energy_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "latent_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "network": [StrOptions({"auto", "mlp", "conv"})],
        "width": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "image_shape": [tuple, list, None],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "gp_weight": [Interval(numbers.Real, 0, None, closed="left")],
        "prior_factor": [Interval(numbers.Integral, 1, None, closed="left")],
        "data_factor": [Interval(numbers.Integral, 1, None, closed="left")],
        "projection_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "embedding": [str],
        "ema_decay": [Interval(numbers.Real, 0, 1, closed="left")],
        "n_snapshots": [Interval(numbers.Integral, 1, None, closed="left")],
        "score_type": [StrOptions(set(SCORE_TYPES))],
        "contamination": [StrOptions({"auto"}), Interval(numbers.Real, 0, 0.5, closed="right")],
        "scaling": [StrOptions({"auto", "minmax", "standard", "none"})],
        "device": [str],
        "cache_dir": [str, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        n_iter=1000,
        batch_size=64,
        n_energy_steps=5,
        latent_dim=32,
        network="auto",
        width=None,
        image_shape=None,
        learning_rate=2e-4,
        gp_weight=1.0,
        prior_factor=4,
        data_factor=8,
        projection_dim=32,
        embedding="pixels",
        ema_decay=0.99,
        n_snapshots=10,
        score_type="energy",
        contamination="auto",
        scaling="auto",
        device="auto",
        cache_dir=None,
        random_state=None,
        verbose=False,
    ):
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.n_energy_steps = n_energy_steps
        self.latent_dim = latent_dim
        self.network = network
        self.width = width
        self.image_shape = image_shape
        self.learning_rate = learning_rate
        self.gp_weight = gp_weight
        self.prior_factor = prior_factor
        self.data_factor = data_factor
        self.projection_dim = projection_dim
        self.embedding = embedding
        self.ema_decay = ema_decay
        self.n_snapshots = n_snapshots
        self.score_type = score_type
        self.contamination = contamination
        self.scaling = scaling
        self.device = device
        self.cache_dir = cache_dir
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers
    def _config(self) -> MEGConfig:
        """The trainer's config, built from the parameters and the fitted input shape."""
        params = self.get_params()
        return MEGConfig.from_params(
            **{k: v for k, v in params.items() if k in _TRAINING_PARAMS},
            bounded_output=len(self.input_shape_) == 3,
        )

    def _validate(self, X, *, reset: bool) -> np.ndarray:
        """Check ``X`` and bring it to the networks' layout ``(n, *input_shape_)`` as float32.

        ``n_features_in_`` counts the values of one sample, so images may be given flat (one row
        per image) or shaped, and a wrong count gets scikit-learn's usual message.
        """
        dtype = [np.float64, np.float32]
        if reset:
            X = validate_data(self, X, reset=True, allow_nd=True, dtype=dtype)
            self.input_shape_ = self._input_shape(X)
            self.n_features_in_ = int(np.prod(self.input_shape_))
        else:
            X = check_array(X, allow_nd=True, dtype=dtype)
        n_features = int(np.prod(X.shape[1:]))
        if n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input (samples of shape {self.input_shape_})"
            )
        X = np.array(X, dtype=np.float32, copy=True).reshape(len(X), *self.input_shape_)
        if reset:
            self._fit_scaling(X)
        if self.shift_ is not None:
            X = (X - self.shift_) / self.scale_
        return X

    def _input_shape(self, X: np.ndarray) -> tuple[int, ...]:
        if X.ndim == 3:  # (n, H, W) grey images
            return (1, *X.shape[1:])
        if X.ndim == 4:  # (n, C, H, W)
            return tuple(X.shape[1:])
        if X.ndim == 2 and self.image_shape is not None:
            shape = tuple(int(s) for s in self.image_shape)
            if int(np.prod(shape)) != X.shape[1]:
                raise ValueError(
                    f"image_shape {shape} holds {int(np.prod(shape))} values "
                    f"but X has {X.shape[1]} features"
                )
            return shape
        if X.ndim == 2:
            return (X.shape[1],)
        raise ValueError(f"X must be 2-D (samples, features) or images, got {X.ndim}-D")

    def _fit_scaling(self, X: np.ndarray) -> None:
        """Per-feature ``shift_`` and ``scale_`` such that ``(X - shift_) / scale_`` is scaled."""
        scaling = self.scaling
        if scaling == "auto":
            scaling = "minmax" if len(self.input_shape_) == 1 else "none"
        if scaling == "none":
            self.shift_, self.scale_ = None, None
            return
        if scaling == "standard":
            shift, spread = X.mean(axis=0), X.std(axis=0)
        else:  # minmax: the training range maps to [-1, 1]
            lo, hi = X.min(axis=0), X.max(axis=0)
            shift, spread = (lo + hi) / 2, (hi - lo) / 2
        self.shift_ = shift.astype(np.float32)
        self.scale_ = np.where(spread > 1e-8, spread, 1.0).astype(np.float32)

    # ---------------------------------------------------------------------- API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the energy GAN on ``X`` (assumed normal) and set the threshold ``offset_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), (n, H, W) or (n, C, H, W)
            Training samples.
        y : ignored

        Returns
        -------
        self
        """
        X = self._validate(X, reset=True)
        if len(X) < 2:
            raise ValueError(f"n_samples={len(X)}: MEGDetector needs at least 2 samples to fit")
        rng = check_random_state(self.random_state)
        self.device_ = resolve_device(self.device)
        trainer = MEGTrainer(
            self._config(),
            self.input_shape_,
            device=self.device_,
            random_state=rng,
            verbose=self.verbose,
            cache_dir=self.cache_dir,
        ).fit(X)
        self._rebuild_networks(len(trainer.snapshots))
        for net, state in zip(self.energy_nets_, trainer.snapshots, strict=True):
            net.load_state_dict(state)
        self.generator_.load_state_dict(trainer.generator.state_dict())
        # Standardisation and threshold from the training scores (a seeded subsample of
        # _MAX_CALIBRATION samples on large data sets, to keep scoring time in check).
        if len(X) > _MAX_CALIBRATION:
            X = X[np.sort(rng.choice(len(X), _MAX_CALIBRATION, replace=False))]
        per_net = self._snapshot_scores(X)  # (n, n_snapshots, n_scores)
        self.energy_mean_ = per_net.mean(axis=0)
        self.energy_std_ = np.maximum(per_net.std(axis=0), 1e-12)
        self.history_ = trainer.history
        self.train_seconds_ = trainer.seconds
        self.selection_seconds_ = trainer.selection_seconds
        self._set_offset(self._combine(per_net))
        return self

    def _set_offset(self, train_scores: np.ndarray) -> None:
        if self.contamination == "auto":
            median = np.median(train_scores)
            mad = 1.4826 * np.median(np.abs(train_scores - median))
            self.offset_ = float(median - _AUTO_MADS * mad)
        else:
            self.offset_ = float(np.percentile(train_scores, 100.0 * self.contamination))

    def _snapshot_scores(self, X: np.ndarray) -> np.ndarray:
        """Anomaly scores of validated input under each snapshot and single score kind, shape
        (n, n_snapshots, n_scores)."""
        kinds = score_kinds(self.score_type)
        columns = [score_columns(net, X, kinds, device=self.device_) for net in self.energy_nets_]
        return np.stack(columns, axis=1)  # (n, n_snapshots, n_scores)

    def _combine(self, per_net: np.ndarray) -> np.ndarray:
        """``score_samples`` from per-snapshot anomaly scores: minus their standardised mean."""
        return -((per_net - self.energy_mean_) / self.energy_std_).mean(axis=(1, 2))

    def _raw_scores(self, X: np.ndarray) -> np.ndarray:
        """``score_samples`` of already-validated input (higher = more normal)."""
        return self._combine(self._snapshot_scores(X))

    def score_samples(self, X):
        """Minus the anomaly score: **higher for normal** samples.

        The anomaly score is the energy ``E(x)`` (``score_type="energy"``), the squared norm of
        its input gradient (``score_type="gradnorm"``), or both, standardised and added.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self._raw_scores(self._validate(X, reset=False))

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for outliers, positive for inliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for inliers, -1 for outliers (``decision_function < 0``)."""
        decision = self.decision_function(X)
        return np.where(decision < 0, -1, 1)

    # ------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Save to a folder (weights + JSON config), atomically; see :func:`anomaly.save_model`."""
        from .persistence import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path, *, device="cpu") -> MEGDetector:
        """Load a detector saved with :meth:`save`; see :func:`anomaly.load_model`."""
        from .persistence import load_model

        return load_model(path, device=device)

    def _rebuild_networks(self, n_energy: int) -> None:
        """Fresh networks of the fitted shapes; their weights are loaded afterwards."""
        cfg = self._config()
        with torch.random.fork_rng(devices=[]):  # leave the global random state alone
            energy, generator, _ = build_networks(
                self.input_shape_,
                cfg.networks.latent_dim,
                kind=cfg.networks.network,
                width=cfg.networks.width,
                bounded=cfg.networks.bounded_output,
            )
        self.energy_nets_ = [copy.deepcopy(energy).to(self.device_).eval() for _ in range(n_energy)]
        self.energy_net_ = self.energy_nets_[-1]
        self.generator_ = generator.to(self.device_).eval()
