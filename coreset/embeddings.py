"""Deprecated: this module moved to :mod:`coreset_meg.features.embeddings`.

Its old names warn (FutureWarning) and give the objects from there.
"""

from coreset_meg.common.lazy import moved_names

__getattr__, __dir__ = moved_names(
    globals(),
    {
        name: "coreset_meg.features.embeddings"
        for name in (
            "Embedder",
            "PixelEmbedder",
            "TorchScriptEmbedder",
            "compute_embeddings",
            "data_digest",
            "embedding_cache_path",
            "prepare_images",
            "unit_length",
            "DEFAULT_CHUNK_SIZE",
            "file_sha256",
            "load_torchscript",
        )
    },
)
