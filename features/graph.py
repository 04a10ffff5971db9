"""Graph features from training follows: who follows an account, what lies two hops from a
user, and a spectral embedding of the follow graph. Row blocks keep memory bounded at 1M
accounts; all of it is deterministic for a given graph."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

GRAPH_BLOCK_ROWS = 100_000  # users per sparse product in the two-hop bag


def truncated_rows(
    indptr: np.ndarray, values: np.ndarray, limit: int, n_cols: int
) -> sp.csr_matrix:
    """A binary CSR matrix keeping the first `limit` ids of each bag row (bags are ordered
    most recent first, so this keeps the most recent)."""
    lengths = np.diff(indptr)
    kept = np.minimum(lengths, limit)
    rank = np.arange(len(values)) - np.repeat(indptr[:-1], lengths)
    keep = rank < limit
    new_ptr = np.concatenate([[0], np.cumsum(kept)])
    data = np.ones(int(keep.sum()), dtype=np.float32)
    matrix = sp.csr_matrix((data, values[keep], new_ptr), shape=(len(lengths), n_cols))
    matrix.sort_indices()
    return matrix


def row_top_k(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k largest entries' column ids (ties by column id), as CSR."""
    matrix = matrix.tocsr()
    matrix.sort_indices()
    row = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, row))
    starts = matrix.indptr[:-1]
    rank = np.arange(len(order)) - starts[row[order]]
    keep = rank < k
    counts = np.minimum(np.diff(matrix.indptr), k)
    return np.concatenate([[0], np.cumsum(counts)]), matrix.indices[order][keep].astype(np.int64)


def two_hop_bags(
    recent: sp.csr_matrix, limit: int, block_rows: int = GRAPH_BLOCK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the `limit` accounts reached by the most two-step paths user -> a -> b
    through `recent` (a user's most recent follows), the user itself left out. Accounts
    the user already follows stay in: a held-out follow can be two hops away as well, and
    the bag then looks the same in training and at serving."""
    n = recent.shape[0]
    ptrs, vals = [np.zeros(1, dtype=np.int64)], []
    offset = 0
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        paths = (recent[start:stop] @ recent).tocsr()
        coo = paths.tocoo()
        own = coo.col == coo.row + start
        paths = sp.csr_matrix((coo.data[~own], (coo.row[~own], coo.col[~own])), shape=paths.shape)
        ptr, ids = row_top_k(paths, limit)
        ptrs.append(ptr[1:] + offset)
        vals.append(ids)
        offset += len(ids)
    return np.concatenate(ptrs), (np.concatenate(vals) if vals else np.empty(0, np.int64))


def spectral_embedding(
    follows: sp.csr_matrix, dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(follower side, followee side) embeddings from a degree-normalised SVD of the
    follow matrix (scikit-network GSVD), seeded and sign-fixed so the same graph gives the
    same vectors; scaled to unit variance. Zeros when the graph is too small."""
    from sknetwork.embedding import GSVD
    from sknetwork.linalg.svd_solver import LanczosSVD

    n = follows.shape[0]
    if follows.nnz == 0 or dim >= min(follows.shape) - 1:
        return np.zeros((n, dim), np.float32), np.zeros((follows.shape[1], dim), np.float32)

    class SeededLanczos(LanczosSVD):
        def fit(self, matrix, n_components, init_vector=None):  # noqa: ANN001, ANN201
            start = np.random.default_rng(seed).random(min(matrix.shape))
            return super().fit(matrix, n_components, init_vector=start)

    model = GSVD(n_components=dim, normalized=False, solver=SeededLanczos())
    model.fit(follows.astype(np.float64))
    rows = np.asarray(model.embedding_row_, dtype=np.float64)
    cols = np.asarray(model.embedding_col_, dtype=np.float64)
    # Singular vectors are defined up to sign: make each column's largest entry positive.
    signs = np.sign(rows[np.abs(rows).argmax(axis=0), np.arange(rows.shape[1])])
    signs[signs == 0] = 1.0
    rows, cols = rows * signs, cols * signs
    scale = max(float(np.concatenate([rows, cols]).std()), 1e-12)
    return (rows / scale).astype(np.float32), (cols / scale).astype(np.float32)
