"""The narrow candidate sources a multi-source system serves today, as sparse-matrix code.

Every source returns an int array (users x K), best first, padded with -1, and never
recommends the user or an account the user already follows (in training)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm

from followrec.core.config import BaselineConfig
from followrec.core.errors import InputError
from followrec.core.search import first_k_valid, in_csr
from followrec.features.transforms import follow_matrix

log = logging.getLogger(__name__)
USER_CHUNK = 4096
CHUNK_THREADS = min(4, os.cpu_count() or 1)
ROW_FLOOR_QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995)


@dataclass
class GraphContext:
    """Training follows as sparse matrices plus what the sources rank by."""

    follows: sp.csr_matrix  # user x account, 1 where the user follows (training only)
    popularity: np.ndarray  # training follower count per account
    segment: np.ndarray  # per account: (language, country) segment code
    progress: bool = True
    _rank: np.ndarray = field(init=False, repr=False)

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
    def popularity_rank(self) -> np.ndarray:
        """Per account, its place by training popularity (0 = least, ties by id): the
        tie-breaker of scored sources."""
        return self._rank

    def __post_init__(self) -> None:
        # Built here, not on first use: sources read it from several threads.
        self._rank = np.argsort(np.argsort(self.popularity, kind="stable"))


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


def top_k_per_row(
    rows: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    n_rows: int,
    k: int,
    tiebreak: np.ndarray,
    need: int | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k best (row, col, val) entries of each row by value, ties by the higher
    `tiebreak[col]` (distinct integers, e.g. popularity ranks), grouped by row. Entries that
    cannot reach their row's top k are dropped before the sort (`need`: entries a row must
    keep to be sure of k; default k)."""
    if len(vals) == 0:
        return rows, cols, vals
    keep = vals >= _row_floor(rows, vals, n_rows, k if need is None else need)[rows]
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = _ranked_order(rows, vals, tiebreak[cols], len(tiebreak))
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    rank = np.arange(len(rows)) - starts[rows]
    top = rank < k
    return rows[top], cols[top], vals[top]


def _ranked_order(rows: np.ndarray, vals: np.ndarray, ties: np.ndarray, n_ties: int) -> np.ndarray:
    """Order by row, then value (descending), then tie rank (descending). Positive float32
    values sort like their bit patterns, so the three fit one int64 key when their bits do
    (rows of a chunk, 31 value bits, up to 2^20 accounts); else a lexsort, ~4x slower."""
    row_bits = int(rows.max()).bit_length()
    tie_bits = max(int(n_ties - 1).bit_length(), 1)
    if vals.dtype != np.float32 or vals.min() <= 0 or row_bits + 31 + tie_bits > 63:
        return np.lexsort((-ties, -vals, rows))
    descending_value = (2**31 - 1) - vals.view(np.int32).astype(np.int64)
    key = rows.astype(np.int64) << (31 + tie_bits)
    key |= descending_value << tie_bits
    key |= (n_ties - 1) - ties.astype(np.int64)
    return np.argsort(key)


def _row_floor(
    rows: np.ndarray, vals: np.ndarray, n_rows: int, need: int | np.ndarray
) -> np.ndarray:
    """Per row, a value that at least `need` of its entries reach (else -inf): an entry
    below it ranks after `need` others. Candidate floors are quantiles of a sample; any
    choice is correct, good ones drop more. One bucketing pass, one count."""
    sample = vals[:: max(1, len(vals) // 20_000)]
    floors = np.unique(np.quantile(sample, ROW_FLOOR_QUANTILES))
    bucket = np.searchsorted(floors, vals, side="right")  # reaches floors[:bucket]
    width = len(floors) + 1
    counts = np.bincount(rows.astype(np.int64) * width + bucket, minlength=n_rows * width).reshape(
        n_rows, width
    )
    reaching = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1][:, 1:]  # entries >= floors[j]
    best = (reaching >= np.broadcast_to(need, n_rows)[:, None]).sum(axis=1) - 1
    return np.where(best >= 0, floors[np.maximum(best, 0)], -np.inf)


def _top_k_sparse(
    ctx: GraphContext, users: np.ndarray, scores: sp.csr_matrix, k: int
) -> np.ndarray:
    """Top k per row of a (users x accounts) score matrix, the user and followed accounts
    excluded, ties by popularity; rows with fewer than k scored accounts are padded with -1.
    The floor is taken before the exclusions, so a row keeps k + its follows + 1 entries."""
    scores = scores.tocsr()
    rows = np.repeat(np.arange(len(users)), np.diff(scores.indptr))
    cols, vals = scores.indices.astype(np.int64), scores.data
    positive = vals > 0
    rows, cols, vals = rows[positive], cols[positive], vals[positive]
    followed = ctx.follows[users]
    need = k + np.diff(followed.indptr) + 1
    keep = vals >= _row_floor(rows, vals, len(users), need)[rows]
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    allowed = (cols != users[rows]) & ~in_csr(followed, rows, cols)
    rows, cols, _ = top_k_per_row(
        rows[allowed], cols[allowed], vals[allowed], len(users), k, ctx.popularity_rank
    )
    starts = np.searchsorted(rows, np.arange(len(users)))
    out = np.full((len(users), k), -1, dtype=np.int64)
    out[rows, np.arange(len(rows)) - starts[rows]] = cols
    return out


def _chunks(n: int, work: Callable[[int, int], object], desc: str, progress: bool) -> list:
    """work(lo, hi) over [0, n) in USER_CHUNK blocks, CHUNK_THREADS at a time, results in
    order. SciPy's sparse products and NumPy's sorts release the GIL, so blocks overlap on
    several cores; peak memory is that many blocks' score matrices."""
    starts = range(0, n, USER_CHUNK)
    with ThreadPoolExecutor(CHUNK_THREADS) as pool:
        done = pool.map(lambda lo: work(lo, min(lo + USER_CHUNK, n)), starts)
        return list(tqdm(done, total=len(starts), desc=desc, disable=not progress, leave=False))


def _chunked(
    ctx: GraphContext,
    users: np.ndarray,
    k: int,
    desc: str,
    score: Callable[[np.ndarray], sp.csr_matrix],
) -> np.ndarray:
    parts = _chunks(
        len(users),
        lambda lo, hi: _top_k_sparse(ctx, users[lo:hi], score(users[lo:hi]), k),
        desc,
        ctx.progress,
    )
    return np.concatenate(parts) if parts else np.empty((0, k), dtype=np.int64)


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

    def block(lo: int, hi: int) -> sp.csr_matrix:
        co = (by_account[lo:hi] @ ctx.follows).tocoo()  # account x account co-follows
        keep = co.row + lo != co.col
        r, c, v = co.row[keep], co.col[keep].astype(np.int64), co.data[keep]
        v = v / (norm[r + lo] * norm[c])
        r, c, v = top_k_per_row(r, c, v, hi - lo, neighbours, ctx.popularity_rank)
        return sp.csr_matrix((v, (r, c)), shape=(hi - lo, ctx.n))

    return sp.vstack(_chunks(ctx.n, block, "co-follow similarity", ctx.progress)).tocsr()


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
