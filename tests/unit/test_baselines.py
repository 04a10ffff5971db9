"""The narrow candidate sources on graphs small enough to check by hand."""

import numpy as np
import pytest

from followrec.core.config import BaselineConfig
from followrec.evaluation import baselines
from followrec.evaluation.baselines import (
    GraphContext,
    als,
    cofollow_cf,
    cofollow_similarity,
    friends_of_friends,
    popularity,
    popularity_segment,
    round_robin,
    top_k_per_row,
)
from tests.conftest import make_dataset

CFG = BaselineConfig()

# 0 follows 1 and 2; 1 follows 2 and 3; 2 follows 0, 3 and 4; 5 and 6 follow 3 and 4.
EDGES = [
    (0, 1),
    (0, 2),
    (1, 2),
    (1, 3),
    (2, 0),
    (2, 3),
    (2, 4),
    (5, 3),
    (5, 4),
    (6, 3),
    (6, 4),
    (6, 2),
]


def context(edges=EDGES, n=7, segment=None):
    ds = make_dataset(edges, n=n)
    seg = np.zeros(n, dtype=np.int64) if segment is None else np.asarray(segment)
    return GraphContext.from_train(ds.follows, n, seg, progress=False)


def test_friends_of_friends_counts_paths_and_excludes_self_and_followed():
    ctx = context()
    recs = friends_of_friends(ctx, np.array([0]), 4, CFG)
    # Paths from 0: 0-1-2 (followed), 0-1-3, 0-2-0 (self), 0-2-3, 0-2-4 -> 3 (2 paths), 4 (1).
    assert recs.tolist() == [[3, 4, -1, -1]]


def test_popularity_ranks_by_training_followers_without_self_or_followed():
    ctx = context()
    # Follower counts: 3 -> 4, 2 -> 3, 4 -> 3, then 0, 1 (1 each), 5, 6 (0).
    assert popularity(ctx, np.array([5]), 3, CFG).tolist() == [[2, 0, 1]]
    recs = popularity(ctx, np.array([3]), 7, CFG)[0]
    assert 3 not in recs
    assert recs[:3].tolist() == [2, 4, 0]


def test_popularity_segment_prefers_what_the_segment_follows():
    # Users 5 and 6 are segment 1; they follow 3 and 4 (and 6 follows 2).
    ctx = context(segment=[0, 0, 0, 0, 0, 1, 1])
    recs = popularity_segment(ctx, np.array([5, 0]), 2, CFG)
    assert recs[0].tolist() == [2, 0]  # 5 already follows 3 and 4; 2 is next for segment 1
    assert recs[1].tolist() == [3, 4]  # segment 0 follows 2 and 3 most; 0 follows 2


def test_cofollow_similarity_matches_dense_cosine():
    ctx = context()
    sim = cofollow_similarity(ctx, neighbours=100).toarray()
    f = ctx.follows.toarray()
    co = f.T @ f
    norm = np.sqrt(np.maximum(f.sum(axis=0), 1))
    expected = co / np.outer(norm, norm)
    np.fill_diagonal(expected, 0)
    assert sim == pytest.approx(expected, abs=1e-6)


def test_cofollow_cf_scores_by_summed_similarity():
    ctx = context()
    user = np.array([5])  # follows 3 and 4
    sim = cofollow_similarity(ctx, 100).toarray()
    scores = sim[3] + sim[4]
    scores[[3, 4, 5]] = 0
    expected = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > 0][:3]
    assert cofollow_cf(ctx, user, 3, CFG)[0][: len(expected)].tolist() == expected


def test_blocks_on_threads_give_the_one_block_results(monkeypatch):
    # Many small blocks, two at a time, must give what one block on one thread gives.
    rng = np.random.default_rng(4)
    edges = sorted({(int(a), int(b)) for a, b in rng.integers(0, 60, (400, 2)) if a != b})
    ctx = context(edges, n=60)
    users = np.arange(60)
    results = []
    for block, threads in ((1000, 1), (7, 2)):
        monkeypatch.setattr(baselines, "USER_CHUNK", block)
        monkeypatch.setattr(baselines, "CHUNK_THREADS", threads)
        results.append(
            (
                friends_of_friends(ctx, users, 10, CFG),
                cofollow_similarity(ctx, 5).toarray(),
                cofollow_cf(ctx, users, 10, CFG),
            )
        )
    for one, many in zip(*results):
        assert np.array_equal(one, many)


def test_als_returns_k_distinct_unfollowed_accounts():
    ctx = context()
    cfg = BaselineConfig(als_factors=4, als_iterations=3)
    recs = als(ctx, np.array([0, 5]), 3, cfg)
    for user, row in zip([0, 5], recs):
        valid = row[row >= 0]
        assert len(set(valid.tolist())) == len(valid) == 3
        assert user not in valid
        assert not set(valid.tolist()) & set(ctx.follows[user].indices.tolist())


def test_round_robin_interleaves_and_drops_repeats():
    a = np.array([[1, 2, 3]])
    b = np.array([[2, 4, 5]])
    c = np.array([[6, 1, -1]])
    assert round_robin([a, b, c], 5).tolist() == [[1, 2, 6, 4, 3]]
    assert round_robin([a, b, c], 9).tolist() == [[1, 2, 6, 4, 3, 5, -1, -1, -1]]


def test_lightgcn_finds_planted_communities_that_popularity_misses():
    # Four communities of 30 accounts; inside one, each follows 8 others of it. A fifth of
    # each user's follows is held out: LightGCN must rank them above what is popular overall.
    from followrec.evaluation.baselines import lightgcn

    rng = np.random.default_rng(5)
    train, held = [], []
    for user in range(120):
        community = np.arange(30) + 30 * (user // 30)
        peers = rng.choice(community[community != user], size=8, replace=False)
        train += [(user, int(p)) for p in peers[:6]]
        held += [(user, int(p)) for p in peers[6:]]
    # A few accounts everyone follows make popularity a real competitor.
    train += [(user, star) for user in range(120) for star in (0, 30) if user not in (0, 30)]
    ctx = context(train, n=120)
    cfg = BaselineConfig(
        lightgcn_dim=16, lightgcn_epochs=60, lightgcn_min_epochs=20, lightgcn_batch_size=256
    )
    users = np.arange(120)
    truth = {(u, v) for u, v in held}

    def recall(recs):
        return np.mean([sum((u, v) in truth for v in row) / 2 for u, row in zip(users, recs)])

    gcn = lightgcn(ctx, users, 10, cfg)
    for user, row in zip(users, gcn):
        valid = row[row >= 0].tolist()
        assert user not in valid and not set(valid) & set(ctx.follows[user].indices.tolist())
    assert recall(gcn) > recall(popularity(ctx, users, 10, cfg)) + 0.2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_k_per_row_is_value_then_popularity_order(dtype):
    # Small integer scores (many ties, as path counts give) over 300 rows; float32 takes the
    # one-int64-key sort, float64 the lexsort; the floor before the sort must drop no winner.
    rng = np.random.default_rng(5)
    n_rows, n_cols, k = 300, 400, 7
    cells = rng.choice(n_rows * n_cols, size=20_000, replace=False)
    rows, cols = cells // n_cols, cells % n_cols
    vals = rng.integers(1, 6, size=len(cells)).astype(dtype)
    ties = rng.permutation(n_cols)
    got_rows, got_cols, got_vals = top_k_per_row(rows, cols, vals, n_rows, k, ties)
    for row in range(n_rows):
        mine = np.flatnonzero(rows == row)
        best = sorted(mine, key=lambda i: (-vals[i], -ties[cols[i]]))[:k]
        assert got_cols[got_rows == row].tolist() == cols[best].tolist()
        assert got_vals[got_rows == row].tolist() == vals[best].tolist()
