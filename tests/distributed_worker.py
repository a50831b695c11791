"""What each rank of the torchrun tests does (``tests/test_distributed.py`` starts it).

    torchrun --standalone --nproc-per-node 2 tests/distributed_worker.py OUT_DIR

Every rank trains the same small MEG twice (the same result twice), trains it again with a
checkpoint half-way and resumes from it, and embeds an array through the embedding cache; each
writes what it got to ``OUT_DIR/rank-<r>.pt`` for the test to compare with one process.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch


def config(batch_size: int, n_iter: int = 3):
    from coreset_meg.gan import MEGConfig

    return MEGConfig.from_params(
        network="mlp", width=16, latent_dim=4, batch_size=batch_size, n_iter=n_iter,
        n_energy_steps=2, data_factor=2, prior_factor=2, log_every=1, n_snapshots=1,
    )  # fmt: skip


def data() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)


def trained(trainer) -> dict:
    """What the test compares: the weights of E and G, G's samples of fixed latents (with batch
    statistics), the records."""
    z = torch.randn(32, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        samples = copy.deepcopy(trainer.generator).train()(z)  # running statistics kept
    return {
        "energy": {k: v.clone() for k, v in trainer.energy_net.state_dict().items()},
        "generator": {k: v.clone() for k, v in trainer.generator.state_dict().items()},
        "samples": samples,
        "history": [{k: v for k, v in r.items() if "seconds" not in k} for r in trainer.history],
    }


def main(out: Path) -> None:
    from coreset_meg.common import distributed
    from coreset_meg.features.embeddings import PixelEmbedder, compute_embeddings
    from coreset_meg.gan import MEGTrainer

    torch.set_num_threads(1)
    assert distributed.init_from_env("cpu")
    me = distributed.rank()
    X = data()
    runs = [trained(MEGTrainer(config(8), (3,), device="cpu", random_state=0).fit(X)) for _ in "ab"]
    # Interrupted after 2 of 4 iterations and resumed: as the 4 iterations in one go.
    straight = trained(MEGTrainer(config(8, 4), (3,), device="cpu", random_state=0).fit(X))
    checkpoint = out / "checkpoint.pt"
    MEGTrainer(config(8, 2), (3,), device="cpu", random_state=0, checkpoint_path=checkpoint).fit(X)
    resumed = MEGTrainer.from_checkpoint(checkpoint, device="cpu")
    resumed.config.schedule.n_iter = 4
    images = np.random.default_rng(1).integers(0, 256, (50, 1, 4, 4), dtype=np.uint8)
    emb = compute_embeddings(images, PixelEmbedder(), cache_dir=out / "cache", chunk_size=8)
    again = compute_embeddings(images, PixelEmbedder(), cache_dir=out / "cache", chunk_size=8)
    torch.save(
        {
            "runs": runs,
            "straight": straight,
            "resumed": trained(resumed.fit(X)),
            "embeddings": torch.from_numpy(np.array(emb)),
            "cached": torch.from_numpy(np.array(again)),  # rank 0 read the cache, sent it
            "rank": me,
        },
        out / f"rank-{me}.pt",
    )
    distributed.finish()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
