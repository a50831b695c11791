"""The MEG detector: an energy GAN on core-set batches behind the scikit-learn outlier API."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted

from coreset_meg.features.pretrained import torchscript_file, with_torchscript_file
from coreset_meg.gan import MEGConfig, resolve_device
from coreset_meg.gan.config import TRAINING_GROUPS, setting_fields

from .energy import (
    FITTED,
    SCORE_BATCH,
    MEGEnergy,
    build_energy_networks,
    offset_from,
    snapshot_scores,
)
from .friendly import generator_prior
from .persistence import ModelFileError, file_sha256, first_line, read_model, write_model
from .preprocessing import (
    FeatureTransformer,
    InputTransformer,
    Resolved,
    Scaler,
    resolve_gaussian_weight,
    resolve_settings,
)
from .scoring import check_method, outlier_probability, score_kinds
from .settings import GROUPS, TRAINER_PARAMS, Scoring, detector_params, group_params

__all__ = ["MEGDetector", "load_model", "save_model"]

# score_samples validates and scores at most about this many bytes of float32 input at a time,
# so a large or memory-mapped array is never copied whole; chunks hold whole scoring batches
# (score_columns' 512 rows), so chunking never changes a score.
_CHUNK_BYTES = 16 * 2**20
_SCORE_BATCH = SCORE_BATCH


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

    PyOD's conventions (higher = more anomalous, 0 / 1 labels) are those of
    :class:`~coreset_meg.anomaly.PyODAdapter`: ``PyODAdapter(MEGDetector(...)).fit(X)``, or
    ``PyODAdapter.from_fitted(detector)`` for a detector already fitted or loaded.

    Parameters
    ----------
    view : {"auto", "pixels", "features", "both"}, default="auto"
        For images: the networks see their pixels, their pretrained features, or both side by
        side (each part scaled to the same typical nearest-neighbour distance). "auto":
        features for colour images, both for grey ones with the core-set energy (pixels with
        the other networks); other inputs are taken as they are.
    features : str, default="auto"
        Image feature extractor of the features view
        (:func:`coreset_meg.features.make_embedder`'s names): ``"efficientnet-lite0[@SIZE]"``
        (128 px), ``"efficientnet-lite1[@SIZE]"``, ``"inception[@SIZE]"``,
        ``"torchscript:PATH[@SIZE]"``, ``"torchvision:ARCH:WEIGHTS[@SIZE]"``, ``"mirror:NAME"``
        (each image and its mirror image) or ``"A+B"`` (side by side). "auto": for colour
        images ``"mirror:efficientnet-lite0+efficientnet-lite1@240"`` (the accurate one; 5 to 14
        times the embedding time of ``"efficientnet-lite0"``, the fast one), for grey images
        ``"efficientnet-lite0"``.
    image_range : {"auto", "symmetric", "unit"}, default="auto"
        Range of float images: symmetric ([-1, 1]) or unit ([0, 1], torchvision's
        ``ToTensor``). "auto": [-1, 1], refusing float images with no negative value, which
        could be either. Integer images are scaled by their dtype (uint8 0..255, uint16
        0..65535).
    image_shape : tuple of int, default=None
        ``(C, H, W)``: read each row of a 2-D ``X`` as an image.
    scaling : {"auto", "minmax", "standard", "l2", "none"}, default="auto"
        Scaling fitted on the training data: per feature (minmax, standard), each sample to
        unit length (l2) or none. "auto": l2 for image features, minmax for other vectors, none
        for pixels, each part to its nearest-neighbour scale for both.
    network : {"coreset", "auto", "mlp", "conv"}, default="coreset"
        Energy network: ``"coreset"``, a mixture energy on a k-center core-set of the training
        samples, times a Gaussian; or a network with weights, ``"mlp"`` or ``"conv"`` ("auto":
        conv for images, mlp otherwise).
    coreset_fraction : float in (0, 1], default=1.0
        Core-set energy: share of the training samples kept as its centres (greedy k-center).
    gaussian_weight : float >= 0, default=None
        Core-set energy: weight of its shrunk-covariance Gaussian term (0: none), in units of
        the temperature's scale per input dimension. None: 0.3 for image features, else 0.
    max_centres : int >= 2, default=10000
        Core-set energy: at most this many centres (memory and time).
    temperature : float > 0, default=0.05
        Core-set energy: initial temperature, times the median squared distance from a
        training sample to its nearest other one.
    n_iter : int >= 0, default=None
        Generator updates of MEG training. None: 0 for the core-set energy (MEG training does
        not move its score), 100 for the networks with weights.
    score_type : {"energy", "gradnorm", "energy+gradnorm"}, default="energy"
        Anomaly score: ``E(x)``, the squared norm of its input gradient, or both standardised
        and added.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Share of training samples called outliers; "auto": 3 scaled MADs below the median
        training score.
    training : coreset_meg.gan.MEGConfig, default=None
        The trainer's other settings, for research: the networks' size, the objective and
        optimiser, Small-GAN's core-set batches (``stratified``, ``truncation``), Spider GAN's
        friendly prior, BigGAN's options (spectral norm, orthogonal regularisation, EMA of the
        generator), lottery tickets, DiffAugment and AdvAug; see :mod:`coreset_meg.gan.config`.
        None: the defaults. The detector's own training parameters (``network``, the core-set
        energy's, ``n_iter``) are copied into it; setting them there to other values is an error.
    random_state : int, RandomState instance or None, default=None
        Seeds everything in ``fit``; global random states are left alone.
    device : str, default="auto"
        "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    cache_dir : str, default=None
        Folder for cached image embeddings (None: not cached).
    checkpoint_path : str, default=None
        Training checkpoint file: ``fit`` continues from it when it exists (same settings,
        seed and data), and writes it every ``checkpoint_every`` iterations and at the end.
    checkpoint_every : int >= 0, default=0
        Iterations between checkpoints (0: only at the end).
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
    generator_ : torch.nn.Module or None
        The generator (draw samples with ``generator_(z)``); its weight average when
        ``generator_ema`` is set. None when nothing was trained (``n_iter=0``, the default
        for the core-set energy).
    offset_ : float
        Threshold subtracted from ``score_samples`` in ``decision_function``, from the training
        scores (a seeded subsample of 10,000 when there are more training samples).
    train_scores_ : ndarray of shape (n_train,)
        ``score_samples`` (higher = more normal) of those training samples: ``n_train`` is
        ``min(n_samples, 10000)``. ``set_threshold(contamination=...)`` reads them.
    input_shape_ : tuple of int
        Shape of one sample as the networks see it.
    features_ : str
        The feature extractor ``features`` resolved to at fit (saved with the model).
    n_features_in_ : int
        Number of columns of ``X`` seen in ``fit``.
    shift_, scale_ : ndarray or None
        Scaling fitted on the training data, ``(X - shift_) / scale_`` (None when not scaling).
        Each feature is scaled by its own spread, however small.
    constant_ : ndarray of bool or None
        The features that were exactly constant in training (None: none, or not scaling). A
        sample with any of them off its training value is an outlier: ``score_samples`` gives
        it at most ``offset_ - 1``.
    n_iter_ : int
        Generator updates done (``n_iter`` resolved: 0 when nothing was trained).
    history_ : list of dict
        Training metrics recorded every 50 iterations.
    train_seconds_ : float
        Wall-clock seconds of the training loop (every pruning round included).
    ticket_rounds_ : list of dict
        With ``prune_rounds``: per training (the pruning rounds, then the final one) its
        ``round``, the share of G's and E's prunable weights removed (``generator_sparsity``,
        ``energy_sparsity``) and its ``seconds``; empty for a dense run.
    torch_threads_ : int
        Torch threads during ``fit`` (scores are bit-reproducible for the same seed, torch build
        and thread count on a CPU).

    Notes
    -----
    ``decision_scores_``, ``threshold_``, ``labels_`` and ``predict_proba`` (PyOD's
    conventions) are deprecated here: :class:`~coreset_meg.anomaly.PyODAdapter` has them.

    All parameters are keyword-only. Each is declared once, with its valid values, as a setting
    of :mod:`coreset_meg.anomaly.settings` (inputs, scoring, run) or :mod:`coreset_meg.gan.config`
    (the trainer's groups), and checked in ``fit``; the same declarations give ``anomaly fit``'s
    options and ``model.json``'s settings (:func:`coreset_meg.anomaly.settings.detector_params`
    turns those flat settings into this class's arguments).

    References
    ----------
    Kumar, Ozair, Goyal, Courville, Bengio. Maximum Entropy Generators for Energy-Based Models.
    arXiv:1901.08508, 2019.
    Sinha, Zhang, Goodfellow, Odena. Small-GAN: Speeding up GAN Training using Core-Sets.
    ICML 2020, arXiv:1910.13540.

    Examples
    --------
    >>> import numpy as np
    >>> from coreset_meg.anomaly import MEGDetector
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> det = MEGDetector(random_state=0).fit(X)
    >>> det.predict([[0.0, 0.0], [8.0, 8.0]]).tolist()
    [1, -1]

    Research options go to the trainer as one config:

    >>> from coreset_meg.gan import MEGConfig
    >>> training = MEGConfig.from_params(width=32, spectral_norm="both")
    >>> det = MEGDetector(network="mlp", n_iter=100, training=training, random_state=0).fit(X)
    >>> det.predict([[0.0, 0.0], [8.0, 8.0]]).tolist()
    [1, -1]
    """

    def __init__(
        self,
        *,
        view="auto",
        features="auto",
        image_range="auto",
        image_shape=None,
        scaling="auto",
        network="coreset",
        coreset_fraction=1.0,
        gaussian_weight=None,
        max_centres=10_000,
        temperature=0.05,
        n_iter=None,
        score_type="energy",
        contamination="auto",
        training=None,
        random_state=None,
        device="auto",
        cache_dir=None,
        checkpoint_path=None,
        checkpoint_every=0,
        verbose=False,
    ):
        self.view = view
        self.features = features
        self.image_range = image_range
        self.image_shape = image_shape
        self.scaling = scaling
        self.network = network
        self.coreset_fraction = coreset_fraction
        self.gaussian_weight = gaussian_weight
        self.max_centres = max_centres
        self.temperature = temperature
        self.n_iter = n_iter
        self.score_type = score_type
        self.contamination = contamination
        self.training = training
        self.random_state = random_state
        self.device = device
        self.cache_dir = cache_dir
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers
    def _settings(self) -> dict:
        """Every setting, flat (``{name: value}``, as :data:`coreset_meg.anomaly.settings.GROUPS`
        declares them): the detector's parameters and those of its ``training`` config."""
        training = self._training()
        settings = {
            field.name: getattr(getattr(training, group), field.name)
            for group, field in setting_fields(TRAINING_GROUPS)
        }
        settings.update(self.get_params(deep=False))
        del settings["training"]
        return settings

    def _training(self) -> MEGConfig:
        """``training``, or the default config; a field set there that is also a detector
        parameter must agree with it (ValueError)."""
        training = MEGConfig() if self.training is None else self.training
        if not isinstance(training, MEGConfig):
            raise ValueError(
                "training must be a coreset_meg.gan.MEGConfig or None, got "
                f"{type(training).__name__}"
            )
        defaults = MEGConfig()
        clash = [
            name
            for group, names in TRAINER_PARAMS.items()
            for name in names
            if getattr(getattr(training, group), name)
            not in (getattr(getattr(defaults, group), name), getattr(self, name))
        ]
        if clash:
            raise ValueError(
                f"training sets {', '.join(clash)}, which are MEGDetector parameters: set "
                f"them on the detector (MEGDetector({clash[0]}=...))"
            )
        return training

    def _config(self) -> MEGConfig:
        """The trainer's config: ``training`` with the detector's training parameters in it,
        "auto" values resolved for the fitted input once it is known. Every parameter is
        checked (ValueError naming a bad one)."""
        params = self.get_params(deep=False)
        for name in ("inputs", "scoring", "run"):
            GROUPS[name].pick(params)
        training = copy.deepcopy(self._training())
        config = MEGConfig(
            networks=dataclasses.replace(
                training.networks, **{k: params[k] for k in TRAINER_PARAMS["networks"]}
            ),
            objective=training.objective,
            batches=training.batches,
            schedule=dataclasses.replace(training.schedule, n_iter=self.n_iter),
            tickets=training.tickets,
        )
        if hasattr(self, "gaussian_weight_"):  # resolved at fit (resolve_settings)
            config.networks.gaussian_weight = self.gaussian_weight_
        return config

    def _validate(self, X, *, reset: bool = False) -> np.ndarray:
        """``X`` through the fitted parts (input, view, scaling): the networks' input."""
        if reset:
            raise ValueError("fit sets up the parts; _validate only transforms")
        X = self.input_transformer_.transform(X, image_range=self.image_range)
        return self._network_input(X)

    def _network_input(self, X: np.ndarray) -> np.ndarray:
        """Model input ``(n, *input_shape_)`` (images in [-1, 1]) as the networks see it: the
        view (pixels, features or both), then the scaling."""
        return self.scaler_.transform(self.feature_transformer_.transform(X))

    def _embed(self, X: np.ndarray) -> np.ndarray:
        """Pretrained features of images in [-1, 1] (cached on disk with ``cache_dir``)."""
        return self.feature_transformer_.embed(X)

    # Fitted state of the parts, under the names the detector has always had.
    input_shape_ = property(lambda self: self.input_transformer_.input_shape_)
    n_features_in_ = property(lambda self: self.input_transformer_.n_features_in_)
    feature_names_in_ = property(lambda self: self.input_transformer_.feature_names_in_)
    embedder_ = property(lambda self: self.feature_transformer_.embedder_)
    shift_ = property(lambda self: self.scaler_.shift_)
    scale_ = property(lambda self: self.scaler_.scale_)
    unit_norm_ = property(lambda self: self.scaler_.unit_norm_)
    constant_ = property(lambda self: self.scaler_.constant_)

    def _torchscript_file(self) -> str | None:
        """The TorchScript file the features view runs (code from outside the package and the
        model folder), or None."""
        if getattr(self, "view_", "pixels") not in ("features", "both"):
            return None
        features = getattr(self, "features_", self.features)
        if not isinstance(features, str):
            return None
        return torchscript_file(features)

    # ---------------------------------------------------------------------- API
    def fit(self, X, y=None):
        """Train the energy GAN on ``X`` (assumed normal) and set the threshold ``offset_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), (n, H, W) or (n, C, H, W)
            Training samples. Images are floats in [-1, 1] (or in [0, 1] with
            ``image_range="unit"``; float images with no negative value are refused unless
            ``image_range`` says which), or integers scaled by their dtype (uint8 read as
            0..255, uint16 as 0..65535); scoring reads them the same way. Images may be given
            channels last, (n, H, W, C) with C 1 or 3, as
            :func:`coreset_meg.datasets.load_image_folder` returns them. A data frame's column names
            are kept and checked at scoring, also when they are not strings (compared as text).
        y : ignored

        Returns
        -------
        self
        """
        self._config()  # checks every setting before any work
        self.device_ = resolve_device(self.device)
        inputs = InputTransformer(image_shape=self.image_shape, image_range=self.image_range)
        inputs._owner = type(self).__name__
        X = inputs.fit_transform(X)  # (n, *input_shape_), images in [-1, 1]
        self.input_transformer_ = inputs
        self._set_resolved(
            resolve_settings(
                inputs.input_shape_,
                view=self.view,
                scaling=self.scaling,
                network=self.network,
                gaussian_weight=self.gaussian_weight,
                features=self.features,
            )  # fmt: skip
        )
        self.feature_transformer_ = FeatureTransformer(
            view=self.view_, features=self.features_, device=self.device_,
            cache_dir=self.cache_dir, verbose=self.verbose,
        ).fit()  # fmt: skip
        X = self.feature_transformer_.transform(X)  # (n, *network_shape_)
        n_pixels = int(np.prod(self.input_shape_))
        self.scaler_ = Scaler(scaling=self.scaling_, n_pixels=n_pixels).fit(X)
        X = self.scaler_.transform(X)
        code = self._torchscript_file()
        self.features_sha256_ = None if code is None else file_sha256(code)
        if len(X) < 2:
            raise ValueError(f"n_samples={len(X)}: MEGDetector needs at least 2 samples to fit")
        self.network_shape_ = tuple(X.shape[1:])
        energy = MEGEnergy(
            config=self._config(), views=self.views_, score_type=self.score_type,
            contamination=self.contamination, random_state=self.random_state,
            device=self.device_, prior=generator_prior(self), cache_dir=self.cache_dir,
            checkpoint_path=self.checkpoint_path, checkpoint_every=self.checkpoint_every,
            verbose=self.verbose,
        ).fit(X)  # fmt: skip
        for name in FITTED:  # the energy's fitted state is the detector's
            setattr(self, name, getattr(energy, name))
        return self

    def _set_resolved(self, resolved: Resolved) -> None:
        """The "auto" settings as resolved for the fitted input (saved with the model)."""
        self.view_, self.scaling_ = resolved.view, resolved.scaling
        self.views_, self.gaussian_weight_ = resolved.views, resolved.gaussian_weight
        self.features_ = resolved.features

    def _set_offset(self, train_scores: np.ndarray) -> None:
        """``offset_`` from the training ``score_samples``; keeps them as ``train_scores_``."""
        self.train_scores_ = np.asarray(train_scores, dtype=np.float64)
        self.offset_ = offset_from(self.train_scores_, contamination=self.contamination)

    def set_threshold(self, threshold: float | None = None, *, contamination=None):
        """Move the threshold of a fitted detector without fitting again; returns ``self``.

        Give one of the two:

        Parameters
        ----------
        threshold : float, optional
            On the anomaly-score scale (``-score_samples``, higher = more anomalous): samples
            scoring above it are outliers. Sets ``offset_ = -threshold``.
        contamination : 'auto' or float in (0, 0.5], optional
            The share of the training samples to call outliers, as in ``fit``: sets
            ``offset_`` from the training scores (``train_scores_``) and the
            ``contamination`` parameter, so a refit on the same data gives the same threshold.

        Returns
        -------
        self

        Examples
        --------
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(200, 2))
        >>> det = MEGDetector(random_state=0).fit(X)
        >>> det = det.set_threshold(contamination=0.1)
        >>> int((det.train_scores_ < det.offset_).sum())  # of 200 (percentile ties)
        19
        >>> det.set_threshold(2.5).offset_
        -2.5
        """
        check_is_fitted(self)
        if (threshold is None) == (contamination is None):
            raise ValueError("give a threshold or a contamination, not both or neither")
        if threshold is not None:
            threshold = float(threshold)
            if not np.isfinite(threshold):
                raise ValueError(f"threshold must be a finite number, got {threshold!r}")
            self.offset_ = -threshold
            return self
        Scoring(contamination=contamination)  # 'auto' or in (0, 0.5], or a ValueError
        self.offset_ = offset_from(self._training_scores(), contamination=contamination)
        self.contamination = contamination
        return self

    def _snapshot_scores(self, X: np.ndarray) -> np.ndarray:
        """Anomaly scores of the networks' input per snapshot and score kind (n, n_snapshots,
        n_scores)."""
        return snapshot_scores(self, X)

    def _combine(self, per_net: np.ndarray) -> np.ndarray:
        """``score_samples`` from per-snapshot anomaly scores: minus their standardised mean."""
        return MEGEnergy.combine(self, per_net)

    def _raw_scores(self, X: np.ndarray) -> np.ndarray:
        """``score_samples`` of already-validated input (higher = more normal).

        A sample off a feature that was exactly constant in training is an outlier: its score
        is at most ``offset_ - 1``.
        """
        scores = self._combine(self._snapshot_scores(X))
        off = self.scaler_.off_constant(X)
        if off is not None:
            scores[off] = np.minimum(scores[off], self.offset_ - 1.0)
        return scores

    def score_samples(self, X):
        """Minus the anomaly score: **higher for normal** samples.

        The anomaly score is the energy ``E(x)`` (``score_type="energy"``), the squared norm of
        its input gradient (``score_type="gradnorm"``), or both, standardised and added.

        ``X`` is validated and scored in chunks of rows (about 16 MiB of values each), so a
        memory-mapped array (``np.load(path, mmap_mode="r")``) is read piece by piece and never
        copied whole; the scores are the same as in one piece.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        n, step = _n_rows(X), self._chunk_rows()
        if n is None or n <= step:
            return self._raw_scores(self._validate(X, reset=False))
        rows = X.iloc if hasattr(X, "iloc") else X  # a data frame's rows, else the array's
        parts = [
            self._raw_scores(self._validate(rows[start : start + step], reset=False))
            for start in range(0, n, step)
        ]
        return np.concatenate(parts)

    def _chunk_rows(self) -> int:
        """Rows per chunk of :meth:`score_samples`: whole batches, about ``_CHUNK_BYTES``."""
        batches = _CHUNK_BYTES // (4 * self.n_features_in_ * _SCORE_BATCH)
        return _SCORE_BATCH * max(1, batches)

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative for outliers, positive for inliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for inliers, -1 for outliers (``decision_function < 0``, or not finite)."""
        decision = self.decision_function(X)
        return np.where(np.isfinite(decision) & (decision >= 0), 1, -1)

    def _training_scores(self) -> np.ndarray:
        check_is_fitted(self)
        if getattr(self, "train_scores_", None) is None:
            raise AttributeError(
                "this detector has no training scores: its model file was saved without them; "
                "fit it again to set a threshold by contamination"
            )
        return self.train_scores_

    # ------------------------------------- PyOD's names (deprecated: PyODAdapter has them)
    @property
    def decision_scores_(self) -> np.ndarray:
        """Deprecated: ``-train_scores_`` (PyOD's convention); see
        :class:`~coreset_meg.anomaly.PyODAdapter`."""
        scores = -self._training_scores()
        _deprecated("decision_scores_", "-train_scores_")
        return scores

    @property
    def threshold_(self) -> float:
        """Deprecated: ``-offset_`` (PyOD's convention); see
        :class:`~coreset_meg.anomaly.PyODAdapter`."""
        check_is_fitted(self)
        _deprecated("threshold_", "-offset_")
        return -self.offset_

    @property
    def labels_(self) -> np.ndarray:
        """Deprecated: 0 (inlier) / 1 (outlier) for the training samples of ``train_scores_``
        (PyOD's convention); see :class:`~coreset_meg.anomaly.PyODAdapter`."""
        scores = self._training_scores()
        _deprecated("labels_", "(train_scores_ < offset_).astype(int)")
        return np.where(np.isfinite(scores) & (scores >= self.offset_), 0, 1)

    def predict_proba(self, X, method: str = "linear") -> np.ndarray:
        """Deprecated: PyOD's ``[P(normal), P(outlier)]``; use
        ``PyODAdapter.from_fitted(detector).predict_proba(X, method)``."""
        check_method(method)
        train_scores = self._training_scores()
        _deprecated("predict_proba")
        return outlier_probability(-train_scores, -self.score_samples(X), method)

    # ------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Save to a folder (weights + ``model.json``), atomically; see :func:`save_model`."""
        save_model(self, path)

    @classmethod
    def load(cls, path, *, device="cpu") -> MEGDetector:
        """Load a detector saved with :meth:`save`; see :func:`load_model`."""
        return load_model(path, device=device)

    def fitted_state(self) -> tuple[dict, dict]:
        """``(state, weights)``: what a saved model holds. ``state`` is JSON-ready (settings by
        group, input shape, preprocessing, standardisation, threshold, training summary);
        ``weights`` holds CPU tensors."""
        check_is_fitted(self)
        state = {
            "class": type(self).__name__,
            "settings": group_params(self._settings()),  # tuples are written as JSON lists
            "input_shape": list(self.input_shape_),
            "view": self.view_,
            "views": self.views_,
            "scaling": self.scaling_,
            "gaussian_weight": self.gaussian_weight_,
            "features": self.features_,
            "network_shape": list(self.network_shape_),
            "n_features_in": int(self.n_features_in_),
            "feature_names": (
                None
                if getattr(self, "feature_names_in_", None) is None
                else [str(c) for c in self.feature_names_in_]
            ),
            "offset": float(self.offset_),
            "energy_mean": self.energy_mean_.tolist(),
            "energy_std": self.energy_std_.tolist(),
            "preprocessing": {
                "shift": None if self.shift_ is None else self.shift_.tolist(),
                "scale": None if self.scale_ is None else self.scale_.tolist(),
                "unit_norm": bool(self.unit_norm_),
                **(
                    {}
                    if getattr(self, "constant_", None) is None
                    else {"constant": np.flatnonzero(self.constant_).tolist()}
                ),
            },
            "training": {
                # Scores are bit-reproducible on a CPU for the same seed, torch build and
                # number of threads; another thread count moves them by about 1e-6.
                "torch_threads": self.torch_threads_,
                "seconds": float(self.train_seconds_),
                "selection_seconds": float(self.selection_seconds_),
                "history": self.history_,
                **({"ticket_rounds": self.ticket_rounds_} if self.ticket_rounds_ else {}),
            },
        }
        if getattr(self, "prior_shape_", None) is not None:  # the friendly inputs' shape
            state["prior_shape"] = list(self.prior_shape_)
        if getattr(self, "features_sha256_", None) is not None:  # the TorchScript file's
            state["features_sha256"] = self.features_sha256_
        weights = {"energy_nets": [_cpu_state(net) for net in self.energy_nets_]}
        if self.generator_ is not None:  # none when nothing was trained (n_iter=0)
            weights["generator"] = _cpu_state(self.generator_)
        if getattr(self, "train_scores_", None) is not None:  # as anomaly scores (PyOD's)
            weights["training"] = {"decision_scores": torch.from_numpy(-self.train_scores_)}
        return state, weights

    @classmethod
    def from_fitted_state(
        cls, state: dict, weights: dict, *, device="cpu", features_file=None, cache_dir=None
    ) -> MEGDetector:
        """The detector :meth:`fitted_state` describes, on ``device``.

        Where files go is the caller's choice, not the state's: ``cache_dir`` (embeddings of
        scored images; None: not cached) replaces the saved one, and no checkpoint is written.
        A features view that runs a TorchScript file is refused unless the caller gives that
        file as ``features_file`` (checked against the SHA-256 recorded at fit).

        Raises ``KeyError``, ``TypeError`` or ``ValueError`` on an inconsistent state, and
        :class:`~coreset_meg.anomaly.ModelFileError` for a TorchScript file not given or not
        matching.
        """
        if "settings" in state:
            settings = {k: v for group in state["settings"].values() for k, v in group.items()}
        else:  # format 1: a flat dict of parameters
            settings = dict(state["params"])
        settings["cache_dir"] = None if cache_dir is None else str(cache_dir)
        settings["checkpoint_path"] = None
        if settings.get("image_shape") is not None:
            settings["image_shape"] = tuple(settings["image_shape"])
        det = cls(**detector_params(settings))
        det._config()  # a tampered file gets the same checks as fit
        det.input_transformer_ = det._restore_inputs(state)
        det.view_ = state.get("view", "pixels")  # files before the features view: pixels
        det.views_ = state.get("views")  # files before ViewsEnergy: one core-set energy
        det.scaling_ = state.get("scaling")  # files before it was saved: not recorded
        det.gaussian_weight_ = resolve_gaussian_weight(  # saved since it is resolved at fit
            state.get("gaussian_weight", det.gaussian_weight), det.view_, det.views_
        )
        det.features_ = state.get("features", det.features)  # saved since "auto" came
        if not isinstance(det.features_, str) or det.features_ == "auto":
            raise ValueError("invalid features in the model file")
        det.network_shape_ = tuple(int(s) for s in state.get("network_shape", det.input_shape_))
        prior_shape = state.get("prior_shape")  # only with a friendly prior
        det.prior_shape_ = None if prior_shape is None else tuple(int(s) for s in prior_shape)
        if det.view_ not in ("pixels", "features", "both") or (
            det.view_ == "pixels" and det.network_shape_ != det.input_shape_
        ):
            raise ValueError("invalid view or network_shape in the model file")
        if det.views_ is not None and not (
            det.view_ == "both" and isinstance(det.views_, int) and det.views_ > 0
        ):
            raise ValueError("invalid views in the model file")
        det._use_features_file(features_file, state.get("features_sha256"))
        det.device_ = resolve_device(device)
        det.offset_ = float(state["offset"])
        det._restore_scaling(state["preprocessing"])
        det.feature_transformer_ = FeatureTransformer(
            view=det.view_, features=det.features_, device=det.device_, cache_dir=det.cache_dir,
            verbose=det.verbose,
        ).set_up()  # fmt: skip
        det.history_ = state["training"]["history"]
        det.n_iter_ = det._config().schedule.n_iter
        det.train_seconds_ = state["training"]["seconds"]
        det.torch_threads_ = state["training"].get("torch_threads")
        det.selection_seconds_ = state["training"]["selection_seconds"]
        det.ticket_rounds_ = list(state["training"].get("ticket_rounds", []))
        det._restore_networks(state, weights)
        return det

    def _restore_inputs(self, state: dict) -> InputTransformer:
        """The fitted input transformer of a saved state (checked)."""
        inputs = InputTransformer(image_shape=self.image_shape, image_range=self.image_range)
        inputs._owner = type(self).__name__
        inputs.input_shape_ = tuple(int(s) for s in state["input_shape"])
        inputs.n_features_in_ = int(state["n_features_in"])
        if state.get("feature_names") is not None:
            names = np.asarray(state["feature_names"], dtype=object)
            if len(names) != inputs.n_features_in_:
                raise ValueError("feature_names and n_features_in disagree")
            inputs.feature_names_in_ = names
        shape = inputs.input_shape_
        if min(shape) < 1 or int(np.prod(shape)) != inputs.n_features_in_:
            raise ValueError(f"input_shape {shape} does not hold n_features_in values")
        return inputs

    def _restore_scaling(self, pre: dict) -> None:
        """The fitted scaling of a saved state's ``preprocessing`` (checked)."""
        shift = None if pre["shift"] is None else np.asarray(pre["shift"], dtype=np.float32)
        scale = None if pre["scale"] is None else np.asarray(pre["scale"], dtype=np.float32)
        constant = None  # the features that were exactly constant (files before: none)
        if pre.get("constant") and shift is not None:
            index = np.asarray(pre["constant"])
            if (
                index.ndim != 1
                or index.dtype.kind not in "iu"
                or not ((index >= 0) & (index < shift.size)).all()
            ):
                raise ValueError("invalid constant in the model file")
            constant = np.zeros(shift.size, dtype=bool)
            constant[index] = True
            constant = constant.reshape(shift.shape)
        self.scaler_ = Scaler.from_fitted(shift, scale, pre.get("unit_norm", False), constant)

        def valid(values, positive=False) -> bool:
            return values is None or (
                values.shape == self.network_shape_
                and bool(np.isfinite(values).all())
                and (not positive or bool((values > 0).all()))
            )

        checks = {
            "offset": np.isfinite(self.offset_),
            "shift": valid(shift),
            "scale": valid(scale, positive=True) and (scale is None) == (shift is None),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid {name} in the model file")

    def _restore_networks(self, state: dict, weights: dict) -> None:
        """The snapshots' standardisation, the networks and the training scores of a saved
        state (checked)."""
        n_nets, n_kinds = len(weights["energy_nets"]), len(score_kinds(self.score_type))
        for name in ("energy_mean", "energy_std"):
            values = np.asarray(state[name], dtype=np.float64)
            if values.size != n_nets * n_kinds:
                raise ValueError("weights and model.json disagree on the number of snapshots")
            if not np.isfinite(values).all() or (name == "energy_std" and (values <= 0).any()):
                raise ValueError(f"invalid {name} in the model file")
            setattr(self, f"{name}_", values.reshape(n_nets, n_kinds))
        build_energy_networks(self, self._config(), n_nets)
        for net, net_state in zip(self.energy_nets_, weights["energy_nets"], strict=True):
            _load_checked(net, net_state, "energy_nets")
        if "generator" in weights:
            _load_checked(self.generator_, weights["generator"], "generator")
        else:  # a fit that trained nothing (n_iter=0) keeps no generator
            self.generator_ = None
        self.train_scores_ = None  # absent from files saved before the scores were kept
        if "training" in weights:
            scores = np.asarray(weights["training"]["decision_scores"], dtype=np.float64)
            if scores.ndim != 1 or len(scores) == 0 or not np.isfinite(scores).all():
                raise ValueError("invalid decision_scores in the model file")
            self.train_scores_ = -scores

    def _use_features_file(self, given, recorded) -> None:
        """Run the features view's TorchScript file only when the user gave it (``given``) and
        it is the file the model was fitted with (``recorded``: its SHA-256)."""
        named = self._torchscript_file()
        self.features_sha256_ = recorded if named is not None else None
        if named is None:
            return
        if given is None:
            raise ModelFileError(
                f"the model scores with code from outside its folder (the TorchScript file "
                f"{named}); give that file explicitly to run it (load_model(..., "
                "features_file=FILE), anomaly score --features-file FILE)"
            )
        if recorded is not None and file_sha256(given) != recorded:
            raise ModelFileError(
                f"the features file {given} is not the TorchScript file the model was fitted "
                "with (its SHA-256 differs)"
            )
        self.features = with_torchscript_file(self.features, given)
        self.features_ = with_torchscript_file(self.features_, given)


def _deprecated(name: str, instead: str | None = None) -> None:
    """Warn that PyOD's ``name`` on the detector is deprecated (the adapter has it)."""
    warnings.warn(
        f"MEGDetector.{name} is deprecated and will be removed (PyOD's convention): use "
        f"PyODAdapter.from_fitted(detector).{name}"
        + ("" if instead is None else f", or {instead} on the detector"),
        FutureWarning,
        stacklevel=3,
    )


def _n_rows(X) -> int | None:
    """The number of samples of an array, data frame or list; None for anything else (it is
    validated in one piece)."""
    shape = getattr(X, "shape", None)
    if isinstance(shape, tuple) and len(shape) >= 2 and hasattr(X, "__getitem__"):
        return int(shape[0])
    return len(X) if isinstance(X, list | tuple) else None


def _load_checked(net: torch.nn.Module, state: dict, name: str) -> None:
    """Load ``state`` into ``net`` after checking each tensor's dtype against the network's own
    and that floating-point weights are finite (ValueError naming the tensor)."""
    if not isinstance(state, dict):
        raise ValueError(f"{name} in the weights is not a state dict")
    own = net.state_dict()
    for key, value in state.items():
        want = own.get(key)
        if want is None or not isinstance(value, torch.Tensor):
            continue  # load_state_dict names unexpected and missing keys
        if value.dtype != want.dtype:  # shapes: load_state_dict checks them (or resizes)
            raise ValueError(
                f"weights tensor {name}.{key} is {str(value.dtype).removeprefix('torch.')}, "
                f"expected {str(want.dtype).removeprefix('torch.')}"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"weights tensor {name}.{key} has values that are not finite")
    net.load_state_dict(state)


def _cpu_state(net: torch.nn.Module) -> dict:
    return {k: v.cpu() for k, v in net.state_dict().items()}


def save_model(detector: MEGDetector, path):
    """Write a fitted detector to the folder ``path``, atomically.

    The folder is created, or replaced when it is a model folder (or empty); anything else at
    ``path`` is refused with :class:`~coreset_meg.anomaly.ModelFileError`.

    Returns
    -------
    pathlib.Path
    """
    state, weights = detector.fitted_state()
    problem = _invalid_state(state, weights)
    if problem is not None:  # checked before the swap: a model already at path is kept
        raise ModelFileError(
            f"not saving to {path}: the fitted model is invalid ({problem}); "
            "anything already there is kept"
        )
    return write_model(path, state, weights, detector.history_)


def _invalid_state(state: dict, weights: dict) -> str | None:
    """What makes a fitted state unusable (a threshold, statistic, scaling or weight that is not
    finite), or None."""

    def finite(values) -> bool:
        return values is None or bool(np.isfinite(np.asarray(values, dtype=np.float64)).all())

    for name in ("offset", "energy_mean", "energy_std"):
        if not finite(state[name]):
            return f"{name} is not finite"
    for name in ("shift", "scale"):
        if not finite(state["preprocessing"][name]):
            return f"the scaling's {name} is not finite"
    tensors = [
        *(t for net in weights["energy_nets"] for t in net.values()),
        *weights.get("generator", {}).values(),  # none when nothing was trained
    ]
    if not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()):
        return "a network weight is not finite"
    return None


def load_model(path, *, device="cpu", features_file=None, cache_dir=None) -> MEGDetector:
    """Load a detector written by :func:`save_model` onto ``device`` (CPU by default).

    Parameters
    ----------
    path : str or os.PathLike
        The model folder.
    device : str, default="cpu"
        Where the networks run.
    features_file : str or os.PathLike, optional
        The TorchScript file of a features view fitted with ``features="torchscript:PATH"``:
        such a model runs code from outside its folder, so it loads only when the file is
        given here (and matches the one it was fitted with).
    cache_dir : str or os.PathLike, optional
        Folder to cache image embeddings in while scoring (the model file's own is ignored:
        where files go is the caller's choice).

    Raises
    ------
    ModelFileError
        When the folder or a file in it is missing, corrupt, or from another program, the
        model needs a TorchScript file that was not given, or the package that ships its
        feature extractor's weights is not installed.
    """
    state, weights = read_model(path)
    try:
        return MEGDetector.from_fitted_state(
            state, weights, device=device, features_file=features_file, cache_dir=cache_dir
        )
    except ModelFileError as err:
        raise ModelFileError(f"{path}: {first_line(err)}") from None
    except ImportError as err:  # the features view's weights package is not installed
        raise ModelFileError(
            f"{path}: its feature extractor cannot be built: {first_line(err)}"
        ) from None
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(
            f"{path} does not hold a consistent model: {first_line(err)}"
        ) from None
