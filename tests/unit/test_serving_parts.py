"""Re-rank, cache and metrics pieces of the service."""

import numpy as np

from followrec.serving.cache import ResultCache
from followrec.serving.metrics import Metrics
from followrec.serving.rerank import discount, mmr


def test_mmr_without_diversity_is_the_score_order_and_with_it_skips_near_duplicates():
    scores = np.array([0.9, 0.89, 0.5, 0.3])
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    assert mmr(scores, vectors, 3, 0.0).tolist() == [0, 1, 2]
    assert mmr(scores, vectors, 3, 0.5).tolist()[:2] == [0, 2]  # the twin of 0 waits
    assert sorted(mmr(scores, vectors, 10, 0.5).tolist()) == [0, 1, 2, 3]


def test_popularity_discount_lowers_popular_accounts_in_proportion():
    scores = np.array([0.8, 0.79])
    adjusted = discount(scores, np.array([1.0, 0.0]), 0.5)
    assert np.allclose(adjusted, [0.3, 0.79])
    assert np.allclose(discount(scores, np.array([1.0, 0.0]), 0.0), scores)


def test_cache_is_bounded_and_an_event_retires_only_that_user():
    cache = ResultCache(2)
    cache.put(1, "a", "one")
    cache.put(2, "a", "two")
    assert cache.get(1, "a") == "one"
    cache.put(3, "a", "three")  # 2 was least recently used
    assert cache.get(2, "a") is None and len(cache) == 2
    cache.invalidate(1)
    assert cache.get(1, "a") is None and cache.get(3, "a") == "three"
    assert ResultCache(0).get(1, "a") is None


def test_cache_state_stays_bounded_under_events_for_many_users():
    cache = ResultCache(3)
    for user in range(1000):
        cache.put(user, "a", user)
        cache.invalidate(user + 500)  # events for users that may have nothing cached
    assert len(cache) == 3 and cache.users() <= 3
    assert [cache.get(u, "a") for u in (997, 998, 999)] == [997, 998, 999]


def test_metrics_render_a_cumulative_histogram_and_hit_ratio():
    metrics = Metrics()
    for seconds in (0.002, 0.02, 3.0):
        metrics.observe_request("/x", seconds)
    metrics.count("followrec_cache_hits_total")
    metrics.count("followrec_cache_misses_total", 3)
    metrics.served = ("4", "model-v4")
    text = metrics.render()
    assert 'followrec_request_seconds_bucket{route="/x",le="0.0025"} 1' in text
    assert 'followrec_request_seconds_bucket{route="/x",le="0.025"} 2' in text
    assert 'followrec_request_seconds_bucket{route="/x",le="+Inf"} 3' in text
    assert "followrec_cache_hit_ratio 0.250000" in text
    assert 'followrec_serving_info{model_version="4",index_version="model-v4"} 1' in text
