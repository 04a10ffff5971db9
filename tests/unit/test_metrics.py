"""Every metric against values worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from followrec.core.metrics import (
    Relevance,
    catalog_metrics,
    evaluate_recommendations,
    per_user_metrics,
    popularity_percentile,
)
from followrec.core.search import in_sorted


def relevance() -> Relevance:
    # user 0 follows {1, 2, 3} in the holdout, user 4 follows {5}.
    holdout = pd.DataFrame({"follower_id": [0, 0, 0, 4], "followee_id": [1, 2, 3, 5]})
    return Relevance.from_holdout(holdout, np.array([0, 4]), n_accounts=10)


RECS = np.array([[1, 9, 2, 8, 7], [-1, -1, -1, -1, -1]])


def test_hits_match_holdout_and_ignore_padding():
    hits = relevance().hits(RECS)
    assert hits.tolist() == [[True, False, True, False, False], [False] * 5]


def test_hits_of_users_without_holdout_follows_are_all_misses():
    empty = pd.DataFrame({"follower_id": [7], "followee_id": [1]})
    rel = Relevance.from_holdout(empty, np.array([0, 4]), n_accounts=10)
    assert not rel.hits(RECS).any()


def test_in_sorted_matches_python_membership():
    keys = np.array([2, 5, 9, 40])
    probe = np.array([[0, 2, 3], [9, 40, 41]])
    assert in_sorted(keys, probe).tolist() == [[False, True, False], [True, True, False]]
    assert in_sorted(keys[:0], probe).shape == (2, 3)
    assert not in_sorted(keys[:0], probe).any()


def test_metrics_at_5_by_hand():
    rel = relevance()
    m = per_user_metrics(rel.hits(RECS), rel.n_relevant, 5)
    assert m["recall"] == pytest.approx([2 / 3, 0.0])
    assert m["precision"] == pytest.approx([2 / 5, 0.0])
    # AP = (P@1 * 1 + P@3 * 1) / min(3, 5) = (1 + 2/3) / 3
    assert m["map"] == pytest.approx([(1 + 2 / 3) / 3, 0.0])
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) + 1/log2(4)
    assert m["ndcg"] == pytest.approx([1.5 / (1.5 + 1 / np.log2(3)), 0.0])
    assert m["hit_rate"] == pytest.approx([1.0, 0.0])


def test_metrics_at_2_cap_the_ideal_at_k():
    rel = relevance()
    m = per_user_metrics(rel.hits(RECS), rel.n_relevant, 2)
    assert m["recall"][0] == pytest.approx(1 / 3)
    assert m["precision"][0] == pytest.approx(1 / 2)
    assert m["map"][0] == pytest.approx(1 / 2)  # one hit at rank 1, divided by min(3, 2)
    assert m["ndcg"][0] == pytest.approx(1 / (1 + 1 / np.log2(3)))


def test_short_lists_count_missing_ranks_as_misses():
    rel = relevance()
    m = per_user_metrics(rel.hits(RECS[:, :2]), rel.n_relevant, 5)
    assert m["precision"][0] == pytest.approx(1 / 5)


def test_popularity_percentile_and_coverage():
    pct = popularity_percentile(np.array([0, 5, 5, 10]))
    assert pct.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 1])
    recs = np.array([[3, 1, 0], [3, -1, 2]])
    out = catalog_metrics(recs, (2, 1, 3), pct)
    assert out[1] == pytest.approx({"coverage": 1 / 4, "popularity_percentile": 1.0})
    assert out[2] == pytest.approx(
        {"coverage": 2 / 4, "popularity_percentile": (1 + 1 / 3 + 1) / 3}
    )
    assert out[3] == pytest.approx(
        {"coverage": 4 / 4, "popularity_percentile": (1 + 1 / 3 + 1 + 0 + 1 / 3) / 5}
    )


def test_groups_average_only_their_users():
    rel = relevance()
    pct = np.linspace(0, 1, 10)
    groups = {"a": np.array([True, False]), "b": np.array([False, True])}
    out = evaluate_recommendations(RECS, rel, (5,), pct, groups)
    assert out["recall@5"] == pytest.approx((2 / 3 + 0) / 2)
    assert out["groups"]["a"]["recall@5"] == pytest.approx(2 / 3)
    assert out["groups"]["b"]["recall@5"] == 0.0
    assert out["groups"]["a"]["users"] == 1
