"""Friendly data sets for Spider GAN: what they are, how they are read, and their SID ranking.

A friendly set is named by a string:

- ``NAME`` or ``NAME:CLASSES``: a built-in data set (``mnist``, ``fashion-mnist``, ``cifar10``,
  ``digits``), all of it or the classes listed (``mnist:3``, ``cifar10:0,1``, ``cifar10:cat``);
  MNIST, Fashion-MNIST and CIFAR-10 take their training images, then their test images;
- a folder of images (:func:`coreset_meg.datasets.load_image_folder`);
- ``model:FOLDER``: a detector saved with ``anomaly fit`` (cascading: its generator's samples,
  from the inputs it was trained on).

The detector's generator takes the set's images (pixels view; resized to the training images'
size and channels) or their pretrained features (features view, scaled to unit length as the
detector scales its own), at most :data:`MAX_FRIENDLY` of them (a seeded subsample). The SID
ranking compares embeddings: the cached EfficientNet-Lite0 features of the benchmarks
(:func:`~coreset_meg.features.builtin.dataset_features`) for MNIST and CIFAR-10, computed
(and cached) for the others.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "BUILTIN_FRIENDLY",
    "MAX_FRIENDLY",
    "FriendlySet",
    "default_candidates",
    "friendly_embeddings",
    "friendly_images",
    "generator_prior",
    "parse_friendly",
    "rank_friendly",
]

#: Built-in data sets a friendly set can be taken from.
BUILTIN_FRIENDLY = ("mnist", "fashion-mnist", "cifar10", "digits")
#: Most friendly samples the generator's prior holds (a seeded subsample of larger sets).
MAX_FRIENDLY = 10_000


@dataclass(frozen=True)
class FriendlySet:
    """A parsed friendly-set name: ``kind`` "builtin", "folder" or "model"."""

    spec: str
    kind: str
    name: str = ""
    classes: tuple[int, ...] | None = None
    path: Path | None = None


def _class_index(name: str, value: str) -> int:
    from coreset_meg.datasets import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, DataError

    names = {"cifar10": CIFAR10_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}.get(name, [])
    if value.isdigit() and 0 <= int(value) < 10:
        return int(value)
    if value in names:
        return names.index(value)
    raise DataError(
        f"unknown class {value!r} of {name}: use 0..9" + (f" or {names}" if names else "")
    )


def parse_friendly(spec: str) -> FriendlySet:
    """The friendly set ``spec`` names (see the module docstring).

    >>> parse_friendly("mnist:3,5").classes
    (3, 5)
    >>> parse_friendly("cifar10").kind
    'builtin'
    """
    from coreset_meg.datasets import DataError, dataset_key

    text = str(spec).strip()
    if text.startswith("model:"):
        return FriendlySet(text, "model", path=Path(text[len("model:") :]).expanduser())
    name, _, classes = text.partition(":")
    key = dataset_key(name)
    if key in BUILTIN_FRIENDLY:
        parsed = (
            tuple(_class_index(key, c.strip()) for c in classes.split(",")) if classes else None
        )
        return FriendlySet(text, "builtin", key, parsed)
    path = Path(text).expanduser()
    if path.is_dir():
        return FriendlySet(text, "folder", path.name, path=path)
    raise DataError(
        f"unknown friendly set {spec!r}: use {', '.join(BUILTIN_FRIENDLY)} (optionally :CLASSES), "
        "an image folder, or model:FOLDER"
    )


def _builtin(name: str, root) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 images, labels)`` of a built-in set as its loader reads them (channels last),
    training images first: the rows of
    :func:`~coreset_meg.features.builtin.dataset_features`."""
    from coreset_meg.features.builtin import dataset_images

    images, labels, _ = dataset_images(name, root)
    return images, labels


@functools.lru_cache(maxsize=4)
def _labels(name: str, root) -> np.ndarray:
    """The labels of a built-in set, rows as in :func:`_builtin` (read once per process)."""
    if name == "digits":
        from coreset_meg.datasets import load_digits_data

        return load_digits_data()[1]
    return _builtin(name, root)[1]


def _rows(labels: np.ndarray, friendly: FriendlySet, max_samples: int | None, seed: int):
    """Rows of the set's classes, a seeded subsample of ``max_samples`` of them when larger."""
    rows = np.arange(len(labels))
    if friendly.classes is not None:
        rows = rows[np.isin(labels, friendly.classes)]
    if max_samples is not None and len(rows) > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_samples, replace=False))
    return rows


def friendly_images(
    spec: str | FriendlySet,
    *,
    root: str | os.PathLike[str] | None = None,
    max_samples: int | None = MAX_FRIENDLY,
    random_state: int = 0,
) -> np.ndarray:
    """The set's images as float32 (N, C, H, W) in [-1, 1]; at most ``max_samples`` (seeded).

    ``root``: the data folder of the built-in sets (default: ``$ANOMALY_DATA_ROOT`` or the
    user cache, :func:`coreset_meg.datasets.default_data_root`); nothing is downloaded.
    """
    from coreset_meg.datasets import DataError, load_digits_data, load_image_folder, to_model_input

    friendly = spec if isinstance(spec, FriendlySet) else parse_friendly(spec)
    if friendly.kind == "model":
        raise DataError(f"{friendly.spec} is a model, not a set of images")
    if friendly.kind == "folder":
        images, labels, _ = load_image_folder(friendly.path)
    elif friendly.name == "digits":
        X, labels = load_digits_data()
        images = X.reshape(-1, 1, 8, 8)
    else:
        images, labels = _builtin(friendly.name, root)
    rows = _rows(labels, friendly, max_samples, random_state)
    if len(rows) == 0:
        raise DataError(f"friendly set {friendly.spec} holds no images")
    if images.dtype == np.uint8:  # a loader's images, channels last
        return to_model_input(images[rows])
    return np.ascontiguousarray(images[rows], dtype=np.float32)


def friendly_embeddings(
    spec: str | FriendlySet,
    features: str = "efficientnet-lite0",
    *,
    root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_samples: int | None = MAX_FRIENDLY,
    random_state: int = 0,
    verbose: bool = False,
) -> np.ndarray:
    """Pretrained features (N, p) of the set's images, at most ``max_samples`` (seeded).

    With ``cache_dir``, MNIST, Fashion-MNIST and CIFAR-10 come from the benchmarks' cache of the
    whole data set (:func:`~coreset_meg.features.builtin.dataset_features`: embedded once,
    then read); without it they embed only the images they use. The digits (1,797 images) are
    embedded whole once per process and each subset taken from them; image folders are
    embedded (through ``cache_dir`` when given).
    """
    from coreset_meg.features.embeddings import compute_embeddings
    from coreset_meg.features.pretrained import make_embedder

    friendly = spec if isinstance(spec, FriendlySet) else parse_friendly(spec)
    if friendly.kind == "builtin" and (friendly.name == "digits" or cache_dir is not None):
        F = _whole_embeddings(friendly.name, features, root, cache_dir, verbose)
        labels = _labels(friendly.name, root) if friendly.classes else np.zeros(len(F))
        return np.asarray(F[_rows(labels, friendly, max_samples, random_state)], dtype=np.float32)
    images = friendly_images(
        friendly, root=root, max_samples=max_samples, random_state=random_state
    )
    emb = compute_embeddings(images, make_embedder(features), cache_dir=cache_dir, verbose=verbose)
    return np.asarray(emb, dtype=np.float32)


@functools.lru_cache(maxsize=2)
def _whole_embeddings(name: str, features: str, root, cache_dir, verbose: bool) -> np.ndarray:
    """Every image of a built-in set embedded, rows as in :func:`_builtin` (digits: in order)."""
    from coreset_meg.features.embeddings import compute_embeddings
    from coreset_meg.features.pretrained import make_embedder

    if name == "digits":
        images = friendly_images("digits", max_samples=None)
        return compute_embeddings(
            images, make_embedder(features), cache_dir=cache_dir, verbose=verbose
        )
    from coreset_meg.features.builtin import dataset_features

    return dataset_features(name, features, root=root, cache_dir=cache_dir, verbose=verbose)[0]


def _fit_images(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Images (N, C, H, W) with the channels and side of ``shape`` (C, H, W): colour to grey
    by the channel mean, grey repeated to colour, then bilinear (antialiased) resizing."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images)
    if x.shape[1] != shape[0]:
        x = x.mean(1, keepdim=True) if shape[0] == 1 else x.expand(-1, shape[0], -1, -1)
    if tuple(x.shape[2:]) != tuple(shape[1:]):
        x = F.interpolate(x, size=tuple(shape[1:]), mode="bilinear", antialias=True)
    return x.clamp(-1, 1).contiguous().numpy()


def generator_prior(detector, *, root=None):
    """The prior a fitting :class:`~coreset_meg.anomaly.MEGDetector` feeds its generator: None for
    latents (``prior`` normal or uniform), else the friendly set of its ``friendly`` setting, as the
    networks' input needs it (its ``view_``, ``network_shape_`` and scaling known)."""
    from coreset_meg.coreset.friendly import FriendlyPrior
    from coreset_meg.features.embeddings import unit_length

    batches = detector._config().batches  # the prior and friendly settings
    if batches.prior != "friendly":
        if batches.friendly is not None:
            raise ValueError(
                f"friendly={batches.friendly!r} is used only with prior='friendly' "
                f"(prior is {batches.prior!r})"
            )
        return None
    if not batches.friendly:
        raise ValueError("prior='friendly' needs a friendly set: friendly='mnist:3', a folder, ...")
    friendly = parse_friendly(batches.friendly)
    if friendly.kind == "model":
        return _cascade(friendly.path, type(detector))
    if detector.view_ == "features":
        samples = friendly_embeddings(
            friendly, detector.features_, root=root, cache_dir=detector.cache_dir
        )
        if detector.unit_norm_:
            samples = unit_length(samples)
    elif detector.view_ == "both":  # the images as the networks see the training images
        images = _fit_images(friendly_images(friendly, root=root), tuple(detector.input_shape_))
        samples = detector._network_input(images)
    else:
        samples = friendly_images(friendly, root=root)
        shape = tuple(detector.network_shape_)
        if len(shape) == 3:
            samples = _fit_images(samples, shape)
    return FriendlyPrior(samples, name=friendly.spec)


def _cascade(path: Path, detector_class):
    """A saved detector's generator and its own input, as a prior (cascading); the detector is
    read with ``detector_class.load`` (this module is imported by the detector's: no import
    back)."""
    from coreset_meg.coreset import LatentPrior
    from coreset_meg.coreset.friendly import GeneratorPrior

    earlier = detector_class.load(path)
    if earlier.generator_ is None:
        raise ValueError(
            f"cannot cascade from {path}: it trained no generator (n_iter=0); fit it with "
            "n_iter >= 1"
        )
    config = earlier._config()
    if config.batches.prior == "friendly":
        inner = generator_prior(earlier)
    else:
        inner = LatentPrior(config.networks.latent_dim, config.batches.prior)
    return GeneratorPrior(earlier.generator_, inner)


def default_candidates(target: str | None = None) -> list[str]:
    """The built-in candidates: every built-in set whole and each of its ten classes (the
    target's own name left out)."""
    names = [n for n in BUILTIN_FRIENDLY if n != "fashion-mnist"]  # not in the shared data
    out = [c for n in names for c in [n, *(f"{n}:{k}" for k in range(10))]]
    return [c for c in out if c != target]


def rank_friendly(
    target: str,
    candidates: list[str],
    *,
    features: str = "efficientnet-lite0",
    root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_samples: int = 2000,
    random_state: int = 0,
    order: float = 1.0,
) -> list[tuple[str, float]]:
    """``(candidate, SID)`` for every candidate to the target set, friendliest first.

    Both are named as friendly sets are; every set is embedded with ``features`` (from the
    cache where it has them) and at most ``max_samples`` of each are compared
    (:func:`coreset_meg.coreset.sid.rank_by_sid`).
    """
    from coreset_meg.coreset.sid import rank_by_sid

    def embed(spec: str) -> np.ndarray:
        return friendly_embeddings(
            spec, features, root=root, cache_dir=cache_dir, max_samples=max_samples,
            random_state=random_state,
        )  # fmt: skip

    # Grouped by data set: a whole data set's cached features are read once for its subsets.
    specs = sorted({target, *candidates}, key=lambda spec: parse_friendly(spec).name)
    embedded = {spec: embed(spec) for spec in specs}
    sets = {spec: embedded[spec] for spec in candidates}
    return rank_by_sid(
        embedded[target], sets, order=order, max_samples=max_samples, random_state=random_state
    )
