"""Training, embedding and scoring under torchrun: two CPU processes (gloo) against one.

Each test starts ``torchrun --standalone --nproc-per-node 2`` (a few seconds: two interpreters
importing torch).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from coreset_meg.common import distributed
from coreset_meg.features.embeddings import PixelEmbedder, compute_embeddings
from coreset_meg.gan import MEGTrainer

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker as worker  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch built without torch.distributed"
)


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 ARGS`` (one thread per process), checked."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(
        [*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


class _BothRanks:
    """The core-set samplers of two ranks as one: each batch is rank 0's then rank 1's."""

    def __init__(self, samplers):
        self.samplers = samplers

    def sample_data_indices(self) -> np.ndarray:
        return np.concatenate([s.sample_data_indices() for s in self.samplers])

    def sample_prior(self) -> torch.Tensor:
        return torch.cat([s.sample_prior() for s in self.samplers])

    @property
    def selection_seconds(self) -> float:
        return sum(s.selection_seconds for s in self.samplers)


class TwoRanksInOne(MEGTrainer):
    """One process with batch 2B fed the batches that ranks 0 and 1 of a 2-process run draw
    (each rank's streams seeded as that rank seeds them), permutations within each half."""

    def _batch_streams(self, X, batch_size):
        streams = []
        for rank in (0, 1):
            self.rank, self.world_size = rank, 2
            streams.append(super()._batch_streams(X, batch_size // 2))
        self.rank, self.world_size = 0, 1
        self._halves = [perm_gen for _, perm_gen, _ in streams]
        return _BothRanks([sampler for sampler, _, _ in streams]), None, None

    def _permutation(self, n: int) -> torch.Tensor:
        half = n // 2
        first, second = (torch.randperm(half, generator=g) for g in self._halves)
        return torch.cat([first, second + half])


@pytest.fixture(scope="module")
def worker_out(tmp_path_factory) -> Path:
    """The folder ``tests/distributed_worker.py`` wrote to, run by two processes."""
    out = tmp_path_factory.mktemp("ranks")
    torchrun(str(Path(worker.__file__)), str(out), cwd=out)
    return out


@pytest.fixture(scope="module")
def ranks(worker_out) -> list[dict]:
    """What each rank got."""
    return [torch.load(worker_out / f"rank-{r}.pt", weights_only=False) for r in (0, 1)]


def _close(a: dict, b: dict, atol: float) -> None:
    """Same networks within ``atol``. With ``atol > 0`` the biases just before a batch
    normalisation and the running means are left out: their true gradient is zero, so Adam
    turns rounding noise into steps of the learning rate's size, with no effect on samples."""
    for part in ("energy", "generator"):
        for key, value in a[part].items():
            if atol and part == "generator" and key.endswith(("bias", "running_mean")):
                continue
            torch.testing.assert_close(value, b[part][key], atol=atol, rtol=0, msg=key)
    torch.testing.assert_close(a["samples"], b["samples"], atol=10 * atol, rtol=0)


def test_two_ranks_of_batch_b_train_as_one_process_of_batch_2b(ranks):
    one = TwoRanksInOne(worker.config(16), (3,), device="cpu", random_state=0).fit(worker.data())
    alone = worker.trained(one)
    _close(ranks[0]["runs"][0], alone, atol=1e-5)
    for got, want in zip(ranks[0]["runs"][0]["history"], alone["history"], strict=True):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    # and not as one process with batch B drawing its own batches
    single = worker.trained(
        MEGTrainer(worker.config(8), (3,), device="cpu", random_state=0).fit(worker.data())
    )
    diff = max((single["energy"][k] - alone["energy"][k]).abs().max() for k in single["energy"])
    assert diff > 1e-4


def test_ranks_agree_and_repeat_exactly(ranks):
    first, again = ranks[0]["runs"]
    _close(first, again, atol=0)  # the same result twice
    _close(first, ranks[1]["runs"][0], atol=0)  # every rank holds the same networks
    assert first["history"] == ranks[1]["runs"][0]["history"]


def test_a_resumed_two_process_run_ends_as_one_never_interrupted(ranks):
    for rank in ranks:
        _close(rank["straight"], rank["resumed"], atol=0)
        assert rank["straight"]["history"] == rank["resumed"]["history"]


def test_shared_embedding_gives_the_single_process_cache(ranks, tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (50, 1, 4, 4), dtype=np.uint8)
    alone = compute_embeddings(images, PixelEmbedder(), cache_dir=tmp_path, chunk_size=8)
    for rank in ranks:
        np.testing.assert_array_equal(rank["embeddings"].numpy(), alone)
        np.testing.assert_array_equal(rank["cached"].numpy(), alone)


def test_checkpoint_of_two_processes_refuses_one(worker_out):
    with pytest.raises(ValueError, match="written by 2 process"):
        MEGTrainer.from_checkpoint(worker_out / "checkpoint.pt", device="cpu")


def test_anomaly_fit_and_score_under_torchrun(tmp_path):
    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.standard_normal((120, 4)), columns=list("abcd"))
    test = pd.DataFrame(rng.standard_normal((700, 4)) * 1.5, columns=list("abcd"))
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    anomaly = shutil.which("anomaly", path=str(Path(sys.executable).parent)) or "anomaly"
    settings = ["--n-iter", "4", "--batch-size", "16", "--quiet"]
    logs = ["--log-dir", "logs", "--redirects", "3"]  # each rank's output in its own files
    torchrun(*logs, "--no-python", anomaly, "fit", "train.csv", "--out", "m2", *settings[:-1],
             cwd=tmp_path)  # fmt: skip
    stderr = {p.parent.name: p.read_text() for p in (tmp_path / "logs").rglob("stderr.log")}
    assert "INFO:" in stderr["0"] and "INFO:" not in stderr["1"]  # rank 0 speaks for both
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    torchrun("--no-python", anomaly, "score", "m2", "test.csv", "--out", "s2.csv", "--quiet",
             cwd=tmp_path)  # fmt: skip
    subprocess.run([anomaly, "score", "m2", "test.csv", "--out", "s1.csv", "--quiet"],
                   cwd=tmp_path, check=True, capture_output=True)  # fmt: skip
    two, one = (pd.read_csv(tmp_path / f"s{n}.csv") for n in (2, 1))
    assert len(two) == 700
    pd.testing.assert_frame_equal(two, one)  # the same scores file as one process writes
    from coreset_meg.anomaly import load_model

    model = load_model(tmp_path / "m2")  # the model of the two processes, in one
    np.testing.assert_allclose(-model.score_samples(test), two["anomaly_score"], rtol=1e-6)


def test_alone_and_single_process_helpers_are_the_identity():
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    X = np.arange(10.0)
    assert distributed.map_rows(lambda rows: rows * 2, X, block=4).tolist() == (X * 2).tolist()
    assert distributed.all_reduce_mean([1.0, 2.0]) == [1.0, 2.0]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
