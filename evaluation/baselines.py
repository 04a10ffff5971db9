"""The narrow candidate sources a multi-source system serves today, as sparse-matrix code.

Every source returns an int array (users x K), best first, padded with -1, and never
recommends the user or an account the user already follows (in training)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm

from followrec.core.config import BaselineConfig
from followrec.core.errors import InputError
from followrec.core.search import first_k_valid
from followrec.features.transforms import follow_matrix

log = logging.getLogger(__name__)
USER_CHUNK = 4096


@dataclass
class GraphContext:
    """Training follows as sparse matrices plus what the sources rank by."""

    follows: sp.csr_matrix  # user x account, 1 where the user follows (training only)
    popularity: np.ndarray  # training follower count per account
    segment: np.ndarray  # per account: (language, country) segment code
    progress: bool = True
    _percentile: np.ndarray | None = None

    @classmethod
    def from_train(
        cls, train: pd.DataFrame, n: int, segment: np.ndarray, progress: bool = True
    ) -> GraphContext:
        """Build from followrec.training follow rows."""
        matrix = follow_matrix(train, n)
        popularity = np.asarray(matrix.sum(axis=0)).ravel()
        return cls(
            follows=matrix, popularity=popularity, segment=np.asarray(segment), progress=progress
        )

    @property
    def n(self) -> int:
        """Accounts in the catalog."""
        return self.follows.shape[1]

    def popularity_order(self) -> np.ndarray:
        """Accounts by training popularity, ties by id."""
        return np.lexsort((np.arange(self.n), -self.popularity))

    @property
    def popularity_percentile(self) -> np.ndarray:
        """Per account, its training-popularity percentile in [0, 1): the tie-breaker."""
        if self._percentile is None:
            self._percentile = np.argsort(np.argsort(self.popularity, kind="stable")) / self.n
        return self._percentile


def _rank_lists(ctx: GraphContext, users: np.ndarray, ranked: np.ndarray, k: int) -> np.ndarray:
    """Serve every user one shared ranked list, minus the user and what they follow."""
    position = np.full(ctx.n, -1, dtype=np.int64)
    position[ranked] = np.arange(len(ranked))
    out = np.empty((len(users), k), dtype=np.int64)
    for lo in range(0, len(users), USER_CHUNK):
        u = users[lo : lo + USER_CHUNK]
        excluded = np.zeros((len(u), len(ranked)), dtype=bool)
        sub = ctx.follows[u].tocoo()
        pos = position[sub.col]
        hit = pos >= 0
        excluded[sub.row[hit], pos[hit]] = True
        self_pos = position[u]
        has_self = self_pos >= 0
        excluded[np.flatnonzero(has_self), self_pos[has_self]] = True
        cand = np.broadcast_to(ranked, excluded.shape)
        out[lo : lo + len(u)] = first_k_valid(cand, ~excluded, k)
    return out


def _candidate_depth(ctx: GraphContext, users: np.ndarray, k: int) -> int:
    """How deep a shared ranked list must go so k valid items remain for every user."""
    most_followed = int(np.diff(ctx.follows.indptr)[users].max()) if len(users) else 0
    return min(ctx.n, k + most_followed + 1)


def popularity(ctx: GraphContext, users: np.ndarray, k: int, cfg: BaselineConfig) -> np.ndarray:
    """Most-followed accounts overall."""
    ranked = ctx.popularity_order()[: _candidate_depth(ctx, users, k)]
    return _rank_lists(ctx, users, ranked, k)


def popularity_segment(
    ctx: GraphContext, users: np.ndarray, k: int, cfg: BaselineConfig
) -> np.ndarray:
    """Most followed by users of the same language/country segment, then overall."""
    depth = _candidate_depth(ctx, users, k)
    seg = ctx.segment
    n_seg = int(seg.max()) + 1
    onehot = sp.csr_matrix(
        (np.ones(ctx.n, dtype=np.float32), (seg, np.arange(ctx.n))), shape=(n_seg, ctx.n)
    )
    seg_counts = (onehot @ ctx.follows).toarray()  # segment x account
    out = np.full((len(users), k), -1, dtype=np.int64)
    user_seg = seg[users]
    for s in np.unique(user_seg):
        # Segment count first, global popularity breaks ties (and fills small segments).
        ranked = np.lexsort((np.arange(ctx.n), -ctx.popularity, -seg_counts[s]))[:depth]
        rows = np.flatnonzero(user_seg == s)
        out[rows] = _rank_lists(ctx, users[rows], ranked, k)
    return out


def _top_k_per_row(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, k: int, tiebreak: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k best (row, col, val) entries of each row by value, ties by `tiebreak` in [0, 1).

    One float64 sort key (row, then normalised value) is several times faster than lexsort.
    """
    if len(vals) == 0:
        return rows, cols, vals
    scaled = vals / (float(vals.max()) * (1 + 1e-9)) + tiebreak[cols] * 1e-9
    order = np.argsort(rows * 4.0 - scaled, kind="stable")
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    rank = np.arange(len(rows)) - starts[rows]
    top = rank < k
    return rows[top], cols[top], vals[top]


def _top_k_sparse(
    ctx: GraphContext, users: np.ndarray, scores: sp.csr_matrix, k: int
) -> np.ndarray:
    """Top k per row of a (users x accounts) score matrix, exclusions removed, ties by
    popularity; rows with fewer than k scored accounts are padded with -1."""
    scores = scores.tocsr()
    scores = scores - scores.multiply(ctx.follows[users])  # drop already-followed
    scores.eliminate_zeros()
    coo = scores.tocoo()
    keep = (coo.col != users[coo.row]) & (coo.data > 0)
    rows, cols, _ = _top_k_per_row(
        coo.row[keep],
        coo.col[keep].astype(np.int64),
        coo.data[keep],
        len(users),
        k,
        ctx.popularity_percentile,
    )
    starts = np.searchsorted(rows, np.arange(len(users)))
    out = np.full((len(users), k), -1, dtype=np.int64)
    out[rows, np.arange(len(rows)) - starts[rows]] = cols
    return out


def _chunked(
    ctx: GraphContext,
    users: np.ndarray,
    k: int,
    desc: str,
    score: Callable[[np.ndarray], sp.csr_matrix],
) -> np.ndarray:
    out = np.empty((len(users), k), dtype=np.int64)
    starts = range(0, len(users), USER_CHUNK)
    for lo in tqdm(starts, desc=desc, disable=not ctx.progress, leave=False):
        u = users[lo : lo + USER_CHUNK]
        out[lo : lo + len(u)] = _top_k_sparse(ctx, u, score(u), k)
    return out


def friends_of_friends(
    ctx: GraphContext, users: np.ndarray, k: int, cfg: BaselineConfig
) -> np.ndarray:
    """Two-hop follow expansion scored by the number of paths."""
    f = ctx.follows
    return _chunked(ctx, users, k, "friends_of_friends", lambda u: f[u] @ f)


def cofollow_similarity(ctx: GraphContext, neighbours: int) -> sp.csr_matrix:
    """Item-item cosine over followers, pruned to the top `neighbours` per account."""
    by_account = ctx.follows.T.tocsr()  # account x follower
    norm = np.sqrt(np.maximum(ctx.popularity, 1)).astype(np.float32)
    parts = []
    for lo in range(0, ctx.n, USER_CHUNK):
        hi = min(lo + USER_CHUNK, ctx.n)
        block = (by_account[lo:hi] @ ctx.follows).tocoo()  # account x account co-follows
        keep = block.row + lo != block.col
        r, c, v = block.row[keep], block.col[keep].astype(np.int64), block.data[keep]
        v = v / (norm[r + lo] * norm[c])
        r, c, v = _top_k_per_row(r, c, v, hi - lo, neighbours, ctx.popularity_percentile)
        parts.append(sp.csr_matrix((v, (r, c)), shape=(hi - lo, ctx.n)))
    return sp.vstack(parts).tocsr()


def cofollow_cf(ctx: GraphContext, users: np.ndarray, k: int, cfg: BaselineConfig) -> np.ndarray:
    """Item-to-item collaborative filtering: accounts co-followed with the user's follows."""
    sim = cofollow_similarity(ctx, cfg.cf_neighbours)
    f = ctx.follows
    return _chunked(ctx, users, k, "cofollow_cf", lambda u: f[u] @ sim)


def als(ctx: GraphContext, users: np.ndarray, k: int, cfg: BaselineConfig) -> np.ndarray:
    """Matrix factorisation with the `implicit` library's ALS (the practitioner's peer)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # implicit warns (and slows down) when BLAS runs its own threads beside its own.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=cfg.als_factors,
            regularization=cfg.als_regularization,
            alpha=cfg.als_alpha,
            iterations=cfg.als_iterations,
            random_state=cfg.seed,
            calculate_training_loss=False,
        )
        model.fit(ctx.follows, show_progress=ctx.progress)
        ids, _ = model.recommend(
            users, ctx.follows[users], N=min(k + 1, ctx.n), filter_already_liked_items=True
        )
    ids = np.asarray(ids, dtype=np.int64)
    valid = (ids >= 0) & (ids != users[:, None])
    return first_k_valid(ids, valid, k)


def lightgcn(ctx: GraphContext, users: np.ndarray, k: int, cfg: BaselineConfig) -> np.ndarray:
    """Graph collaborative filtering: LightGCN with BPR (torch_geometric), the graph peer."""
    from followrec.evaluation.lightgcn import recommend

    return recommend(ctx.follows, users, k, cfg, ctx.progress)


def round_robin(lists: list[np.ndarray], k: int) -> np.ndarray:
    """Interleave ranked lists (rank 1 of each, then rank 2, ...), dropping repeats."""
    stacked = np.stack(lists, axis=2).reshape(len(lists[0]), -1)  # users x (K * sources)
    order = np.argsort(stacked, axis=1, kind="stable")
    sorted_vals = np.take_along_axis(stacked, order, axis=1)
    repeat = np.zeros_like(stacked, dtype=bool)
    dup_sorted = np.zeros_like(sorted_vals, dtype=bool)
    dup_sorted[:, 1:] = sorted_vals[:, 1:] == sorted_vals[:, :-1]
    np.put_along_axis(repeat, order, dup_sorted, axis=1)
    return first_k_valid(stacked, (stacked >= 0) & ~repeat, k)


SOURCES: dict[str, Callable[..., np.ndarray]] = {
    "popularity": popularity,
    "popularity_segment": popularity_segment,
    "friends_of_friends": friends_of_friends,
    "cofollow_cf": cofollow_cf,
    "als": als,
    "lightgcn": lightgcn,
}
BLEND_OF = ("friends_of_friends", "cofollow_cf", "popularity")


def run_sources(
    ctx: GraphContext, users: np.ndarray, k: int, cfg: BaselineConfig
) -> dict[str, tuple[np.ndarray, float]]:
    """Recommendations and wall seconds of each configured source (the blend reuses its
    parts' lists; its time is the sum of theirs)."""
    unknown = [s for s in cfg.sources if s not in SOURCES and s != "blend"]
    if unknown:
        raise InputError(
            f"unknown source; known: {', '.join([*SOURCES, 'blend'])}",
            field="baselines.sources",
            value=unknown[0],
        )
    needed = list(cfg.sources)
    if "blend" in needed:
        needed = [*needed, *(s for s in BLEND_OF if s not in needed)]
    results: dict[str, tuple[np.ndarray, float]] = {}
    for name in needed:
        if name == "blend":
            continue
        started = time.perf_counter()
        results[name] = (SOURCES[name](ctx, users, k, cfg), time.perf_counter() - started)
        log.info("source %s: %.1fs", name, results[name][1])
    if "blend" in cfg.sources:
        started = time.perf_counter()
        recs = round_robin([results[s][0] for s in BLEND_OF], k)
        seconds = time.perf_counter() - started + sum(results[s][1] for s in BLEND_OF)
        results["blend"] = (recs, seconds)
    return {name: results[name] for name in cfg.sources}
