"""Re-ranking a retrieved pool: a popularity discount and a diversity pass (MMR over
producer embeddings). Both work on arrays of one pool, so serving and the offline
evaluation share them."""

from __future__ import annotations

import numpy as np


def discount(scores: np.ndarray, percentile: np.ndarray, strength: float) -> np.ndarray:
    """Scores lowered by `strength` times the account's popularity percentile: at 0 nothing
    changes; at 1 the most followed account loses one unit of cosine similarity."""
    return np.asarray(scores, dtype=np.float64) - strength * np.asarray(percentile)


def mmr(scores: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Maximal marginal relevance: positions into the pool, in the order picked. Each pick
    maximises (1 - diversity) * score - diversity * (max similarity to those already picked)."""
    n = len(scores)
    k = min(k, n)
    if diversity <= 0 or n == 0:
        return np.argsort(-np.asarray(scores), kind="stable")[:k]
    scores = np.asarray(scores, dtype=np.float64)
    vectors = np.asarray(vectors, dtype=np.float64)
    closest = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    picked = np.empty(k, dtype=np.int64)
    for step in range(k):
        redundancy = np.where(np.isfinite(closest), closest, 0.0)
        value = (1 - diversity) * scores - diversity * redundancy
        value[~available] = -np.inf
        best = int(np.argmax(value))
        picked[step] = best
        available[best] = False
        closest = np.maximum(closest, vectors @ vectors[best])
    return picked
