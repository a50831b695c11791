"""The detector's input pipeline, each step in one place.

:class:`~coreset_meg.anomaly.MEGDetector` is built from these parts, and anything that needs
one of its steps (the benchmarks, the export, Spider GAN's friendly prior) imports it from here:

1. :class:`InputTransformer`: what users give (arrays, data frames, ``uint8`` or float images,
   channels first or last, flat rows with ``image_shape``) -> float32 ``(n, *input_shape_)``,
   images in [-1, 1] (:func:`scale_images`);
2. :class:`FeatureTransformer`: the view of images: their pixels, their pretrained features
   (with the disk cache, set up in ``fit``: scoring changes no state), or both side by side;
3. :class:`Scaler`: the scaling fitted on the training data (min-max, standard, unit length,
   the both view's two parts to one nearest-neighbour scale, or none);
4. the energy (:class:`~coreset_meg.anomaly.energy.MEGEnergy`).

:func:`resolve_settings` resolves the "auto" settings once, at fit, for the fitted input; the
detector keeps and saves what it resolved. The torch modules at the end compute steps 2-3 for
the exported file (:mod:`coreset_meg.anomaly.export`).

Examples
--------
>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(20, 3))
>>> inputs = InputTransformer().fit(X)
>>> Xs = Scaler(scaling="minmax").fit_transform(inputs.transform(X))
>>> float(Xs.min()), float(Xs.max())
(-1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from torch import nn

from coreset_meg.features.embeddings import unit_length, unit_rows

__all__ = [
    "IMAGE_RANGES",
    "SCALINGS",
    "VIEWS",
    "FeatureTransformer",
    "InputTransformer",
    "NetworkInput",
    "Resolved",
    "Scaler",
    "channels_first",
    "resolve_gaussian_weight",
    "resolve_settings",
    "scale_images",
    "view_spreads",
]

#: How float images are read.
IMAGE_RANGES = ("auto", "symmetric", "unit")
#: What the networks see of images (after "auto" is resolved).
VIEWS = ("pixels", "features", "both")
#: Scalings (after "auto" is resolved); "views": the both view's parts to one scale.
SCALINGS = ("none", "minmax", "standard", "l2", "views")
#: The feature extractor of colour images ("auto" resolved): EfficientNet-Lite0 at 128 px on each
#: image and its mirror image, beside EfficientNet-Lite1 at 240 px; on CIFAR-10 one-class
#: validation it gained about 0.02 AUROC over Lite0 alone (docs/results/gan-ablation.md).
COLOUR_FEATURES = "mirror:efficientnet-lite0+efficientnet-lite1@240"
#: The feature extractor of grey images ("auto" resolved): digits are not mirror-symmetric, and
#: the both view's MNIST figures were measured with it.
GREY_FEATURES = "efficientnet-lite0"
# The Gaussian term of the core-set energy on image features (None resolved): 0.3 was the best
# mean over the CIFAR-10 and MNIST validation splits (docs/results/how-defaults-were-chosen.md).
_FEATURES_GAUSSIAN = 0.3


# ------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Resolved:
    """The "auto" settings as a fit resolved them for its input."""

    view: str  #: "pixels", "features" or "both"
    scaling: str  #: one of :data:`SCALINGS`
    views: int | None  #: the both view's pixel columns for ViewsEnergy (None: one view)
    gaussian_weight: float  #: the core-set energy's Gaussian term
    features: str  #: the feature extractor (:func:`coreset_meg.features.make_embedder`'s name)


def resolve_settings(
    input_shape: tuple[int, ...],
    *,
    view: str = "auto",
    scaling: str = "auto",
    network: str = "coreset",
    gaussian_weight: float | None = None,
    features: str = "auto",
) -> Resolved:
    """What the "auto" (and None) settings mean for samples of shape ``input_shape``.

    - ``view``: features for colour images; for grey ones both (the core-set energy) or pixels
      (the networks with weights, built for them); vectors are taken as given ("pixels").
    - ``scaling``: unit length (l2) for features, each part to its nearest-neighbour scale for
      both, min-max for vectors, none for pixels.
    - ``gaussian_weight``: 0.3 where the energy reads unit-length image features (the features
      view, or the features' block of the both view's ViewsEnergy), else 0.
    - ``features``: :data:`COLOUR_FEATURES` for colour images, :data:`GREY_FEATURES` for grey
      ones and vectors (unused by the pixel view).

    >>> resolve_settings((1, 28, 28))  # doctest: +NORMALIZE_WHITESPACE
    Resolved(view='both', scaling='views', views=784, gaussian_weight=0.3,
             features='efficientnet-lite0')
    >>> resolve_settings((5,)).view
    'pixels'
    """
    image = len(input_shape) == 3
    if view in ("features", "both") and not image:
        raise ValueError(
            f"view={view!r} needs images: (n, H, W) or (n, C, H, W) arrays, or rows "
            "with image_shape"
        )
    if view == "auto":  # measured on validation: docs/results/gan-ablation.md
        if not image:
            view = "pixels"  # vectors: "pixels" means the values as given
        elif input_shape[0] == 3:
            view = "features"
        else:  # grey images: every MNIST validation digit above its single views' floor
            view = "both" if network == "coreset" else "pixels"
    if scaling == "auto":
        scaling = {"features": "l2", "both": "views"}.get(view)
        scaling = scaling or ("minmax" if len(input_shape) == 1 else "none")
    views = int(np.prod(input_shape)) if view == "both" and network == "coreset" else None
    if features == "auto":
        features = COLOUR_FEATURES if image and input_shape[0] == 3 else GREY_FEATURES
    weight = resolve_gaussian_weight(gaussian_weight, view, views)
    return Resolved(view, scaling, views, weight, features)


def resolve_gaussian_weight(gaussian_weight: float | None, view: str, views: int | None) -> float:
    """The core-set energy's Gaussian term: ``gaussian_weight``, or for None 0.3 where the
    energy reads unit-length image features (the features view, or the features' block of the
    both view's ViewsEnergy, ``views``) and 0 elsewhere: it helps on image features of one
    class and hurts on pixels and min-max scaled vectors."""
    if gaussian_weight is not None:
        return float(gaussian_weight)
    return _FEATURES_GAUSSIAN if view == "features" or views is not None else 0.0


# --------------------------------------------------------------------------- user input
def channels_first(X: np.ndarray) -> np.ndarray:
    """Images given channels last, (n, H, W, C) with C 1 or 3 and H not (as
    :func:`coreset_meg.datasets.load_image_folder` returns them), as (n, C, H, W); anything
    else as it is."""
    if X.ndim == 4 and X.shape[3] in (1, 3) and X.shape[1] not in (1, 3):
        return X.transpose(0, 3, 1, 2)
    return X


def scale_images(X: np.ndarray, dtype: np.dtype | None, image_range: str = "auto") -> np.ndarray:
    """Images in the networks' range [-1, 1].

    Integer images (``dtype``: the user's, before any conversion) are scaled by their dtype:
    uint8 as 0..255, uint16 as 0..65535, other integers as 0..255 (values outside it are
    refused). Float images are taken as in [-1, 1] (``image_range="symmetric"``) or [0, 1]
    (``"unit"``), a little slack allowed; ``"auto"`` is ``"symmetric"`` but refuses float images
    with no negative value, which could be either.

    >>> scale_images(np.array([0.0, 255.0], dtype=np.float32), np.dtype(np.uint8)).tolist()
    [-1.0, 1.0]
    """
    if X.size == 0:
        return X
    lo, hi = float(X.min()), float(X.max())
    if dtype is not None and dtype.kind in "ui":
        if dtype == np.uint16:
            return X / np.float32(32767.5) - np.float32(1.0)
        if dtype != np.uint8 and (lo < 0 or hi > 255):
            raise ValueError(
                f"integer images are read as 0..255 (uint8) or 0..65535 (uint16); got {dtype} "
                f"values in [{lo:.6g}, {hi:.6g}]"
            )
        return X / np.float32(127.5) - np.float32(1.0)
    if image_range == "unit":
        if lo < -0.25 or hi > 1.25:
            raise ValueError(
                f"image_range='unit': float images must be in [0, 1], got values in "
                f"[{lo:.3g}, {hi:.3g}]"
            )
        return X * np.float32(2.0) - np.float32(1.0)
    if lo < -1.5 or hi > 1.5:
        raise ValueError(
            f"float images must be in [-1, 1] (or in [0, 1] with image_range='unit', or given "
            f"as uint8 0..255), got values in [{lo:.3g}, {hi:.3g}]"
        )
    if image_range == "auto" and lo >= 0:
        raise ValueError(
            f"float images with no negative value (values in [{lo:.3g}, {hi:.3g}]) may be in "
            "[0, 1] or in [-1, 1]: declare image_range='unit' ([0, 1], torchvision's "
            "convention) or image_range='symmetric' ([-1, 1])"
        )
    return X


def _input_shape(X: np.ndarray, image_shape) -> tuple[int, ...]:
    if X.ndim == 3:  # (n, H, W) grey images
        return (1, *X.shape[1:])
    if X.ndim == 4:  # (n, C, H, W)
        return tuple(X.shape[1:])
    if X.ndim == 2 and image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if int(np.prod(shape)) != X.shape[1]:
            raise ValueError(
                f"image_shape {shape} holds {int(np.prod(shape))} values "
                f"but X has {X.shape[1]} features"
            )
        return shape
    if X.ndim == 2:
        return (X.shape[1],)
    raise ValueError(f"X must be 2-D (samples, features) or images, got {X.ndim}-D")


class InputTransformer(TransformerMixin, BaseEstimator):
    """User input -> float32 model input ``(n, *input_shape_)``, images in [-1, 1].

    ``n_features_in_`` counts the values of one sample, so images may be given flat (one row per
    image) or shaped, channels first or last; a data frame's column names are kept (as text)
    and checked when transforming.

    Parameters
    ----------
    image_shape : tuple of int, default=None
        ``(C, H, W)``: read each row of a 2-D ``X`` as an image.
    image_range : {"auto", "symmetric", "unit"}, default="auto"
        Range of float images (see :func:`scale_images`).

    Attributes
    ----------
    input_shape_ : tuple of int
        One sample's shape: ``(d,)`` or ``(C, H, W)``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only for data frames.
    """

    #: Who is expecting the features, in the count check's message (scikit-learn's wording).
    _owner = "InputTransformer"

    def __init__(self, *, image_shape=None, image_range="auto"):
        self.image_shape = image_shape
        self.image_range = image_range

    def fit(self, X, y=None):
        """Learn the input's shape (and column names); returns ``self``."""
        self._fit(X)
        return self

    def fit_transform(self, X, y=None, **fit_params):
        """``fit(X).transform(X)``, validating ``X`` once."""
        return self._finish(*self._fit(X))

    def transform(self, X, image_range: str | None = None) -> np.ndarray:
        """``X`` as float32 ``(n, *input_shape_)`` (images in [-1, 1]); ``image_range``: read
        float images so instead (the detector passes its parameter as set now)."""
        check_is_fitted(self)
        given = _dtype(X)
        self._check_names(X)
        return self._finish(_as_array(X, check_array, allow_nd=True), given, image_range)

    def _fit(self, X) -> tuple[np.ndarray, np.dtype | None]:
        if self.image_range not in IMAGE_RANGES:
            raise ValueError(f"image_range must be one of {IMAGE_RANGES}, got {self.image_range!r}")
        given, names = _dtype(X), getattr(X, "columns", None)
        self.__dict__.pop("feature_names_in_", None)  # a refit's names are its own
        X = _as_array(X, validate_data, self, reset=True, allow_nd=True)
        if names is not None and not hasattr(self, "feature_names_in_"):
            # Names that are not all strings (0, 1, 2, ...) are checked as their text, so a
            # frame with its columns reordered is refused rather than read by position.
            self.feature_names_in_ = np.asarray([str(c) for c in names], dtype=object)
        self.input_shape_ = _input_shape(X, self.image_shape)
        self.n_features_in_ = int(np.prod(self.input_shape_))
        return X, given

    def _finish(self, X: np.ndarray, given: np.dtype | None, image_range=None) -> np.ndarray:
        n_features = int(np.prod(X.shape[1:]))
        if n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {self._owner} is expecting "
                f"{self.n_features_in_} features as input (samples of shape {self.input_shape_})"
            )
        # C order: a data frame's (column-major) values score the same as the array's.
        X = np.array(X, dtype=np.float32, copy=True, order="C").reshape(len(X), *self.input_shape_)
        if len(self.input_shape_) == 3:
            X = scale_images(X, given, image_range or self.image_range)
        return X

    def _check_names(self, X) -> None:
        """Columns named differently from those seen in ``fit`` (renamed or reordered) are an
        error; unnamed input is taken in the fitted order."""
        fitted = getattr(self, "feature_names_in_", None)
        names = getattr(X, "columns", None)
        if fitted is None or names is None:
            return
        names, fitted = [str(c) for c in names], [str(c) for c in fitted]
        if len(names) != len(fitted):
            extra = [c for c in names if c not in fitted]
            missing = [c for c in fitted if c not in names]
            if extra or missing:
                raise ValueError(
                    f"X has {len(names)} columns but the model was fitted on {len(fitted)}: "
                    + "; ".join(
                        f"{what} {', '.join(repr(c) for c in cols[:5])}"
                        for what, cols in (("not seen in fit:", extra), ("missing:", missing))
                        if cols
                    )
                    + (" (a label column? give --label-column, or drop it)" if extra else "")
                )
            return  # the feature count check says so
        for i, (got, want) in enumerate(zip(names, fitted, strict=True)):
            if got != want:
                raise ValueError(
                    f"feature names differ from those seen in fit: column {i} is {got!r}, "
                    f"expected {want!r}"
                )


def _dtype(X) -> np.dtype | None:
    """The user's dtype (integer images are scaled by it), before any conversion."""
    return X.dtype if isinstance(getattr(X, "dtype", None), np.dtype) else None


def _as_array(X, check, *args, **kwargs) -> np.ndarray:
    return channels_first(check(*args, X, dtype=[np.float64, np.float32], **kwargs))


# ---------------------------------------------------------------------------------- views
class FeatureTransformer(TransformerMixin, BaseEstimator):
    """The view of images the networks see: pixels (as given), pretrained features, or both.

    The feature extractor is built in ``fit`` (and by :meth:`set_up` for a loaded model), so
    ``transform`` changes no state; its embeddings are cached on disk with ``cache_dir``
    (content-keyed: a stale file is never read).

    Parameters
    ----------
    view : {"pixels", "features", "both"}, default="pixels"
        ``"both"``: each image's pixels as one row, then its unit-length features.
    features : str, default="efficientnet-lite0"
        The extractor (:func:`coreset_meg.features.make_embedder`).
    device : str or torch.device, default="cpu"
    cache_dir : str, default=None
    verbose : bool, default=False

    Attributes
    ----------
    embedder_ : Embedder or None
        The feature extractor (None for the pixel view).
    """

    def __init__(
        self, *, view="pixels", features="efficientnet-lite0", device="cpu", cache_dir=None,
        verbose=False,
    ):  # fmt: skip
        self.view = view
        self.features = features
        self.device = device
        self.cache_dir = cache_dir
        self.verbose = verbose

    def fit(self, X=None, y=None):
        """Build the feature extractor (``X`` is not read); returns ``self``."""
        return self.set_up()

    def set_up(self, embedder=None):
        """Build the feature extractor, or take ``embedder``; returns ``self``."""
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {self.view!r}")
        if embedder is None and self.view != "pixels":
            from coreset_meg.features.pretrained import make_embedder

            embedder = make_embedder(self.features, device=self.device)
        self.embedder_ = embedder
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Images ``(n, C, H, W)`` in [-1, 1] as the view: as given (pixels), ``(n, p)``
        features, or ``(n, C*H*W + p)`` for both."""
        check_is_fitted(self)
        if self.view == "features":
            return np.array(self.embed(X), dtype=np.float32)  # (n, p)
        if self.view == "both":  # (n, C*H*W + p): the pixels, then unit-length features
            return np.concatenate([X.reshape(len(X), -1), unit_length(self.embed(X))], axis=1)
        return X

    def embed(self, X: np.ndarray) -> np.ndarray:
        """Pretrained features of images in [-1, 1] (through the disk cache)."""
        from coreset_meg.features.embeddings import compute_embeddings

        return compute_embeddings(
            X, self.embedder_, cache_dir=self.cache_dir, verbose=bool(self.verbose)
        )

    def module(self, embedder=None) -> nn.Module | None:
        """This view as a torch module (None for pixels); ``embedder``: another extractor of
        the same features (the export's CPU copy)."""
        if self.view == "pixels":
            return None
        from coreset_meg.features.embeddings import PixelEmbedder

        embedder = self.embedder_ if embedder is None else embedder
        features = _Flatten() if isinstance(embedder, PixelEmbedder) else embedder.module()
        return _BothViews(features) if self.view == "both" else features


# -------------------------------------------------------------------------------- scaling
def view_spreads(X: np.ndarray, n_pixels: int) -> np.ndarray:
    """The spread of each column of the both view's rows ``[pixels | unit-length features]``:
    the square root of its part's median nearest-neighbour squared distance (``X`` divided by it
    puts the two parts at one scale). The first ``n_pixels`` columns are the pixels."""
    from coreset_meg.gan.trainer import nearest_neighbour_sq_distance

    spread = np.empty(X.shape[1], dtype=np.float32)
    for part in (slice(0, n_pixels), slice(n_pixels, None)):
        rows = torch.from_numpy(np.ascontiguousarray(X[:, part], dtype=np.float32))
        spread[part] = np.sqrt(nearest_neighbour_sq_distance(rows, random_state=0))
    return spread


class Scaler(TransformerMixin, BaseEstimator):
    """The scaling fitted on the training data: ``(X - shift_) / scale_``, or each sample to
    unit length.

    Every feature is scaled by its own spread, however small; only an exactly constant one
    keeps scale 1 (and its training value as shift, so that value scales to exactly 0).

    Parameters
    ----------
    scaling : {"none", "minmax", "standard", "l2", "views"}, default="none"
        min-max maps the training range to [-1, 1]; "views": the both view's rows, each part
        divided by its :func:`view_spreads`.
    n_pixels : int, default=None
        For "views": the number of pixel columns.

    Attributes
    ----------
    shift_, scale_ : ndarray or None
    unit_norm_ : bool
    constant_ : ndarray of bool or None
        The features exactly constant in training (None: none).
    """

    def __init__(self, *, scaling="none", n_pixels=None):
        self.scaling = scaling
        self.n_pixels = n_pixels

    def fit(self, X: np.ndarray, y=None):
        """Fit the scaling on ``X`` ``(n, ...)``; returns ``self``."""
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        self.unit_norm_ = self.scaling == "l2"
        self.constant_ = None
        if self.scaling in ("none", "l2"):
            self.shift_, self.scale_ = None, None
            return self
        if self.scaling == "views":  # each part / sqrt(its median nearest-neighbour sq. distance)
            shift = np.zeros(X.shape[1], dtype=np.float32)
            spread = view_spreads(X, int(self.n_pixels))
        elif self.scaling == "standard":
            shift, spread = X.mean(axis=0), X.std(axis=0)
        else:  # minmax: the training range maps to [-1, 1]
            lo, hi = X.min(axis=0), X.max(axis=0)
            shift, spread = (lo + hi) / 2, (hi - lo) / 2
        constant = spread == 0
        shift = np.where(constant, X[0], shift)
        self.shift_ = shift.astype(np.float32)
        self.scale_ = np.where(constant, 1.0, spread).astype(np.float32)
        self.constant_ = constant if constant.any() else None
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``X`` scaled; ValueError when a value overflows (far outside the training range)."""
        check_is_fitted(self)
        if self.unit_norm_:
            X = np.asarray(X, dtype=np.float32)
        shift, scale = (None, None) if self.shift_ is None else (self.shift_, self.scale_)
        X = scale_rows(_tensor(X), self.unit_norm_, _tensor(shift), _tensor(scale)).numpy()
        if self.shift_ is not None and not np.isfinite(X).all():
            raise ValueError(
                "X has values that overflow after scaling (far outside the training range)"
            )
        return X

    def off_constant(self, X: np.ndarray) -> np.ndarray | None:
        """Which scaled rows are off a feature that was constant in training (None: no such
        feature)."""
        if self.constant_ is None:
            return None
        return (X.reshape(len(X), -1)[:, self.constant_.reshape(-1)] != 0).any(axis=1)

    @classmethod
    def from_fitted(cls, shift, scale, unit_norm: bool, constant=None) -> Scaler:
        """A fitted scaler from its saved values (checked by the caller)."""
        scaler = cls(scaling="l2" if unit_norm else "none")
        scaler.shift_, scaler.scale_, scaler.unit_norm_ = shift, scale, bool(unit_norm)
        scaler.constant_ = constant
        return scaler


# ---------------------------------------------------------------------------------- torch
class _Flatten(nn.Module):
    """The ``pixels`` embedder: each image as one row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    """``a`` as a tensor sharing its memory where it can (a copy when read-only or strided)."""
    return None if a is None else torch.from_numpy(np.require(a, requirements=("C", "W")))


def scale_rows(
    x: torch.Tensor,
    unit_norm: bool,
    shift: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fitted scaling of step 3, in torch: each row made unit length (``unit_norm``), then
    ``(x - shift) / scale``. The one definition :class:`Scaler` (scoring) and
    :class:`NetworkInput` (the export) both run."""
    if unit_norm:
        x = unit_rows(x)
    if shift is not None:
        x = (x - shift) / scale
    return x


class _BothViews(nn.Module):
    """The ``both`` view: each image's pixels as one row, then its unit-length features."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.reshape(x.shape[0], -1), unit_rows(self.features(x))], dim=1)


class NetworkInput(nn.Module):
    """Steps 2-3 in torch: model input ``(N, *input_shape)`` -> the networks' input, as
    :class:`FeatureTransformer` and :class:`Scaler` compute it.

    Parameters
    ----------
    scaler : Scaler
        Fitted.
    view : torch.nn.Module, optional
        :meth:`FeatureTransformer.module` (None: the pixel view).
    """

    def __init__(self, scaler: Scaler, view: nn.Module | None = None):
        super().__init__()
        self.view = view
        self.unit_norm = bool(scaler.unit_norm_)
        self.scaled = scaler.shift_ is not None
        if self.scaled:
            self.register_buffer("shift", torch.as_tensor(scaler.shift_, dtype=torch.float32))
            self.register_buffer("scale", torch.as_tensor(scaler.scale_, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.view is not None:
            x = self.view(x)  # (N, p)
        if self.scaled:
            return scale_rows(x, self.unit_norm, self.shift, self.scale)
        return scale_rows(x, self.unit_norm)
