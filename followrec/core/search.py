"""Exclusion-aware top-k search: the best k items per query that the query's user has not
already followed (nor is). One function for validation during training, offline retrieval
and the online service, over any search callable (torch exact, FAISS, HNSW)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

# search(queries, depth) -> (scores, rows), both (queries x depth); rows < 0 are empty slots.
SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def first_k_valid(cand: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """Per row, the first k candidates where valid, in order, padded with -1."""
    return _first_k(valid, k, cand)[0]


def _first_k(valid: np.ndarray, k: int, *arrays: np.ndarray) -> list[np.ndarray]:
    """Per row, the first k entries of each array where valid (ids padded with -1, floats
    with -inf)."""
    rank = np.cumsum(valid, axis=1) - 1
    take = valid & (rank < k)
    rows = np.broadcast_to(np.arange(len(valid))[:, None], valid.shape)
    out = []
    for values in arrays:
        fill = -np.inf if np.issubdtype(values.dtype, np.floating) else -1
        picked = np.full((len(valid), k), fill, dtype=values.dtype)
        picked[rows[take], rank[take]] = values[take]
        out.append(picked)
    return out


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique(values) for a 1-d array, by one sort and a neighbour compare. NumPy 2.4's
    np.unique hashes first: 17.5 s against 0.9 s for 20M engagement keys at 1M accounts."""
    values = np.sort(np.asarray(values).ravel())
    if not len(values):
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def in_sorted(keys: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """True where a probe value is in `keys` (sorted, 1-d); `probe` may have any shape."""
    if not len(keys):
        return np.zeros(np.shape(probe), dtype=bool)
    pos = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
    return keys[pos] == probe


def in_csr(matrix: sp.spmatrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """True where (rows, cols) is a stored entry of `matrix` (shapes broadcast): one sorted
    key array of the stored entries instead of a Python loop over rows."""
    matrix = matrix.tocsr()
    if not matrix.has_sorted_indices:
        matrix = matrix.sorted_indices()
    n = np.int64(max(matrix.shape[1], int(np.max(cols, initial=0)) + 1))
    keys = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr)) * n + matrix.indices
    return in_sorted(keys, rows * n + cols)


def excluded_mask(cand: np.ndarray, excluded: sp.csr_matrix) -> np.ndarray:
    """True where cand[i, j] is an empty slot or a column of excluded row i."""
    return (cand < 0) | in_csr(excluded, np.arange(len(cand))[:, None], cand)


def search_excluding(
    search: SearchFn, queries: np.ndarray, excluded: sp.csr_matrix, k: int, total: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and scores of the best k items per query, skipping row i's excluded columns.

    Searches k + (most exclusions) + 1 deep, so k remain even when every excluded item ranks
    first; deeper (doubling) only while an approximate index returns too few. Rows are
    padded with -1 and scores with -inf when fewer than k items exist."""
    depth = int(min(total, k + np.diff(excluded.indptr).max(initial=0) + 1))
    while True:
        scores, rows = search(np.ascontiguousarray(queries), depth)
        valid = ~excluded_mask(rows, excluded)
        if depth >= total or (valid.sum(axis=1) >= k).all():
            break
        depth = min(total, depth * 2)
    rows, scores = _first_k(valid, k, rows.astype(np.int64), scores.astype(np.float32))
    return rows, scores


def exclusions(follows: sp.csr_matrix, users: np.ndarray) -> sp.csr_matrix:
    """Each user's followed columns plus the user itself, one row per user."""
    n = follows.shape[1]
    self_cols = sp.csr_matrix(
        (np.ones(len(users), dtype=np.int8), (np.arange(len(users)), users)), shape=(len(users), n)
    )
    return (follows[users].astype(np.int8) + self_cols).tocsr()
