"""Several processes under ``torchrun``: who does what, and the few collectives the project uses.

The project runs on PyTorch's own distributed engine rather than one of its own. Started by
``torchrun --nproc-per-node N anomaly fit ...`` every process runs the same command;
:func:`init_from_env` joins them into one process group (gloo on CPU, NCCL on GPU). Every
function here is a no-op or the identity in a single process, so library code calls them
unconditionally:

- training (:class:`coreset_meg.gan.MEGTrainer`): each rank draws its own core-set batches, the
  gradients are averaged (:func:`average_gradients`) so the weights stay the same on every rank, and
  checkpoints and logs are written by rank 0;
- embeddings and scores: each rank computes a slice of the rows and all of them receive the
  whole result (:func:`map_rows`, :func:`all_gather_arrays`), in the same batches a single
  process would use, so the numbers are the same;
- files (models, scores, caches, checkpoints) are written by rank 0 only (:func:`is_main`).

Code that only rank 0 runs (a report, say) must not reach a collective: inside :func:`alone`
every function here acts as in a single process.

Torch is imported only once a process group exists, so importing this module is free.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "LaunchError",
    "RENDEZVOUS_TIMEOUT_ENV",
    "TORCHRUN_VARIABLES",
    "all_gather_arrays",
    "all_gather_objects",
    "all_reduce_mean",
    "alone",
    "average_gradients",
    "barrier",
    "broadcast_array",
    "broadcast_module",
    "broadcast_object",
    "finish",
    "init_from_env",
    "is_main",
    "launched",
    "map_rows",
    "rank",
    "row_range",
    "world_size",
]

_STATE = threading.local()


#: The variables torchrun sets for each process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Seconds the processes of a run wait for each other to join (a stale variable in a single
#: process must not make it wait torch's 30 minutes); override with this variable.
RENDEZVOUS_TIMEOUT_ENV = "ANOMALY_RENDEZVOUS_TIMEOUT"
_RENDEZVOUS_TIMEOUT = 120.0


class LaunchError(RuntimeError):
    """The torchrun variables in the environment do not describe a run this process can join."""


def launched() -> bool:
    """Whether this process was started as one of several (``WORLD_SIZE`` > 1, as torchrun
    sets it)."""
    return _env_int("WORLD_SIZE", 1) > 1


def _stray_variables() -> list[str]:
    """``NAME=value`` of the torchrun variables set in the environment."""
    return [f"{n}={os.environ[n]}" for n in TORCHRUN_VARIABLES if n in os.environ]


def _env_int(name: str, default: int) -> int:
    """The integer in environment variable ``name`` (``default`` when unset or not one)."""
    try:
        return int(os.environ.get(name, str(default)))
    except ValueError:
        return default


def _group():
    """``torch.distributed`` when a process group of more than one process is active (and not
    inside :func:`alone`), else None."""
    if getattr(_STATE, "alone", 0) or "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def _true_rank() -> int:
    """This process's rank, also inside :func:`alone` (0 without a process group)."""
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    # RANK counts only in a process started as one of several: a single process is rank 0,
    # whatever a stray RANK says (it would otherwise write nothing).
    return _env_int("RANK", 0) if launched() else 0


def rank() -> int:
    """The rank of this process among those that share the work (0 in a single process)."""
    dist = _group()
    return 0 if dist is None else dist.get_rank()


def world_size() -> int:
    """How many processes share the work (1 in a single process or inside :func:`alone`)."""
    dist = _group()
    return 1 if dist is None else dist.get_world_size()


def is_main() -> bool:
    """True on the process that writes files and prints results: rank 0, or a single process."""
    return _true_rank() == 0


@contextmanager
def alone() -> Iterator[None]:
    """Inside this block the process acts as if it were alone: no collectives (for work that
    only one rank does, such as writing a report)."""
    _STATE.alone = getattr(_STATE, "alone", 0) + 1
    try:
        yield
    finally:
        _STATE.alone -= 1


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``); True when this process is one of several.

    With CUDA available the group has two backends, NCCL for GPU tensors (each process uses the
    GPU ``LOCAL_RANK``) and gloo for CPU tensors, so models on either device train in it;
    without, gloo alone. ``device``: "cpu" keeps gloo alone even where CUDA is available. A
    second call does nothing.
    """
    _check_variables()
    if not launched():
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_world_size() > 1
    gpu = str(device) != "cpu" and torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    store, rank, size = _rendezvous()
    dist.init_process_group(
        "cpu:gloo,cuda:nccl" if gpu else "gloo", store=store, rank=rank, world_size=size
    )
    atexit.register(_shutdown)
    return dist.get_world_size() > 1


def _check_variables() -> None:
    """Raise :class:`LaunchError` on torchrun variables that cannot describe a run; warn about
    ones a single process ignores (``RANK`` without ``WORLD_SIZE``, say)."""
    import logging

    values = {n: os.environ.get(n) for n in TORCHRUN_VARIABLES}
    numbers = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT") if launched() else ("WORLD_SIZE",)
    for name in numbers:
        text = values[name]
        if text is not None and not text.strip().isdigit():
            raise LaunchError(f"environment variable {name}={text!r} is not a whole number")
    if not launched():
        stray = [v for v in _stray_variables() if not v.startswith("WORLD_SIZE=")]
        if values["WORLD_SIZE"] is not None and values["RANK"] in (None, "0"):
            stray = []  # torchrun with one process: consistent, nothing to say
        if stray:
            logging.getLogger(__name__).warning(
                "ignoring %s: WORLD_SIZE is %s, so this is a single process (rank 0); unset "
                "them, or start the run with torchrun",
                " ".join(stray),
                values["WORLD_SIZE"] or "not set",
            )
        return
    missing = [n for n in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not values[n]]
    if missing:
        raise LaunchError(
            f"WORLD_SIZE={values['WORLD_SIZE']} but {', '.join(missing)} not set: start the run "
            "with torchrun, or unset WORLD_SIZE for a single process"
        )
    if int(values["RANK"]) >= int(values["WORLD_SIZE"]):
        raise LaunchError(f"RANK={values['RANK']} is not below WORLD_SIZE={values['WORLD_SIZE']}")


def _rendezvous_seconds() -> float:
    text = os.environ.get(RENDEZVOUS_TIMEOUT_ENV)
    if text is None:
        return _RENDEZVOUS_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not math.isfinite(seconds) or seconds <= 0:
        raise LaunchError(f"{RENDEZVOUS_TIMEOUT_ENV}={text!r} must be a positive number of seconds")
    return seconds


def _rendezvous():
    """``(store, rank, world_size)`` of torchrun's environment, joined within a short timeout
    (:data:`RENDEZVOUS_TIMEOUT_ENV`); the store then waits as long as torch's default."""
    from datetime import timedelta

    import torch.distributed as dist

    seconds = _rendezvous_seconds()
    try:
        store, rank, size = next(dist.rendezvous("env://", timeout=timedelta(seconds=seconds)))
    except Exception as err:  # torch raises several kinds (DistStoreError, RuntimeError, ...)
        raise LaunchError(
            f"the other processes of a {os.environ['WORLD_SIZE']}-process run did not join "
            f"within {seconds:g} s ({' '.join(_stray_variables())}); unset these variables for a "
            f"single process, or start the run with torchrun (wait longer: "
            f"{RENDEZVOUS_TIMEOUT_ENV}) [{type(err).__name__}]"
        ) from None
    store.set_timeout(timedelta(minutes=30))  # torch's default for the run itself
    return store, rank, size


def finish() -> None:
    """End a successful run: wait until every rank is done, then leave the process group
    (before the interpreter shuts down, so gloo's threads hold nothing of it)."""
    if _group() is not None:
        barrier()
    _shutdown()


def _shutdown() -> None:
    """Leave the process group if it exists (also at exit, after a failure)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here."""
    dist = _group()
    if dist is not None:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (a picklable object; small ones only)."""
    dist = _group()
    if dist is None:
        return obj
    import torch

    box = [obj]
    dist.broadcast_object_list(box, src=src, device=torch.device("cpu"))
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (small picklable objects)."""
    dist = _group()
    if dist is None:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_gather_arrays(array: np.ndarray | None) -> list[np.ndarray | None]:
    """Every rank's array, in rank order, on every rank; a rank may give None (nothing).

    The arrays may differ in their number of rows but not in dtype or in their other dimensions.
    Sent as tensors padded to the longest, not pickled.
    """
    dist = _group()
    if dist is None:
        return [array]
    import torch

    meta = None if array is None else (tuple(array.shape), str(array.dtype))
    metas = all_gather_objects(meta)
    given = [m for m in metas if m is not None]
    if not given:
        return [None] * len(metas)
    rest, dtype = given[0][0][1:], given[0][1]
    if any(m[0][1:] != rest or m[1] != dtype for m in given):
        raise ValueError(f"ranks gave arrays of different shapes or dtypes: {metas}")
    rows = max(m[0][0] for m in given)
    buffer = torch.zeros((rows, *rest), dtype=getattr(torch, dtype))
    if array is not None and len(array):
        buffer[: len(array)] = _tensor(array)
    parts = [torch.empty_like(buffer) for _ in metas]
    dist.all_gather(parts, buffer)
    return [
        None if m is None else part[: m[0][0]].numpy() for m, part in zip(metas, parts, strict=True)
    ]


def broadcast_array(array: np.ndarray | None, src: int = 0) -> np.ndarray:
    """Rank ``src``'s array on every rank (the others give None); sent as one tensor."""
    dist = _group()
    if dist is None:
        return array
    import torch

    meta = broadcast_object(None if array is None else (tuple(array.shape), str(array.dtype)), src)
    if rank() == src:
        dist.broadcast(_tensor(array), src=src)
        return array  # itself (a read-only memory map stays one)
    tensor = torch.empty(meta[0], dtype=getattr(torch, meta[1]))
    dist.broadcast(tensor, src=src)
    return tensor.numpy()


def _tensor(array: np.ndarray):
    """A CPU tensor of ``array``'s values (copied when the array is read-only)."""
    import torch

    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def row_range(n: int, block: int = 1) -> tuple[int, int]:
    """This rank's contiguous share ``[start, stop)`` of ``n`` rows, cut at multiples of
    ``block`` (so each rank's batches are those a single process would run)."""
    size, me = world_size(), rank()
    blocks = math.ceil(n / block)
    per = math.ceil(blocks / size)
    return min(n, me * per * block), min(n, (me + 1) * per * block)


def map_rows(fn: Callable[[Any], np.ndarray], X: Any, block: int = 1) -> np.ndarray:
    """``fn(X)``, computed as ``fn`` of each rank's rows (:func:`row_range`) and gathered in
    order on every rank. ``fn`` must act row by row and return an array with one row per row
    of its input (an empty input included)."""
    if _group() is None:
        return fn(X)
    start, stop = row_range(len(X), block)
    parts = all_gather_arrays(np.asarray(fn(X[start:stop])))
    return np.concatenate([p for p in parts if p is not None], axis=0)


def all_reduce_mean(values: Iterable[float]) -> list[float]:
    """The mean over ranks of each number in ``values`` (every rank gives as many)."""
    values = [float(v) for v in values]
    dist = _group()
    if dist is None:
        return values
    import torch

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def average_gradients(parameters: Iterable) -> None:
    """Replace each parameter's gradient by its mean over ranks (one all-reduce of a flat
    buffer). Parameters without a gradient are skipped; every rank must have the same ones."""
    dist = _group()
    if dist is None:
        return
    import torch

    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module) -> None:
    """Copy rank 0's parameters and buffers of a ``torch.nn.Module`` to every rank."""
    dist = _group()
    if dist is None:
        return
    import torch

    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)
