"""Synthetic embeddings with a known unwanted domain, for the demo, tests and benchmarks."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

RETAINED_TOPICS = ("science", "sports", "finance")
UNWANTED_TOPIC = "celebrity_gossip"


def gaussian_domains(n_unwanted: int, n_retained: int, dims: int, shift: float = 0.5,
                     seed: int = 0, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Unwanted and retained rows from Gaussians with one shared, correlated covariance.

    The unwanted mean is ``shift`` away from the retained mean along a random unit direction;
    every coordinate carries the common ``offset``.
    """
    rng = np.random.default_rng(seed)
    mixing = np.eye(dims) + 0.3 * rng.standard_normal((dims, dims)) / np.sqrt(dims)
    direction = rng.standard_normal(dims)
    direction /= np.linalg.norm(direction)
    retained = rng.standard_normal((n_retained, dims)) @ mixing.T + offset
    unwanted = rng.standard_normal((n_unwanted, dims)) @ mixing.T + offset + shift * direction
    return unwanted, retained


def demo_table(n_unwanted: int = 3000, n_retained: int = 24000, dims: int = 24, shift: float = 0.6,
               seed: int = 7) -> pa.Table:
    """A lakehouse-style table: id, topic, text and a float32 embedding, rows shuffled."""
    unwanted, retained = gaussian_domains(n_unwanted, n_retained, dims, shift, seed)
    rng = np.random.default_rng(seed + 1)
    topics = np.concatenate([np.full(n_unwanted, UNWANTED_TOPIC, dtype=object),
                             rng.choice(np.array(RETAINED_TOPICS, dtype=object), n_retained)])
    vectors = np.vstack([unwanted, retained]).astype(np.float32)
    order = rng.permutation(len(vectors))
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    texts = [f"{topic} post #{i}" for topic, i in zip(topics[order], ids)]
    flat = pa.array(vectors[order].ravel())
    embedding = pa.FixedSizeListArray.from_arrays(flat, dims).cast(pa.list_(pa.float32()))
    return pa.table({"id": ids, "topic": pa.array(topics[order], pa.string()), "text": texts, "embedding": embedding})
